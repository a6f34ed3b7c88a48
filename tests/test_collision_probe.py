"""scripts/collision_probe.py: its labels against the real step, its summary on a hand case, and a short run."""

import importlib.util
import math
from pathlib import Path

import numpy as np
import pytest

import worlds
from dreamer import config as config_lib
from dreamer import frames

SCRIPTS = Path(__file__).resolve().parent.parent / "scripts"
spec = importlib.util.spec_from_file_location("collision_probe", SCRIPTS / "collision_probe.py")
probe = importlib.util.module_from_spec(spec)
spec.loader.exec_module(probe)


def test_labels_say_what_the_real_step_did():
  # Without sticky actions the step takes the drawn action, so its game ends exactly when that action's label
  # says fatal: the copies and the real games draw the same random numbers.
  pytest.importorskip("minatar")
  config = config_lib.load("minatar", ["world=minatar:Asterix", "minatar_sticky_actions=0", "num_envs=4"])
  data = probe.collect(config, steps=2000, seed=3)
  assert data.obs.shape == (2000, 10, 10, 4) and data.fatal.shape == (2000, 6)
  assert data.terminated.sum() >= 5  # random play dies often enough to check the labels
  np.testing.assert_array_equal(data.fatal[np.arange(2000), data.action], data.terminated)
  # each row's observation is the one its action was taken from: replay the actions on a fresh world
  world = worlds.make(config.world, num_envs=4, seed=3, **config_lib.world_kwargs(config, train=True))
  obs = frames.start(world.reset(3), config.frame_stack)
  for t in range(500):
    np.testing.assert_array_equal(data.obs[4 * t : 4 * t + 4], obs)
    step = world.step(data.action[4 * t : 4 * t + 4])
    obs = frames.push(obs, step.obs, step.terminated | step.truncated, config.frame_stack)
  world.close()


def test_batches_draw_half_from_the_informative_states_and_label_as_asked():
  fatal = np.zeros((50, 6), bool)
  fatal[[3, 7], 2] = True  # two states with both kinds
  fatal[9] = True  # every move kills: not informative
  action = np.arange(50) % 6
  terminated = np.zeros(50, bool)
  terminated[[7, 20]] = True  # state 20's sticky repeat ended the game, whatever its recorded action's label
  data = probe.Data(np.zeros((50, 1)), fatal, action, terminated)
  rng = np.random.default_rng(0)
  idx, act, label = probe.batch(data, probe.rich_states(data, "all"), "all", rng, 16)
  assert set(idx[:8]) <= {3, 7} and act.dtype == np.int32
  np.testing.assert_array_equal(label, fatal[idx, act])
  idx, act, label = probe.batch(data, probe.rich_states(data, "taken"), "taken", rng, 16)
  assert set(idx[:8]) <= {7, 20} and label[:8].all()
  np.testing.assert_array_equal(act, action[idx])
  np.testing.assert_array_equal(label, terminated[idx])


def test_summary_by_hand():
  fatal = np.array([[True, False, False], [False, False, False], [True, True, False]])
  p = np.array([[0.9, 0.1, 0.2], [0.5, 0.5, 0.5], [0.3, 0.8, 0.4]])
  out = probe.summary(p, fatal, 0.2, 0.3)
  # within: state 0 ranks its fatal move above both safe ones (2 wins), state 2 wins 0.8 > 0.4 and loses
  # 0.3 < 0.4: 3 of 4 pairs; state 1 has no fatal move and is left out
  assert out["states_with_both"] == 2 and out["auc_within"] == 0.75
  # pooled: fatal (0.9, 0.3, 0.8) against safe (0.1, 0.2, 0.5, 0.5, 0.5, 0.4): 6 + 2 + 6 wins of 18 pairs
  assert math.isclose(out["auc_pooled"], 14 / 18)
  assert math.isclose(out["fatal_share"], 3 / 9) and out["loss"] == 0.2 and out["loss_constant"] == 0.3


def test_a_short_probe_reports_and_refuses_other_worlds(capsys):
  pytest.importorskip("minatar")
  args = ["--config", "minatar", "--set", "world=minatar:Asterix", "--set", "num_envs=4", "--set", "batch_size=16"]
  out = probe.main([*args, "--steps", "800", "--test-steps", "400", "--updates", "4", "--report-every", "2"])
  assert [r["updates"] for r in out["reports"]] == [2, 4] and out["train_states"] == 800
  assert out["train_states_with_both"] > 0 and 0.0 < out["train_fatal_share"] < 0.2
  taken = probe.main([*args, "--steps", "800", "--test-steps", "400", "--updates", "2", "--labels", "taken"])
  assert taken["labels"] == "taken" and [r["updates"] for r in taken["reports"]] == [2]
  with pytest.raises(SystemExit):
    probe.main(["--config", "debug", "--updates", "1"])
  assert "not a minatar: world" in capsys.readouterr().err
