"""Tests for worlds/: the chain toy world, the gymnasium adapter, and the registry."""

import importlib.util
import json

import gymnasium
import numpy as np
import pytest

import worlds
from worlds import ChainWorld, GymWorld, Spec, Step, World  # noqa: E402

L, R = 0, 1
NAN = np.nan


def _has(module: str) -> bool:
  return importlib.util.find_spec(module) is not None


def one_hot(i: int, n: int = 6) -> np.ndarray:
  return np.eye(n, dtype=np.float32)[i]


def run(world: World, actions: list[list[int]]) -> list[Step]:
  world.reset(0)
  return [world.step(np.array(a)) for a in actions]


# ------------------------------------------------------------------ chain


def test_chain_spec_and_reset():
  w = ChainWorld(num_envs=2)
  assert w.spec == Spec((6,), np.float32, 2)
  assert w.optimal_return == 1.0 and w.max_steps == 12
  obs = w.reset(0)
  assert obs.dtype == np.float32 and obs.shape == (2, 6)
  np.testing.assert_array_equal(obs, [one_hot(1), one_hot(1)])


def test_chain_scripted_sequence_exact():
  # env 0: R R L R R R -> cells 2 3 2 3 4 5 (goal: +1, terminated at step 6)
  # env 1: L L R R R L -> cells 0, 0 (L in cell 0: +0.1, terminated; restarts in 1), 2 3 4 3
  w = ChainWorld(num_envs=2)
  steps = run(w, [[R, L], [R, L], [L, R], [R, R], [R, R], [R, L]])
  pos = [[2, 0], [3, 0], [2, 2], [3, 3], [4, 4], [5, 3]]  # final_obs cells
  obs = [[2, 0], [3, 1], [2, 2], [3, 3], [4, 4], [1, 3]]  # obs cells, after auto-reset
  rew = [[0, 0], [0, 0.1], [0, 0], [0, 0], [0, 0], [1, 0]]
  term = [[0, 0], [0, 1], [0, 0], [0, 0], [0, 0], [1, 0]]
  for t, s in enumerate(steps):
    np.testing.assert_array_equal(s.final_obs, [one_hot(p) for p in pos[t]], err_msg=f"t={t}")
    np.testing.assert_array_equal(s.obs, [one_hot(p) for p in obs[t]], err_msg=f"t={t}")
    np.testing.assert_array_equal(s.reward, np.array(rew[t], np.float32), err_msg=f"t={t}")
    np.testing.assert_array_equal(s.terminated, np.array(term[t], bool), err_msg=f"t={t}")
    assert not s.truncated.any()
    assert s.reward.dtype == np.float32 and s.terminated.dtype == bool
    assert s.episode_return.dtype == np.float32 and s.episode_length.dtype == np.int32
  np.testing.assert_array_equal(steps[1].episode_return, np.array([NAN, 0.1], np.float32))
  np.testing.assert_array_equal(steps[1].episode_length, [0, 2])
  np.testing.assert_array_equal(steps[5].episode_return, [1.0, NAN])
  np.testing.assert_array_equal(steps[5].episode_length, [6, 0])


@pytest.mark.parametrize("n", [3, 6, 9])
def test_chain_optimal_policy_gets_one_in_n_minus_2_steps(n):
  w = ChainWorld(num_envs=3, n=n)
  w.reset(0)
  for t in range(1, n - 1):
    s = w.step(np.full(3, R))
    done = t == n - 2
    assert (s.terminated == done).all() and not s.truncated.any()
  np.testing.assert_array_equal(s.episode_return, [1.0] * 3)
  np.testing.assert_array_equal(s.episode_length, [n - 2] * 3)
  np.testing.assert_array_equal(s.final_obs, np.tile(one_hot(n - 1, n), (3, 1)))
  np.testing.assert_array_equal(s.obs, np.tile(one_hot(1, n), (3, 1)))  # auto-reset to start


