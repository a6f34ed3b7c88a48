"""scripts/value_probe.py: its return-to-go against a per-game reference, its summary on a hand case, and a
probe of a solved debug run."""

import importlib.util
from pathlib import Path

import jax
import numpy as np

from dreamer import actor
from dreamer import agent as agent_lib
from dreamer.networks import Model

spec = importlib.util.spec_from_file_location(
  "value_probe", Path(__file__).resolve().parent.parent / "scripts" / "value_probe.py"
)
value_probe = importlib.util.module_from_spec(spec)
spec.loader.exec_module(value_probe)


def _reference_returns_to_go(rewards, alive, discount):
  out = np.zeros(rewards.shape)
  for b in range(rewards.shape[1]):
    n = int(alive[:, b].sum())
    for t in range(n):
      out[t, b] = sum(discount ** (u - t) * rewards[u, b] for u in range(t, n))
  return out


def test_returns_to_go_against_a_per_game_reference():
  rng = np.random.default_rng(0)
  rewards = rng.normal(size=(30, 5))
  lengths = np.array([30, 1, 12, 7, 29])
  alive = np.arange(30)[:, None] < lengths[None, :]
  got = value_probe.returns_to_go(rewards, alive, 0.9)
  np.testing.assert_allclose(got, _reference_returns_to_go(rewards, alive, 0.9), rtol=1e-12, atol=1e-12)
  assert (got[~alive] == 0).all()


def test_returns_to_go_by_hand():
  rewards = np.array([[1.0, 0.0], [0.0, 5.0], [2.0, 3.0]])
  alive = np.array([[True, True], [True, True], [True, False]])
  np.testing.assert_allclose(value_probe.returns_to_go(rewards, alive, 0.5), [[1.5, 2.5], [1.0, 5.0], [2.0, 0.0]])


def test_summary_by_hand():
  t, lengths = 25, np.array([25, 22, 2])  # game 2 is shorter than most k; game 1 is cut at the step limit
  steps = np.arange(t)[:, None]
  alive = steps < lengths[None, :]
  ended = steps == lengths[None, :] - 1
  ended[:, 1] = False
  value = np.where(alive, lengths[None, :] - steps, -7.0)  # the undiscounted return-to-go (-7 after the end)
  value[:, 2] *= 3  # game 2's value is three times its return-to-go: 6, 3
  rec = {
    "value": value,
    "prior_entropy": np.where(alive, 1.0, 50.0),
    "search_entropy": np.where(alive, steps % 2, 50.0),
    "agree": np.arange(t * 3).reshape(t, 3) % 2 == 0,
    "q_spread": np.where(alive, np.where(steps < 5, 0.005, 0.5), 50.0),  # under the 0.01 floor for 5 steps each
    "reward_pred": np.where(steps == 0, -2.0, np.where(alive, 0.25, 50.0)),
    "reward": np.where(steps == 0, -1.0, np.where(alive, 1.0, 0.0)),
    "alive": alive,
    "ended": ended,
  }
  out = value_probe.summarise(rec, 1.0)
  assert out["games"] == 3 and out["ended_games"] == 2
  assert out["return_mean"] == 43 / 3 and out["length_mean"] == 49 / 3
  # k steps before its end game 0's value is k, game 2's 3k (for k = 1, 2 only); game 1 never ended
  assert out["value_before_end"] == {"1": 2.0, "2": 4.0, "3": 3.0, "5": 5.0, "10": 10.0, "20": 20.0}
  assert out["value_mean"] == (325 + 253 + 9) / 49 and out["return_to_go_mean"] == (325 + 253 + 3 - 6) / 49
  assert 0.99 < out["value_corr"] < 1.0
  assert out["q_spread_below_floor"] == 12 / 49 and np.isclose(out["q_spread"], (12 * 0.005 + 37 * 0.5) / 49)
  assert out["reward_pred_by_sign"] == {
    "negative": {"count": 3, "mean": -2.0},
    "zero": {"count": 0, "mean": None},
    "positive": {"count": 46, "mean": 0.25},
  }
  assert out["prior_entropy"] == 1.0 and out["search_entropy"] == (12 + 11 + 1) / 49
  assert out["search_is_prior_argmax"] == 25 / 49


def test_a_solved_debug_run_has_a_value_that_knows_its_game(debug_run):
  _, run_dir, _ = debug_run
  out = value_probe.main([str(run_dir), "--games", "4"])
  assert out["games"] == 4 and out["checkpoint"].startswith(str(run_dir))
  # the probe's games are `dreamer eval`'s: the same seed gives the same search return
  acting = agent_lib.load_acting(run_dir, None, num_envs=4, seed=7, train=False)
  model = Model(acting.net)
  act, policy_act = actor.make_act(model, acting.config), actor.make_policy_act(model)
  steps = acting.config.eval_max_steps
  try:
    res = actor.evaluate(acting.world, acting.params, act, policy_act, jax.random.PRNGKey(7), seed=7, max_steps=steps)
  finally:
    acting.world.close()
  assert np.isclose(out["return_mean"], res["search"].returns.mean())
  assert out["length_mean"] == res["search"].lengths.mean()
  assert out["value_corr"] is not None and out["value_corr"] > 0.5, out
