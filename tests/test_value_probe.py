"""scripts/value_probe.py: its return-to-go against a per-game reference, its summary on a hand case, and a
probe of a solved debug run."""

import importlib.util
from pathlib import Path

import numpy as np

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
  t, b = 25, 2
  alive = np.ones((t, b), bool)
  alive[22:, 1] = False  # game 1 lasts 22 steps
  lengths = alive.sum(0)
  value = np.where(alive, lengths[None, :] - np.arange(t)[:, None], -7.0)  # the undiscounted return-to-go
  rec = {
    "value": value,
    "prior_entropy": np.ones((t, b)),
    "search_entropy": np.zeros((t, b)),
    "agree": np.arange(t * b).reshape(t, b) % 2 == 0,
    "reward": np.where(alive, 1.0, 0.0),
    "alive": alive,
  }
  out = value_probe.summarise(rec, 1.0)
  assert out["return_mean"] == 23.5 and out["length_mean"] == 23.5
  # k steps before its end a game's value is k (the last step is 1 before the end)
  assert [out["value_before_end"][str(k)] for k in value_probe.BEFORE_END] == list(value_probe.BEFORE_END)
  assert out["value_mean"] == value[alive].mean() and out["return_to_go_mean"] == out["value_mean"]
  assert np.isclose(out["value_corr"], 1.0)
  assert out["search_is_prior_argmax"] == rec["agree"][alive].mean()


def test_a_solved_debug_run_has_a_value_that_knows_its_game(debug_run, capsys):
  _, run_dir, _ = debug_run
  out = value_probe.main([str(run_dir), "--games", "4"])
  assert out["games"] == 4 and out["checkpoint"].startswith(str(run_dir))
  assert out["value_corr"] is not None and out["value_corr"] > 0.5, out