def test_chain_always_left_gets_point_one_in_two_steps():
  w = ChainWorld(num_envs=1)
  s1, s2 = run(w, [[L], [L]])
  assert not s1.terminated[0] and s1.reward[0] == 0 and np.isnan(s1.episode_return[0])
  assert s2.terminated[0] and s2.reward[0] == np.float32(0.1)
  assert s2.episode_return[0] == np.float32(0.1) and s2.episode_length[0] == 2
  np.testing.assert_array_equal(s2.final_obs[0], one_hot(0))
  np.testing.assert_array_equal(s2.obs[0], one_hot(1))


def test_chain_truncates_after_max_steps():
  w = ChainWorld(num_envs=1, n=6, max_steps=5)
  steps = run(w, [[R], [L]] * 5)  # oscillates 2,1,2,1,... never terminates
  for t, s in enumerate(steps):
    assert not s.terminated[0] and s.reward[0] == 0
    assert s.truncated[0] == (t in (4, 9)), t
  np.testing.assert_array_equal(steps[4].final_obs[0], one_hot(2))  # R L R L R -> cell 2
  np.testing.assert_array_equal(steps[4].obs[0], one_hot(1))
  assert steps[4].episode_return[0] == 0.0 and steps[4].episode_length[0] == 5
  # Truncated episode restarted at cell 1: step 5 is L -> cell 0, and 5 steps later truncates again.
  np.testing.assert_array_equal(steps[5].obs[0], one_hot(0))
  ended = [t for t, s in enumerate(steps) if not np.isnan(s.episode_return[0])]
  assert ended == [4, 9]


def test_chain_stats_reported_once_per_episode():
  # B=4 with different fixed policies over 40 steps; count episodes exactly.
  w = ChainWorld(num_envs=4)  # n=6, max_steps=12
  policy = np.array([R, L, R, L])
  w.reset(0)
  returns, lengths = [[] for _ in range(4)], [[] for _ in range(4)]
  for t in range(40):
    a = policy.copy()
    a[2] = R if t % 2 == 0 else L  # env 2 oscillates -> truncation every 12 steps
    a[3] = L if t % 3 == 0 else R  # env 3: L R R L R R ... drifts right by 1 per 3 steps
    s = w.step(a)
    done = s.terminated | s.truncated
    assert not (s.terminated & s.truncated).any()  # termination takes precedence
    assert (np.isnan(s.episode_return) == ~done).all() and ((s.episode_length > 0) == done).all()
    for i in np.flatnonzero(done):
      returns[i].append(float(s.episode_return[i]))
      lengths[i].append(int(s.episode_length[i]))
  assert returns[0] == [1.0] * 10 and lengths[0] == [4] * 10
  assert returns[1] == [pytest.approx(0.1)] * 20 and lengths[1] == [2] * 20
  assert returns[2] == [0.0] * 3 and lengths[2] == [12] * 3
  # env 3 from cell 1: L0 R1 R2 L1 R2 R3 L2 R3 R4 L3 R4 R5: goal exactly at step 12 = max_steps;
  # termination takes precedence over truncation (checked via the return being 1.0, not 0).
  assert returns[3] == [1.0] * 3 and lengths[3] == [12] * 3


def test_determinism_and_no_aliasing():
  a = np.random.default_rng(0).integers(0, 2, size=(50, 3))
  s1 = run(ChainWorld(num_envs=3), a.tolist())
  s2 = run(ChainWorld(num_envs=3), a.tolist())
  for x, y in zip(s1, s2):
    for f in Step._fields:
      np.testing.assert_array_equal(getattr(x, f), getattr(y, f))
  # Returned arrays must be snapshots, not views of state mutated by later steps.
  w = ChainWorld(num_envs=1)
  obs0 = w.reset(0)
  s = w.step(np.array([R]))
  w.step(np.array([R]))
  np.testing.assert_array_equal(obs0[0], one_hot(1))
  np.testing.assert_array_equal(s.obs[0], one_hot(2))


# ------------------------------------------------------------------ gym adapter


