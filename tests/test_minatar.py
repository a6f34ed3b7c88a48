"""MinAtar worlds against the `minatar` package driven directly, on scripted actions; and the one-line error
when that optional package is not installed."""

import subprocess
import sys

import numpy as np
import pytest

import worlds
from worlds.minatar import MINATAR_GAMES, MINATAR_VARIANTS, MissingPackageError

try:
  from minatar import Environment
except ImportError:  # the optional extra is not installed: only the tests of its absence run
  Environment = None

needs_minatar = pytest.mark.skipif(Environment is None, reason="needs the optional package minatar (dreamer[minatar])")
MISSING = 'minatar:Breakout needs the optional package minatar: pip install "dreamer[minatar]"'


def reference(
  game: str, seed: int, actions: np.ndarray, *, sticky: float, action_set=None, max_steps=10**9, start=None
):
  """Plays env i of a world by hand: obs [T, 10, 10, C], rewards, terminated, truncated and game returns.
  `start`: the game object's attributes set after every reset (a variant)."""
  env = Environment(MINATAR_GAMES[game], sticky_action_prob=sticky)
  env.seed(seed)

  def reset():
    env.reset()
    for k, v in (start or {}).items():
      setattr(env.env, k, v)

  reset()
  obs, rewards, terms, truncs, returns = [], [], [], [], []
  total, steps = 0.0, 0
  for a in actions:
    r, done = env.act(int(a if action_set is None else action_set[a]))
    total += r
    steps += 1
    cut = not done and steps >= max_steps
    rewards.append(r), terms.append(done), truncs.append(cut)
    returns.append(total if done or cut else np.nan)
    if done or cut:
      reset()
      total, steps = 0.0, 0
    obs.append(env.state().astype(bool))
  return np.stack(obs), np.array(rewards, np.float32), np.array(terms), np.array(truncs), np.array(returns)


@needs_minatar
@pytest.mark.parametrize("game", list(MINATAR_GAMES))
def test_world_matches_the_package(game):
  steps, envs, seed = 400, 3, 11
  actions = np.random.default_rng(0).integers(0, 6, (steps, envs))
  world = worlds.make(f"minatar:{game}", num_envs=envs, seed=seed, max_steps=150)
  first = world.reset()
  got = [world.step(a) for a in actions]
  assert world.spec.num_actions == 6 and world.spec.obs_dtype == np.dtype(bool)
  ended = 0
  for i in range(envs):
    obs, rew, term, trunc, ret = reference(game, seed + i, actions[:, i], sticky=0.1, max_steps=150)
    np.testing.assert_array_equal(np.stack([s.obs[i] for s in got]), obs)
    np.testing.assert_array_equal(np.array([s.reward[i] for s in got]), rew)
    np.testing.assert_array_equal(np.array([s.terminated[i] for s in got]), term)
    np.testing.assert_array_equal(np.array([s.truncated[i] for s in got]), trunc)
    np.testing.assert_array_equal(np.array([s.episode_return[i] for s in got]), ret)
    ended += int(term.sum() + trunc.sum())
  assert first.shape == (envs, *world.spec.obs_shape)
  assert ended > 0  # the comparison crossed game ends


@needs_minatar
@pytest.mark.parametrize("name", list(MINATAR_VARIANTS))
def test_a_variant_is_its_game_started_later_in_its_ramp(name):
  game, start = MINATAR_VARIANTS[name].game, MINATAR_VARIANTS[name].start
  steps, seed = 600, 4
  actions = np.random.default_rng(3).integers(0, 6, (steps, 2))
  world = worlds.make(f"minatar:{name}", num_envs=2, seed=seed, max_steps=200)
  world.reset()
  got = np.stack([world.step(a).obs for a in actions], axis=1)  # [envs, T, 10, 10, C]
  for i in range(2):
    obs, *_ = reference(game, seed + i, actions[:, i], sticky=0.1, max_steps=200, start=start)
    np.testing.assert_array_equal(got[i], obs)
    plain_game, *_ = reference(game, seed + i, actions[:, i], sticky=0.1, max_steps=200)
    assert not np.array_equal(got[i], plain_game)  # the start changed what was played
  saved = world.get_state()
  with pytest.raises(worlds.WorldStateError, match=f"saved state is of minatar:{name}, this world is minatar:{game}"):
    worlds.make(f"minatar:{game}", num_envs=2).set_state(saved)


