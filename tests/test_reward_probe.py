"""scripts/reward_probe.py: its rank statistic against a brute-force count, its summary on a hand case, and a
network that does learn the debug world's rewards offline."""

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from dreamer import config as config_lib
from dreamer.train import train

spec = importlib.util.spec_from_file_location(
  "reward_probe", Path(__file__).resolve().parent.parent / "scripts" / "reward_probe.py"
)
reward_probe = importlib.util.module_from_spec(spec)
spec.loader.exec_module(reward_probe)


def brute_auc(low, high):
  pairs = [(1.0 if h > lo else 0.5 if h == lo else 0.0) for lo in low for h in high]
  return sum(pairs) / len(pairs)


def test_auc_against_every_pair():
  rng = np.random.default_rng(0)
  for _ in range(20):
    low = rng.integers(0, 5, size=rng.integers(1, 9)).astype(float)  # many ties
    high = rng.integers(0, 5, size=rng.integers(1, 9)).astype(float)
    assert np.isclose(reward_probe.auc(low, high), brute_auc(low, high))
  assert reward_probe.auc(np.array([]), np.array([1.0])) is None


def test_summary_by_hand():
  pred = np.array([-0.5, -0.1, 0.0, 0.2, 0.1, 0.9])
  reward = np.array([-1.0, -1.0, 0.0, 0.0, 0.0, 1.0])
  out = reward_probe.summary(pred, reward, 0.3, 0.4)
  assert out["loss"] == 0.3 and out["loss_constant"] == 0.4
  assert out["pred_by_sign"]["negative"] == {"count": 2, "mean": -0.3}
  assert np.isclose(out["pred_by_sign"]["zero"]["mean"], 0.1) and out["pred_by_sign"]["zero"]["count"] == 3
  assert out["pred_by_sign"]["positive"] == {"count": 1, "mean": 0.9}
  # both negative steps' predictions are under all three zero steps', the positive one's above them
  assert out["auc_negative"] == 1.0 and out["auc_positive"] == 1.0
  out = reward_probe.summary(pred, -reward, 0.3, 0.4)  # the signs swapped: every ranking is backwards
  assert out["auc_negative"] == 0.0 and out["auc_positive"] == 0.0


def test_the_debug_network_learns_its_rewards_offline():
  out = reward_probe.main(["--config", "debug", "--steps", "2000", "--test-steps", "500", "--updates", "200"])
  first, last = out["reports"][0], out["reports"][-1]
  assert out["train_rewards"]["positive"] > 0 and last["pred_by_sign"]["positive"]["count"] > 0
  assert last["loss"] < 0.7 * last["loss_constant"]  # it learned something a constant cannot
  assert last["auc_positive"] > 0.9
  assert last["pred_by_sign"]["positive"]["mean"] > last["pred_by_sign"]["zero"]["mean"] + 0.1
  assert first["updates"] == 200 and len(out["reports"]) == 1


def test_a_checkpoint_probe_trains_only_its_parts(tmp_path, capsys):
  run_dir = tmp_path / "run"  # a checkpoint before any update: what is probed is which weights move
  train(config_lib.load("debug", total_env_steps=64, eval_episodes=1), run_dir, console=False)
  probe = ["--checkpoint", str(run_dir), "--steps", "600", "--test-steps", "300", "--updates", "20"]
  frozen = reward_probe.main([*probe, "--train-parts", "projector"])  # off the reward's path: nothing moves
  assert frozen["train_parts"] == ["projector"] and [r["updates"] for r in frozen["reports"]] == [0, 20]
  assert frozen["reports"][0]["loss"] == frozen["reports"][1]["loss"]
  head = reward_probe.main([*probe, "--train-parts", "lstm,prefix_head"])
  assert head["reports"][0]["loss"] == frozen["reports"][0]["loss"]  # the same checkpoint, the same test steps
  assert head["reports"][1]["loss"] != head["reports"][0]["loss"]
  with pytest.raises(SystemExit):
    reward_probe.main([*probe, "--train-parts", "prefix"])
  assert "--train-parts prefix: not a module of this network; allowed:" in capsys.readouterr().err