def test_gym_cartpole_matches_direct_gymnasium():
  B, T, seed = 3, 300, 7
  world = worlds.make("gym:CartPole-v1", num_envs=B, seed=seed)
  assert isinstance(world, GymWorld)
  assert world.spec == ((4,), np.float32, 2)
  assert getattr(world, "optimal_return", None) is None
  envs = [gymnasium.make("CartPole-v1") for _ in range(B)]
  ref_obs = np.stack([e.reset(seed=seed + i)[0] for i, e in enumerate(envs)])

  obs = world.reset()  # default seed from make()
  np.testing.assert_array_equal(obs, ref_obs)
  assert obs.dtype == np.float32
  actions = np.random.default_rng(1).integers(0, 2, size=(T, B))
  ends, ret = 0, np.zeros(B)
  for t in range(T):
    s = world.step(actions[t])
    for i, e in enumerate(envs):
      o, r, term, trunc, _ = e.step(int(actions[t, i]))
      ret[i] += r
      np.testing.assert_array_equal(s.final_obs[i], o, err_msg=f"t={t} env={i}")
      assert (s.reward[i], s.terminated[i], s.truncated[i]) == (r, term, trunc)
      if term or trunc:
        o, _ = e.reset()
        ends += 1
        assert s.episode_return[i] == ret[i] and s.episode_length[i] == ret[i]
        ret[i] = 0
      else:
        assert np.isnan(s.episode_return[i]) and s.episode_length[i] == 0
      np.testing.assert_array_equal(s.obs[i], o, err_msg=f"t={t} env={i}")
  assert ends >= 3 * B  # random CartPole episodes are ~20 steps: resets were exercised
  world.close()
  for e in envs:
    e.close()


def test_gym_reset_reproduces():
  with worlds.make("gym:CartPole-v1", num_envs=2) as w:
    a = np.random.default_rng(3).integers(0, 2, size=(60, 2))
    first = [w.reset(5)] + [w.step(x).obs for x in a]
    again = [w.reset(5)] + [w.step(x).obs for x in a]
    np.testing.assert_array_equal(np.stack(first), np.stack(again))
    assert not np.array_equal(w.reset(5), w.reset(6))


# ------------------------------------------------------------------ registry & errors


def test_registry_resolves_ids():
  w = worlds.make("toy:chain", num_envs=2)
  assert isinstance(w, ChainWorld) and w.n == 6 and w.num_envs == 2
  w = worlds.make("toy:chain-9", num_envs=1, max_steps=3)
  assert w.n == 9 and w.max_steps == 3 and w.spec == ((9,), np.float32, 2)
  assert "toy:chain" in worlds.available() and "toy:chain-<n>" in worlds.available()
  assert any(a.startswith("gym:") for a in worlds.available())


@pytest.mark.parametrize(
  "world_id, must_contain",
  [
    ("gym:CartPol-v1", ["gymnasium has no such id", "did you mean 'gym:CartPole-v1'"]),
    ("CartPole-v1", ["'<family>:<name>'", "did you mean 'gym:CartPole-v1'"]),
    ("gmy:CartPole-v1", ["no world family 'gmy'", "did you mean 'gym:CartPole-v1'"]),
    ("atarii:Pong", ["no world family 'atarii'", "did you mean 'atari:Pong'"]),
    ("atari:Pongg", ["no such Atari game", "did you mean 'atari:Pong'"]),
    ("toy:chian", ["did you mean 'toy:chain'"]),
    ("toy:chain-2", ["n >= 3"]),
    ("cartpole:long-pol", ["no such CartPole variant", "did you mean 'cartpole:long-pole'"]),
    ("cartpole:reverse", ["no such CartPole variant", "did you mean 'cartpole:reversed'"]),
    ("cartpole:heavy", ["did you mean 'cartpole:heavy-pole'"]),
    ("cartpol:base", ["no world family 'cartpol'", "did you mean 'cartpole:base'"]),
    ("toy:chain-mirorr", ["no such toy world", "did you mean 'toy:chain-mirror'"]),
    ("toy:chain-mirror-2", ["a chain needs n >= 3 cells, got 2"]),
  ],
)
def test_registry_unknown_ids_one_clear_line(world_id, must_contain):
  with pytest.raises(ValueError) as e:
    worlds.make(world_id, num_envs=1)
  msg = str(e.value)
  assert "\n" not in msg
  assert msg.startswith(f"unknown world '{world_id}'")
  assert "Available: toy:chain, toy:chain-<n>, gym:" in msg
  for s in must_contain:
    assert s in msg