@needs_minatar
def test_minimal_action_set_maps_to_the_games_actions():
  world = worlds.make("minatar:Breakout", num_envs=1, seed=3, full_action_set=False, sticky_actions=0.0)
  world.reset()
  action_set = Environment("breakout").minimal_action_set()
  assert world.spec.num_actions == len(action_set) == 3
  actions = np.random.default_rng(1).integers(0, 3, 200)
  obs, rew, *_ = reference("Breakout", 3, actions, sticky=0.0, action_set=action_set)
  got = [world.step(np.array([a])) for a in actions]
  np.testing.assert_array_equal(np.stack([s.obs[0] for s in got]), obs)
  np.testing.assert_array_equal(np.array([s.reward[0] for s in got]), rew)


@needs_minatar
def test_state_round_trip_continues_bit_identically():
  world = worlds.make("minatar:Seaquest", num_envs=2, seed=5)
  world.reset()
  rng = np.random.default_rng(2)
  for a in rng.integers(0, 6, (50, 2)):
    world.step(a)
  saved = world.get_state()
  later = rng.integers(0, 6, (300, 2))
  first = [world.step(a) for a in later]
  other = worlds.make("minatar:Seaquest", num_envs=2, seed=99)
  other.reset()
  other.set_state(saved)
  again = [other.step(a) for a in later]
  for a, b in zip(first, again):
    for x, y in zip(a, b):
      np.testing.assert_array_equal(x, y)


def test_bad_arguments_are_clear_errors():  # told before the package is imported: runs without it
  with pytest.raises(ValueError, match="did you mean 'minatar:SpaceInvaders'"):
    worlds.make("minatar:spaceinvaders", num_envs=1)
  with pytest.raises(ValueError, match="did you mean 'minatar:SpaceInvaders-fast'"):
    worlds.make("minatar:SpaceInvaders-fsat", num_envs=1)
  assert "minatar:Asterix-fast" in worlds.available()
  with pytest.raises(ValueError, match="sticky_actions must be in"):
    worlds.make("minatar:Breakout", num_envs=1, sticky_actions=1.5)


@pytest.fixture
def no_minatar(monkeypatch):
  """The package made unimportable, as if the extra were not installed (None in sys.modules stops an import)."""
  for name in [n for n in sys.modules if n == "minatar" or n.startswith("minatar.")]:
    monkeypatch.delitem(sys.modules, name)
  for name in ["minatar", "minatar.environment", "minatar.environments"]:
    monkeypatch.setitem(sys.modules, name, None)


def test_a_missing_package_is_one_line_naming_the_extra(no_minatar):
  with pytest.raises(MissingPackageError) as caught:
    worlds.make("minatar:Breakout", num_envs=1)
  assert str(caught.value) == MISSING and "\n" not in str(caught.value)
  assert isinstance(caught.value, ImportError) and isinstance(caught.value, ValueError)
  assert caught.value.__cause__ is None and caught.value.__suppress_context__
  with pytest.raises(ValueError, match="did you mean 'minatar:Breakout'"):  # bad ids are still told first
    worlds.make("minatar:breakout", num_envs=1)


def test_a_missing_package_reaches_the_cli_as_that_line(no_minatar, tmp_path, capsys):
  from dreamer import cli

  assert cli.main(["train", "--config", "minatar", "--logdir", str(tmp_path / "run"), "--quiet"]) == 2
  err = capsys.readouterr().err
  assert err == f"dreamer: error: config key 'world': {MISSING}\n"


def test_worlds_imports_without_the_package():
  code = (
    "import sys\n"
    "for name in ('minatar', 'minatar.environment', 'minatar.environments'): sys.modules[name] = None\n"
    "import worlds\n"
    "assert 'minatar:Breakout' in worlds.available()\n"
    "worlds.make('toy:chain', num_envs=2).reset()\n"
    "try:\n"
    "  worlds.make('minatar:Breakout', num_envs=1)\n"
    "except ImportError as e:\n"
    "  print(e)\n"
  )
  done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
  assert done.returncode == 0, done.stderr
  assert done.stdout == MISSING + "\n"
