"""Temporally-extended exploration (ez-greedy): the repeat rule against a hand-stepped reference, the draws'
distributions, and the epsilon schedule."""

import jax
import numpy as np
import pytest

from dreamer import actor as actor_lib
from dreamer import config as config_lib


def _reference(chosen, starts, actions, durations):
  """ez-greedy as written in Dabney et al. (2021), one env at a time, one step at a time: the steps' actions."""
  taken, held, left = [], None, 0
  for c, s, a, d in zip(chosen, starts, actions, durations, strict=True):
    if left == 0 and s:
      held, left = a, d
    if left > 0:
      taken.append(held)
      left -= 1
    else:
      taken.append(c)
  return taken


def test_repeats_follow_a_hand_stepped_reference():
  rng = np.random.default_rng(0)
  steps, envs = 40, 5
  chosen = rng.integers(0, 6, (steps, envs))
  starts = rng.random((steps, envs)) < 0.3
  actions = rng.integers(0, 6, (steps, envs))
  durations = rng.integers(1, 6, (steps, envs))
  repeats, taken = actor_lib.Repeats.none(envs), []
  for t in range(steps):
    a, after, moved = actor_lib.explore(chosen[t], repeats, start=starts[t], action=actions[t], duration=durations[t])
    assert (moved == ((repeats.left > 0) | starts[t])).all()  # a running repeat, or one starting now
    repeats = after
    taken.append(a)
  taken = np.stack(taken)
  for e in range(envs):
    assert list(taken[:, e]) == _reference(chosen[:, e], starts[:, e], actions[:, e], durations[:, e])
  assert (taken != chosen).any()  # the repeats did replace search's actions


def test_a_repeat_holds_its_action_for_exactly_its_duration():
  repeats = actor_lib.Repeats.none(2)
  seen = []
  for t in range(6):  # env 0 starts a 3-step repeat of action 4 at t=0; the later draws are ignored until it ends
    start = np.array([True, False])
    drawn = np.array([4 if t == 0 else 5, 2])
    a, repeats, _ = actor_lib.explore(np.array([1, 1]), repeats, start=start, action=drawn, duration=np.array([3, 3]))
    seen.append(a.tolist())
  assert seen == [[4, 1], [4, 1], [4, 1], [5, 1], [5, 1], [5, 1]]


def test_draws_have_the_configured_distributions():
  config = config_lib.Config(
    num_envs=40_000, replay_capacity=10**6, explore_epsilon=0.2, explore_zeta=2.0, explore_max_repeat=10
  )
  start, action, duration = (np.asarray(x) for x in actor_lib.make_explore(config, 6)(jax.random.PRNGKey(3), 0.2))
  assert abs(start.mean() - 0.2) < 0.01
  assert np.allclose(np.bincount(action, minlength=6) / len(action), 1 / 6, atol=0.01)
  n = np.arange(1, 11)
  expected = n**-2.0 / np.sum(n**-2.0)
  assert duration.min() >= 1 and duration.max() <= 10
  assert np.allclose(np.bincount(duration, minlength=11)[1:] / len(duration), expected, atol=0.01)


@pytest.mark.parametrize(
  ("decay", "step", "epsilon"),
  [(0, 10**6, 0.3), (1000, 0, 0.3), (1000, 250, 0.225), (1000, 1000, 0.0), (1000, 5000, 0.0)],
)
def test_epsilon_falls_linearly_over_the_decay_steps(decay, step, epsilon):
  config = config_lib.Config(explore_epsilon=0.3, explore_decay_steps=decay)
  assert actor_lib.explore_epsilon(config, step) == pytest.approx(epsilon)
