"""Tests for families of related worlds: the cartpole: variants and toy:chain-mirror."""

import numpy as np
import pytest

import worlds
from worlds import CARTPOLE_VARIANTS, CartPoleWorld, ChainWorld, MirrorChainWorld, Step, World
from worlds.cartpole import physics_of

L, R = 0, 1  # ChainWorld's meanings; the mirror swaps them

# CartPole-v1's constants, written out here rather than read from worlds.cartpole.
BASE = {"gravity": 9.8, "masscart": 1.0, "masspole": 0.1, "length": 0.5, "force_mag": 10.0, "tau": 0.02}
# Each member's documented changes, and its derived total_mass = masspole + masscart,
# polemass_length = masspole * length.
CHANGES = {
  "base": {},
  "long-pole": {"length": 1.0},
  "heavy-pole": {"masspole": 0.5},
  "weak-push": {"force_mag": 5.0},
  "high-gravity": {"gravity": 19.6},
  "reversed": {},
}
DERIVED = {
  "base": {"total_mass": 1.1, "polemass_length": 0.05},
  "long-pole": {"total_mass": 1.1, "polemass_length": 0.1},
  "heavy-pole": {"total_mass": 1.5, "polemass_length": 0.25},
  "weak-push": {"total_mass": 1.1, "polemass_length": 0.05},
  "high-gravity": {"total_mass": 1.1, "polemass_length": 0.05},
  "reversed": {"total_mass": 1.1, "polemass_length": 0.05},
}
CHANGED_PHYSICS = ["long-pole", "heavy-pole", "weak-push", "high-gravity"]
# A known state with the pole off vertical and swinging, so every constant matters.
STATE = np.array([0.1, -0.2, 0.05, 0.3])


def physics(name: str) -> dict[str, float]:
  return {**BASE, **CHANGES[name], **DERIVED[name]}


def one_hot(i: int, n: int = 6) -> np.ndarray:
  return np.eye(n, dtype=np.float32)[i]


