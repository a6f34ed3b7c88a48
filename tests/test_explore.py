"""Temporally-extended exploration: ez-greedy's repeat rule against a hand-stepped reference, the draws'
distributions and the epsilon schedule; Gumbel noise held per episode (`noise_hold`) in the training loop."""

import jax
import numpy as np
import pytest
from helpers import assert_same_state

import worlds
from dreamer import actor as actor_lib
from dreamer import config as config_lib
from dreamer import train as train_lib
from dreamer.agent import Agent, load_checkpoint
from dreamer.logger import read_metrics


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


def _held_steps(monkeypatch, tmp_path, overrides):
  """Every acting step of a 400-step debug run holding noise: (noise held before, noise the search got, its
  q_spread, which envs the step ended, noise held after, the loop's count of flat steps after it)."""
  steps, act = [], train_lib.act

  def recorded_act(p, c):
    before, given, spread, ended = c.held.copy(), [], [], []
    agent_act, world_step = p.agent.act, p.world.step

    def searched(params, obs, key, t, held=None):
      given.append(held)
      out = agent_act(params, obs, key, t, held)
      spread.append(np.asarray(out.q_spread))
      return out

    p.agent.act = searched
    p.world.step = lambda action: ended.append((out := world_step(action)).terminated | out.truncated) or out
    try:
      act(p, c)
    finally:
      p.agent.act, p.world.step = agent_act, world_step
    steps.append((before, given[0], spread[0], ended[0], c.held.copy(), c.flat))

  monkeypatch.setattr(train_lib, "act", recorded_act)
  config = config_lib.load("debug", ["total_env_steps=400", "stop_return=inf", "noise_hold=episode", *overrides])
  train_lib.train(config, tmp_path, console=False)
  assert len(steps) == 400 // config.num_envs
  for before, given, _, _, after, _ in steps:
    assert before.shape == (config.num_envs, 2) and before.dtype == np.float32
    np.testing.assert_array_equal(given, before)
    assert ((after == before).all(axis=1) | (after != before).all(axis=1)).all()  # rows change whole
  return steps


@pytest.mark.parametrize("redraw", [0.0, 0.3])
def test_held_noise_lasts_one_episode_of_each_env_or_until_redrawn(monkeypatch, tmp_path, redraw):
  # Every acting step of a debug run (episodes of a few steps): the search gets the noise the envs held before
  # the step; an env whose episode the step ended holds a fresh draw afterwards; every other env the same
  # noise, or with noise_redraw a fresh draw on that fraction of its steps.
  steps = _held_steps(monkeypatch, tmp_path, [f"noise_redraw={redraw}"])
  kept = []
  for before, _, _, ended, after, _ in steps:
    assert (after[ended] != before[ended]).all()
    kept += (after[~ended] == before[~ended]).all(axis=1).tolist()
  ends = np.array([e for _, _, _, e, _, _ in steps])
  assert ends.any(axis=0).all() and (~ends).sum() > ends.sum()  # every env ended some episode; most steps none
  if redraw == 0:
    assert all(kept)  # never redrawn mid-episode
  else:
    assert 1.0 - np.mean(kept) == pytest.approx(redraw, abs=0.1)  # ~300 steps: 3 standard deviations


def test_held_noise_is_redrawn_after_a_search_that_told_the_actions_apart(monkeypatch, tmp_path):
  # noise_hold_spread: an env whose search's root Q values spread by at least the threshold holds fresh
  # noise afterwards; one under it keeps its noise until its episode ends. Both kinds occur in this run (the
  # untrained model's Q is flat, the trained one's is not), and the logged share of flat steps is theirs.
  steps = _held_steps(monkeypatch, tmp_path, ["noise_hold_spread=0.001"])
  flat, sharp = [], []
  for before, _, spread, ended, after, counted in steps:
    kept = (after == before).all(axis=1)
    assert (~kept[ended | (spread >= 0.001)]).all()
    assert kept[~ended & (spread < 0.001)].all()
    flat += (spread < 0.001).tolist()
    sharp += (~ended & (spread >= 0.001)).tolist()
    assert counted == sum(flat)  # the count behind train/noise_flat: the env steps under the threshold
  assert sum(sharp) >= 20 and sum(flat) >= 20
  records = [r for r in read_metrics(tmp_path) if "train/noise_flat" in r]
  assert records and all(0.0 <= r["train/noise_flat"] <= 1.0 for r in records)
  assert min(r["train/noise_flat"] for r in records) < 1.0 and max(r["train/noise_flat"] for r in records) > 0.0