def test_gym_rejects_non_discrete_or_non_box():
  with pytest.raises(ValueError, match=r"Pendulum-v1.*Discrete action space, got Box\(-2.0, 2.0"):
    worlds.make("gym:Pendulum-v1", num_envs=2)
  with pytest.raises(ValueError, match=r"Box observation space, got Discrete\(16\)"):
    worlds.make("gym:FrozenLake-v1", num_envs=1)


@pytest.mark.parametrize("num_envs", [0, -1, 2.0, True])
def test_bad_num_envs(num_envs):
  with pytest.raises(ValueError, match="num_envs must be an integer >= 1"):
    worlds.make("toy:chain", num_envs=num_envs)


@pytest.mark.parametrize(
  "action, pattern",
  [
    ([0, 1, 0], r"shape \(2,\).*got shape \(3,\)"),
    ([[0, 1]], r"shape \(2,\).*got shape \(1, 2\)"),
    ([0, 2], r"out of range \[0, 2\): env 1 got 2"),
    ([-1, 0], r"out of range \[0, 2\): env 0 got -1"),
    ([0.0, 1.0], r"integer array, got dtype float64"),
    ([True, False], r"integer array, got dtype bool"),
  ],
)
@pytest.mark.parametrize("world_id", ["toy:chain", "gym:CartPole-v1"])
def test_bad_actions(world_id, action, pattern):
  w = worlds.make(world_id, num_envs=2)
  w.reset(0)
  with pytest.raises(ValueError, match=pattern):
    w.step(np.array(action))
  w.step(np.array([0, 1]))  # the world is still usable after a rejected action


def test_step_before_reset():
  with pytest.raises(RuntimeError, match="before reset"):
    ChainWorld(num_envs=1).step(np.array([R]))


# ------------------------------------------------------------------ games vs episodes


class LivesChain(ChainWorld):
  """ChainWorld whose game lasts `lives` episodes; reports a score of 10x the reward."""

  def __init__(self, num_envs: int, lives: int = 2, **kw) -> None:
    super().__init__(num_envs, **kw)
    self.lives = lives
    self._left = np.full(num_envs, lives)

  def _step_all(self, action):
    obs, reward, terminated, truncated = super()._step_all(action)
    self._left = self._left - (terminated | truncated)
    game_over = self._left == 0
    self._left = np.where(game_over, self.lives, self._left)
    return obs, reward, terminated, truncated, 10 * reward, game_over


def test_six_tuple_reports_games_not_episodes():
  # Always right: episodes of 4 steps with reward 1 (score 10); a game is 2 episodes.
  w = LivesChain(num_envs=2)
  w.reset()
  steps = [w.step(np.array([R, R])) for _ in range(12)]
  ends = [t for t, s in enumerate(steps) if s.terminated[0]]
  games = [t for t, s in enumerate(steps) if not np.isnan(s.episode_return[0])]
  assert ends == [3, 7, 11] and games == [7]
  assert steps[3].reward[0] == 1.0 and np.isnan(steps[3].episode_return[0])
  np.testing.assert_array_equal(steps[7].episode_return, [20.0, 20.0])  # the score, both episodes
  np.testing.assert_array_equal(steps[7].episode_length, [8, 8])
  np.testing.assert_array_equal(steps[11].episode_length, [0, 0])  # the next game is half done


def test_game_over_without_episode_end_is_a_subclass_bug():
  class Bad(ChainWorld):
    def _step_all(self, action):
      obs, reward, terminated, truncated = super()._step_all(action)
      return obs, reward, terminated, truncated, reward, np.ones(self.num_envs, bool)

  w = Bad(num_envs=2)
  w.reset()
  with pytest.raises(TypeError, match="Bad._step_all ended env 0's game but not its episode"):
    w.step(np.array([R, R]))


def test_step_all_with_wrong_arity_is_a_subclass_bug():
  class Bad(ChainWorld):
    def _step_all(self, action):
      return super()._step_all(action)[:3]

  w = Bad(num_envs=1)
  w.reset()
  with pytest.raises(TypeError, match="returned 3 values, expected 4 or 6"):
    w.step(np.array([R]))


