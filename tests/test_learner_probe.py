"""scripts/learner_probe.py on a tiny debug run: each loss term's gradient reaches exactly the modules on its
path, and a Q-range floor far above every Q difference leaves the search's policy target at the prior."""

import importlib.util
from pathlib import Path

import pytest

from dreamer import config as config_lib
from dreamer.train import train

spec = importlib.util.spec_from_file_location(
  "learner_probe", Path(__file__).resolve().parent.parent / "scripts" / "learner_probe.py"
)
learner_probe = importlib.util.module_from_spec(spec)
spec.loader.exec_module(learner_probe)


def test_gradients_by_path_and_targets_by_floor(tmp_path, capsys):
  run_dir = tmp_path / "run"  # trained a little: the heads' output layers start at zero and pass no gradient back
  train(config_lib.load("debug", total_env_steps=320, eval_episodes=1), run_dir, console=False)
  out = learner_probe.main([str(run_dir), "--batches", "2", "--samples", "64", "--floors", "1e-8,1e9"])
  g = out["gradients"]
  # the value-prefix LSTM and head learn from the value-prefix loss alone; the projector from consistency alone
  for module, only in [("lstm", "value_prefix"), ("prefix_head", "value_prefix"), ("projector", "consistency")]:
    assert g[module][only]["per_batch"] > 0
    assert all(g[module][t]["per_batch"] == 0 for t in learner_probe.WEIGHTS if t != only)
  assert g["policy_head"]["policy"]["per_batch"] > 0 and g["policy_head"]["value"]["per_batch"] == 0
  assert g["value_head"]["value"]["per_batch"] > 0 and g["value_head"]["policy"]["per_batch"] == 0
  # the mean over batches is never longer than the batches' mean length (triangle inequality)
  assert all(v["mean"] <= v["per_batch"] * (1 + 1e-6) for m in g.values() for v in m.values())
  t = out["search_targets"]
  far = t["floor=1e+09"]  # every Q difference is ~0 against the floor: the target is the prior, whatever the key
  assert far["kl_target_prior"] == pytest.approx(0.0, abs=1e-6)
  assert far["argmax_moved"] == 0.0 and far["two_searches_agree"] == 1.0
  assert t["floor=1e-08"]["kl_target_prior"] > far["kl_target_prior"] + 1e-4  # a tiny floor stretches them
  with pytest.raises(SystemExit):
    learner_probe.main([str(run_dir), "--floors", "0.1,x"])
  assert "--floors '0.1,x': give comma-separated numbers >= 0" in capsys.readouterr().err
  with pytest.raises(SystemExit):
    learner_probe.main([str(tmp_path / "nothing")])
  assert "no checkpoint found at" in capsys.readouterr().err