def test_held_draws_redraw_each_env_at_the_rate_and_give_standard_gumbel_noise():
  # Over 2,000 keys: every env redraws at noise_redraw's rate on its own (not a fixed set of envs), the masks
  # change from key to key, and the noise has a standard Gumbel's mean (Euler's 0.5772) and variance (pi^2/6).
  config = config_lib.Config(num_envs=8, noise_hold="episode", noise_redraw=0.3)
  draw = jax.jit(jax.vmap(actor_lib.make_held_draw(config, 3)))
  redraw, noise = (np.asarray(x) for x in draw(jax.random.split(jax.random.PRNGKey(0), 2000)))
  assert redraw.shape == (2000, 8) and noise.shape == (2000, 8, 3)
  np.testing.assert_allclose(redraw.mean(axis=0), 0.3, atol=0.04)  # 4.5 standard deviations of one env's rate
  assert len({row.tobytes() for row in redraw}) > 100
  assert noise.mean() == pytest.approx(np.euler_gamma, abs=0.03)
  assert noise.var() == pytest.approx(np.pi**2 / 6, rel=0.05)
  none = config_lib.Config(num_envs=8, noise_hold="episode")
  assert not np.asarray(actor_lib.make_held_draw(none, 3)(jax.random.PRNGKey(1))[0]).any()  # 0: never


def test_acting_takes_the_held_noise_it_is_given():
  # Held noise far larger than any prior or Q difference decides the action: an untrained debug agent
  # acting with noise 100 on action k (and 0 elsewhere) takes k in every env, whatever k; the same call
  # without noise does not take one fixed action everywhere.
  config = config_lib.load("debug", ["noise_hold=episode", "num_envs=16"])
  agent = Agent(config, worlds.make(config.world, num_envs=16).spec)
  state, _ = agent.init(jax.random.PRNGKey(0))
  obs = np.asarray(worlds.make(config.world, num_envs=16).reset(0), np.float32)
  for k in range(agent.spec.num_actions):
    held = 100.0 * np.eye(agent.spec.num_actions, dtype=np.float32)[np.full(16, k)]
    out = agent.act(state.params, obs, jax.random.PRNGKey(k), 1.0, held)
    assert np.asarray(out.action).tolist() == [k] * 16
  free = agent.act(state.params, obs, jax.random.PRNGKey(9), 1.0)
  assert len(set(np.asarray(free.action).tolist())) > 1


def test_held_noise_does_nothing_where_training_runs_no_search(monkeypatch, tmp_path):
  # search 'none' (the baseline a preset holding noise still runs): no noise held, and the run is the very run
  # without noise_hold, bit for bit.
  seen, act = [], train_lib.act
  monkeypatch.setattr(train_lib, "act", lambda p, c: seen.append(c.held) or act(p, c))
  base = ["total_env_steps=160", "stop_return=inf", "search=none"]
  train_lib.train(config_lib.load("debug", [*base, "noise_hold=episode"]), tmp_path / "hold", console=False)
  train_lib.train(config_lib.load("debug", base), tmp_path / "plain", console=False)
  assert seen and all(held is None for held in seen)
  assert_same_state(load_checkpoint(tmp_path / "hold"), load_checkpoint(tmp_path / "plain"))