# ------------------------------------------------------------------ saved state


ROUND_TRIP_WORLDS = [
  "toy:chain-5",
  "toy:chain-mirror",
  "gym:CartPole-v1",
  "gym:Acrobot-v1",
  "gym:MountainCar-v0",
  "cartpole:base",
  "cartpole:reversed",
  "cartpole:long-pole",
  pytest.param("minatar:Breakout", marks=pytest.mark.skipif(not _has("minatar"), reason="minatar not installed")),
  "atari:Pong",
]


@pytest.mark.parametrize("world_id", ROUND_TRIP_WORLDS)
def test_restored_state_continues_episodes_exactly(world_id):
  """A world rebuilt from get_state(), written as JSON text and read back, steps exactly as the original
  would have, episode ends, auto-resets (their random draws) and episode stats included."""
  rng = np.random.default_rng(0)
  actions = rng.integers(0, 2, size=(70, 3))
  a = worlds.make(world_id, num_envs=3, seed=4)
  a.reset()
  for act in actions[:25]:
    a.step(act)
  text = json.dumps(a.get_state())  # as a checkpoint stores it
  b = worlds.make(world_id, num_envs=3, seed=99)  # another seed, never reset: everything must come from the state
  b.set_state(json.loads(text))
  ends = 0
  for t, act in enumerate(actions[25:]):
    sa, sb = a.step(act), b.step(act)
    ends += int((sa.terminated | sa.truncated).sum())
    for f, x, y in zip(sa._fields, sa, sb):
      assert x.tobytes() == y.tobytes(), f"t={25 + t} {f}"
  assert json.dumps(a.get_state()) == json.dumps(b.get_state())
  if world_id.partition(":")[0] in ("toy", "cartpole") or world_id == "gym:CartPole-v1":
    assert ends > 0  # a handover that reached new episodes


@pytest.mark.parametrize("world_id", ROUND_TRIP_WORLDS)
def test_state_of_a_world_never_reset_round_trips(world_id):
  """Before its first reset a world has a state too (no episodes): restored, it still needs a reset."""
  text = json.dumps(worlds.make(world_id, num_envs=2, seed=1).get_state())
  b = worlds.make(world_id, num_envs=2, seed=2)
  b.set_state(json.loads(text))
  with pytest.raises(RuntimeError, match="called before reset"):
    b.step(np.array([0, 1]))
  b.reset()
  b.step(np.array([0, 1]))


def test_gym_envs_whose_state_is_not_plain_data_say_so():
  """Any other gymnasium env: get_state is a one-line WorldStateError (a resumed run starts new episodes)."""

  class Custom(gymnasium.Env):
    observation_space = gymnasium.spaces.Box(-1.0, 1.0, (2,), np.float32)
    action_space = gymnasium.spaces.Discrete(2)

    def reset(self, *, seed=None, options=None):
      super().reset(seed=seed)
      return np.zeros(2, np.float32), {}

    def step(self, action):
      return np.zeros(2, np.float32), 0.0, False, False, {}

  gymnasium.register("DreamerTestCustom-v0", entry_point=Custom, max_episode_steps=10)
  try:
    w = worlds.make("gym:DreamerTestCustom-v0", num_envs=2)
    w.reset()
    w.step(np.array([0, 1]))
    with pytest.raises(worlds.WorldStateError, match="cannot describe its state as plain data") as info:
      w.get_state()
    assert "Custom" in str(info.value) and "\n" not in str(info.value)
  finally:
    del gymnasium.registry["DreamerTestCustom-v0"]


def test_set_state_rejects_another_batch_size():
  a = worlds.make("toy:chain", num_envs=3)
  a.reset()
  with pytest.raises(worlds.WorldStateError, match="holds 3 envs, this world has 2"):
    worlds.make("toy:chain", num_envs=2).set_state(a.get_state())


def test_a_state_that_is_not_plain_data_is_a_world_state_error():
  class Unplain(ChainWorld):
    def _get_state(self):
      return lambda: None

  w = Unplain(num_envs=1)
  w.reset()
  with pytest.raises(worlds.WorldStateError, match=r"cannot describe its state as plain data: state\['own'\]"):
    w.get_state()