def scripted(T: int, B: int) -> np.ndarray:
  """int[T, B]: env i repeats (push right i+1 times, push left i+1 times), with a
  phase shift every 7 steps so no env settles into a balanced rhythm."""
  t = np.arange(T)[:, None] + np.arange(T)[:, None] // 7
  return ((t // (np.arange(B) + 1)) % 2).astype(np.int64)


def assert_steps_equal(x: Step, y: Step, msg: str = "") -> None:
  for f in Step._fields:
    np.testing.assert_array_equal(getattr(x, f), getattr(y, f), err_msg=f"{msg} {f}")


def cartpole_step(s: np.ndarray, action: int, p: dict[str, float]) -> np.ndarray:
  """One Euler step of gymnasium's CartPole equations (Florian 2005) from state s f64[4]."""
  x, x_dot, theta, theta_dot = s
  force = p["force_mag"] if action == 1 else -p["force_mag"]
  total_mass = p["masspole"] + p["masscart"]
  polemass_length = p["masspole"] * p["length"]
  cos, sin = np.cos(theta), np.sin(theta)
  temp = (force + polemass_length * theta_dot**2 * sin) / total_mass
  theta_acc = (p["gravity"] * sin - cos * temp) / (p["length"] * (4 / 3 - p["masspole"] * cos**2 / total_mass))
  x_acc = temp - polemass_length * theta_acc * cos / total_mass
  tau = p["tau"]
  return np.array([x + tau * x_dot, x_dot + tau * x_acc, theta + tau * theta_dot, theta_dot + tau * theta_acc])


# ------------------------------------------------------------------ cartpole: members


def test_cartpole_members_are_listed():
  assert list(CARTPOLE_VARIANTS) == list(CHANGES)
  ids = worlds.available()
  assert ids[:3] == ["toy:chain", "toy:chain-<n>", "gym:<any discrete-action gymnasium id>"]
  assert [i for i in ids if i.startswith("cartpole:")] == [f"cartpole:{n}" for n in CHANGES]
  assert ids[-2:] == ["toy:chain-mirror", "toy:chain-mirror-<n>"]
  for name, v in CARTPOLE_VARIANTS.items():
    assert v.about and "\n" not in v.about, name
    assert v.swap_actions == (name == "reversed"), name


@pytest.mark.parametrize("name", list(CHANGES))
def test_cartpole_member_spec_and_physics(name):
  w = worlds.make(f"cartpole:{name}", num_envs=2)
  assert isinstance(w, CartPoleWorld) and w.variant == name
  assert w.spec == ((4,), np.float32, 2)
  w.reset(0)
  for env in w._envs:
    assert physics_of(env) == physics(name)
    u = env.unwrapped
    assert (u.x_threshold, u.theta_threshold_radians) == (2.4, 12 * 2 * np.pi / 360)  # same termination
    assert env.spec.max_episode_steps == 500
  w.close()


def test_cartpole_base_is_gym_cartpole_exactly():
  B, T, seed = 3, 300, 7
  a = worlds.make("cartpole:base", num_envs=B, seed=seed)
  b = worlds.make("gym:CartPole-v1", num_envs=B, seed=seed)
  np.testing.assert_array_equal(a.reset(), b.reset())
  ends = 0
  for t, act in enumerate(scripted(T, B)):
    sa, sb = a.step(act), b.step(act)
    assert_steps_equal(sa, sb, f"t={t}")
    ends += int((sa.terminated | sa.truncated).sum())
  assert ends >= 3 * B  # auto-resets were exercised


@pytest.mark.parametrize("name", CHANGED_PHYSICS)
def test_cartpole_member_steps_by_its_physics(name):
  """From a known state, the world follows the CartPole equations with the member's constants."""
  w = worlds.make(f"cartpole:{name}", num_envs=2)
  w.reset(0)
  for env in w._envs:
    env.unwrapped.state = STATE.copy()
  ref = [STATE.copy(), STATE.copy()]
  for t, a0 in enumerate([R, R, L, R, L]):
    act = np.array([a0, 1 - a0])
    s = w.step(act)
    assert not (s.terminated | s.truncated).any() and (s.reward == 1.0).all()
    for i in range(2):
      base = cartpole_step(ref[i], int(act[i]), BASE)
      ref[i] = cartpole_step(ref[i], int(act[i]), physics(name))
      np.testing.assert_allclose(w._envs[i].unwrapped.state, ref[i], rtol=1e-12, atol=1e-15)
      np.testing.assert_allclose(s.obs[i], ref[i].astype(np.float32), rtol=1e-6, atol=1e-9)
      assert np.abs(base - ref[i]).max() > 1e-4, f"t={t}: {name} steps like base from here"


def test_cartpole_reversed_is_base_with_actions_swapped():
  B, T, seed = 2, 300, 3
  rev = worlds.make("cartpole:reversed", num_envs=B, seed=seed)
  base = worlds.make("cartpole:base", num_envs=B, seed=seed)
  np.testing.assert_array_equal(rev.reset(), base.reset())
  actions = scripted(T, B)
  for t, act in enumerate(actions):
    assert_steps_equal(rev.step(act), base.step(1 - act), f"t={t}")
  # The same actions give another trajectory (the swap is not a no-op).
  rev.reset(seed), base.reset(seed)
  assert not np.array_equal(rev.step(actions[0]).obs, base.step(actions[0]).obs)


def test_every_cartpole_member_is_solvable_and_reversed_is_the_worst():
  """A fair related task: one linear controller holds every member for the full 500 steps
  (with its actions swapped on `reversed`); unswapped on `reversed` it fails at once."""

  def controller(obs: np.ndarray) -> np.ndarray:  # push towards where the pole is falling
    return (obs @ np.array([0.1, 0.5, 10.0, 2.0]) > 0).astype(np.int64)

  for name in CHANGES:
    w = worlds.make(f"cartpole:{name}", num_envs=2, seed=0)
    obs = w.reset()
    for _ in range(500):
      act = controller(obs)
      s = w.step(1 - act if name == "reversed" else act)
      obs = s.obs
      assert not s.terminated.any(), name
    assert s.truncated.all() and (s.episode_return == 500).all(), name
  w = worlds.make("cartpole:reversed", num_envs=2, seed=0)
  obs, lengths = w.reset(), np.zeros(2, int)
  while not lengths.all():
    s = w.step(controller(obs))
    obs, lengths = s.obs, np.where(s.terminated, s.episode_length, lengths)
  assert (lengths < 20).all(), lengths


# ------------------------------------------------------------------ saved state


def run_round_trip(world_id: str, tamper=None) -> World:
  """20 steps, save, 30 steps; a fresh world restored from the save must repeat those 30."""
  actions = scripted(50, 3)
  a = worlds.make(world_id, num_envs=3, seed=4)
  a.reset()
  for act in actions[:20]:
    a.step(act)
  saved = a.get_state()
  expected = [a.step(act) for act in actions[20:]]
  b = worlds.make(world_id, num_envs=3, seed=99)  # another seed: everything must come from the state
  if tamper is not None:
    tamper(b)
  b.set_state(saved)
  for t, act in enumerate(actions[20:]):
    assert_steps_equal(b.step(act), expected[t], f"t={20 + t}")
  return b


@pytest.mark.parametrize("name", ["heavy-pole", "long-pole"])
def test_cartpole_state_round_trip_keeps_physics(name):
  def tamper(w: CartPoleWorld) -> None:  # the restored envs must bring their own constants
    for env in w._envs:
      env.unwrapped.gravity = env.unwrapped.length = env.unwrapped.total_mass = 1.0

  b = run_round_trip(f"cartpole:{name}", tamper)
  for env in b._envs:
    assert physics_of(env) == physics(name)


def test_cartpole_state_of_another_member_is_refused():
  a = worlds.make("cartpole:base", num_envs=1)
  a.reset()
  with pytest.raises(worlds.WorldStateError, match="state is of cartpole:base, this world is cartpole:reversed"):
    worlds.make("cartpole:reversed", num_envs=1).set_state(a.get_state())


def test_chain_mirror_state_round_trip():
  b = run_round_trip("toy:chain-mirror")
  assert isinstance(b, MirrorChainWorld)


# ------------------------------------------------------------------ toy:chain-mirror


def test_chain_mirror_resolves_and_keeps_the_chain():
  w = worlds.make("toy:chain-mirror", num_envs=2)
  assert isinstance(w, MirrorChainWorld) and w.n == 6 and w.max_steps == 12
  assert w.spec == ((6,), np.float32, 2) and w.optimal_return == 1.0
  np.testing.assert_array_equal(w.reset(0), [one_hot(1), one_hot(1)])
  w = worlds.make("toy:chain-mirror-9", num_envs=1, max_steps=3)
  assert isinstance(w, MirrorChainWorld) and (w.n, w.max_steps) == (9, 3)
  for world_id in ("toy:chain", "toy:chain-9"):
    assert type(worlds.make(world_id, num_envs=1)) is ChainWorld


@pytest.mark.parametrize("n", [3, 6, 9])
def test_chain_mirror_always_0_gets_one_in_n_minus_2_steps(n):
  w = worlds.make(f"toy:chain-mirror-{n}", num_envs=2)
  w.reset(0)
  for t in range(1, n - 1):
    s = w.step(np.full(2, 0))
    assert (s.terminated == (t == n - 2)).all() and not s.truncated.any()
    assert (s.reward == (1.0 if t == n - 2 else 0.0)).all()
  np.testing.assert_array_equal(s.episode_return, [1.0, 1.0])
  np.testing.assert_array_equal(s.episode_length, [n - 2, n - 2])
  np.testing.assert_array_equal(s.final_obs, np.tile(one_hot(n - 1, n), (2, 1)))
  np.testing.assert_array_equal(s.obs, np.tile(one_hot(1, n), (2, 1)))


def test_chain_mirror_always_1_falls_off_the_left_end():
  # The chain's optimal policy (always 1) on the mirror: cell 0, then off the end (+0.1).
  w = worlds.make("toy:chain-mirror", num_envs=1)
  w.reset(0)
  s1, s2 = w.step(np.array([1])), w.step(np.array([1]))
  assert s1.reward[0] == 0 and not s1.terminated[0] and not s1.truncated[0]
  assert np.isnan(s1.episode_return[0])
  np.testing.assert_array_equal(s1.obs[0], one_hot(0))
  assert s2.reward[0] == np.float32(0.1) and s2.terminated[0] and not s2.truncated[0]
  assert s2.episode_return[0] == np.float32(0.1) and s2.episode_length[0] == 2
  np.testing.assert_array_equal(s2.final_obs[0], one_hot(0))
  np.testing.assert_array_equal(s2.obs[0], one_hot(1))


def test_chain_mirror_is_the_chain_with_actions_swapped():
  # 40 steps over 3 envs, reaching the goal, falling off the end and truncating (max_steps=5).
  t = np.arange(40)
  actions = np.stack([t % 5 == 4, t % 3 != 2, t % 2], axis=1).astype(np.int64)
  mirror, chain = MirrorChainWorld(num_envs=3, max_steps=5), ChainWorld(num_envs=3, max_steps=5)
  mirror.reset(0), chain.reset(0)
  kinds = np.zeros(3, int)  # goal, fell off, truncated
  for t, act in enumerate(actions):
    s = mirror.step(act)
    assert_steps_equal(s, chain.step(1 - act), f"t={t}")
    kinds += [(s.reward == 1).sum(), (s.reward == np.float32(0.1)).sum(), s.truncated.sum()]
  assert (kinds > 0).all(), kinds
  # And the chain itself is unchanged: always right reaches the goal in n-2 = 4 steps.
  chain.reset(0)
  steps = [chain.step(np.full(3, R)) for _ in range(4)]
  assert [bool(s.terminated.all()) for s in steps] == [False, False, False, True]
  np.testing.assert_array_equal(steps[-1].episode_return, [1.0] * 3)


# ------------------------------------------------------------------ errors


def test_new_ids_are_listed_after_the_old_ones():
  # Unknown ids of these families are checked with the others in tests/test_worlds.py.
  listed = ", ".join(worlds.available())
  assert listed.startswith("toy:chain, toy:chain-<n>, gym:")
  assert "cartpole:long-pole" in listed and listed.endswith("toy:chain-mirror, toy:chain-mirror-<n>")


def test_unknown_member_without_a_close_name_suggests_nothing():
  with pytest.raises(ValueError, match=r"no such CartPole variant\. Available: ") as e:
    worlds.make("cartpole:Acrobot-v1", num_envs=1)
  assert "did you mean" not in str(e.value)
  with pytest.raises(ValueError, match="no CartPole variant 'tall'; variants: base, long-pole"):
    CartPoleWorld("tall", num_envs=1)
