"""Tests for dreamer/replay.py: exact ring contents after scripted adds, wrap-around, gather, prioritised
sampling frequencies, importance weights, absolute indices after wrap-around, and set_priorities."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dreamer import replay
from dreamer.replay import Rows

A = 3  # actions
OBS = (2,)
T = 6  # rows per env in every buffer here (one shape, so each jitted function compiles once)

ADD = jax.jit(replay.add)
SET_PRIORITIES = jax.jit(replay.set_priorities)
GATHER = jax.jit(replay.gather, static_argnums=3)


def new_buffer():
  return replay.init(num_envs=2, capacity=2 * T, obs_shape=OBS, obs_dtype=jnp.float32, num_actions=A)


def step_row(s: int, e_count: int, absolute: list[int]) -> Rows:
  """The row appended at add call s: obs = [env, absolute index], action 10*env + s, reward 100*env + s + .5,
  policy [s, env, 1], value -(s + env), step 1000 + 2*s."""
  envs = np.arange(e_count)
  return Rows(
    obs=jnp.asarray(np.stack([envs, absolute], axis=1), jnp.float32),
    action=jnp.asarray(10 * envs + s, jnp.int32),
    reward=jnp.asarray(100 * envs + s + 0.5, jnp.float32),
    policy=jnp.asarray(np.stack([np.full(e_count, s), envs, np.ones(e_count)], axis=1), jnp.float32),
    value=jnp.asarray(-(s + envs), jnp.float32),
    last=jnp.zeros(e_count, bool),
    terminal=jnp.zeros(e_count, bool),
    step=jnp.full(e_count, 1000 + 2 * s, jnp.int32),
  )


class Model:
  """A plain-list model of what each env's ring should hold: log[e][absolute index] = expected row."""

  def __init__(self, e_count, t):
    self.e, self.t = e_count, t
    self.log = [[] for _ in range(e_count)]
    self.max_priority = 1.0

  def add(self, state, s, ended=(), terminated=(), add_fn=ADD):
    absolute = [len(self.log[e]) for e in range(self.e)]
    row = step_row(s, self.e, absolute)
    final_obs = np.stack([np.arange(self.e), [a + 1 for a in absolute]], axis=1).astype(np.float32)
    for e in range(self.e):
      self.log[e].append(
        dict(
          obs=[e, absolute[e]],
          action=10 * e + s,
          reward=100 * e + s + 0.5,
          policy=[s, e, 1],
          value=-(s + e),
          last=False,
          terminal=False,
          step=1000 + 2 * s,
          priority=self.max_priority,
        )
      )
      if e in ended:
        self.log[e].append(
          dict(
            obs=[e, absolute[e] + 1],
            action=0,
            reward=0.0,
            policy=[0, 0, 0],
            value=0.0,
            last=True,
            terminal=e in terminated,
            step=1000 + 2 * s,
            priority=0.0,
          )
        )
    ended_v = jnp.asarray([e in ended for e in range(self.e)])
    terminated_v = jnp.asarray([e in terminated for e in range(self.e)])
    return add_fn(state, row, jnp.asarray(final_obs), ended_v, terminated_v)

  def ring(self, field):
    """Expected ring contents [E, T, ...] for `field` (zeros where never written)."""
    out = []
    for e in range(self.e):
      slots = [None] * self.t
      for a, r in enumerate(self.log[e]):
        slots[a % self.t] = r[field]  # later rows overwrite older ones
      zero = 0 if not isinstance(self.log[e][0][field], list) else [0] * len(self.log[e][0][field])
      out.append([zero if v is None else v for v in slots])
    return np.asarray(out)


def check_rings(state, model):
  rows = state.rows
  np.testing.assert_array_equal(np.asarray(state.head), [len(rows) for rows in model.log])
  for field in ("obs", "action", "reward", "policy", "value", "last", "terminal", "step"):
    np.testing.assert_array_equal(
      np.asarray(getattr(rows, field)), model.ring(field).astype(np.asarray(getattr(rows, field)).dtype), err_msg=field
    )
  np.testing.assert_array_equal(np.asarray(state.priority), model.ring("priority").astype(np.float32))


def test_init_shapes():
  st = replay.init(num_envs=2, capacity=13, obs_shape=(4, 4), obs_dtype=jnp.uint8, num_actions=A)
  assert st.rows.obs.shape == (2, 6, 4, 4) and st.rows.obs.dtype == jnp.uint8
  assert st.rows.policy.shape == (2, 6, A) and st.priority.shape == (2, 6)
  np.testing.assert_array_equal(np.asarray(st.head), [0, 0])
  assert float(st.max_priority) == 1.0 and float(jnp.sum(st.priority)) == 0.0


def test_add_exact_contents_then_wraparound():
  t = T
  st = new_buffer()
  m = Model(2, t)
  st = m.add(st, 0)
  st = m.add(st, 1, ended=(1,), terminated=(1,))  # env 1 terminates: final row right after its step-1 row
  # raise max_priority to 3 (via set_priorities on env 0's row 0): rows added from now on get 3
  st = SET_PRIORITIES(st, jnp.array([0]), jnp.array([0]), jnp.array([3.0]))
  m.log[0][0]["priority"] = 3.0
  m.max_priority = 3.0
  st = m.add(st, 2)
  st = m.add(st, 3, ended=(0,))  # env 0 is truncated (ended, not terminated)

  # written out by hand (unwritten slot 5 stays zero)
  np.testing.assert_array_equal(np.asarray(st.head), [5, 5])
  np.testing.assert_array_equal(
    np.asarray(st.rows.obs),
    [[[0, 0], [0, 1], [0, 2], [0, 3], [0, 4], [0, 0]], [[1, 0], [1, 1], [1, 2], [1, 3], [1, 4], [0, 0]]],
  )
  np.testing.assert_array_equal(np.asarray(st.rows.action), [[0, 1, 2, 3, 0, 0], [10, 11, 0, 12, 13, 0]])
  np.testing.assert_array_equal(
    np.asarray(st.rows.reward), [[0.5, 1.5, 2.5, 3.5, 0, 0], [100.5, 101.5, 0, 102.5, 103.5, 0]]
  )
  np.testing.assert_array_equal(np.asarray(st.rows.last), [[0, 0, 0, 0, 1, 0], [0, 0, 1, 0, 0, 0]])
  np.testing.assert_array_equal(np.asarray(st.rows.terminal), [[0, 0, 0, 0, 0, 0], [0, 0, 1, 0, 0, 0]])
  np.testing.assert_array_equal(
    np.asarray(st.rows.step), [[1000, 1002, 1004, 1006, 1006, 0], [1000, 1002, 1002, 1004, 1006, 0]]
  )
  np.testing.assert_array_equal(np.asarray(st.priority), [[3, 1, 3, 3, 0, 0], [1, 1, 0, 3, 3, 0]])
  assert float(st.max_priority) == 3.0
  check_rings(st, m)

  # gather: rows beyond head are not known
  g, known = GATHER(st, jnp.array([0, 1, 1]), jnp.array([2, 3, 0]), 4)
  np.testing.assert_array_equal(np.asarray(known), [[1, 1, 1, 0], [1, 1, 0, 0], [1, 1, 1, 1]])
  np.testing.assert_array_equal(np.asarray(g.obs)[0, :3], [[0, 2], [0, 3], [0, 4]])
  np.testing.assert_array_equal(np.asarray(g.obs)[1, :2], [[1, 3], [1, 4]])
  np.testing.assert_array_equal(np.asarray(g.last)[2], [0, 0, 1, 0])

  # wrap-around: keep adding (with more episode ends); the oldest rows get overwritten
  for s, ended, term in [(4, (), ()), (5, (1,), ()), (6, (0,), (0,)), (7, (), ()), (8, (0, 1), (1,))]:
    st = m.add(st, s, ended, term)
    check_rings(st, m)
  heads = np.asarray(st.head)
  np.testing.assert_array_equal(heads, [12, 12])  # 2 T: every slot has been overwritten once
  # slot of row 6 (the first overwrite of slot 0) holds absolute row 6 (or later), never row 0
  assert np.asarray(st.rows.obs)[0, 0, 1] == max(a for a in range(heads[0]) if a % t == 0)

  # gather after wrap-around: the T newest rows are all known and exact; rows at/after head are not known
  idx = heads - t
  g, known = GATHER(st, jnp.array([0, 1]), jnp.asarray(idx, jnp.int32), t + 2)
  assert np.asarray(known).tolist() == [[True] * t + [False] * 2] * 2
  for e in range(2):
    np.testing.assert_array_equal(np.asarray(g.obs)[e, :t, 1], np.arange(idx[e], heads[e]))
    np.testing.assert_array_equal(np.asarray(g.last)[e, :t], [m.log[e][a]["last"] for a in range(idx[e], heads[e])])


# ------------------------------------------------------------------ sampling


def small_buffer():
  """E=2, T=6. env 0: rows 0..2 written, slots 3..5 unwritten. env 1: rows 0, 1, final (slot 2, `last`), 3,
  slots 4, 5 unwritten. Fixed priorities are then set on the six sampleable rows."""
  st = new_buffer()
  m = Model(2, T)
  st = m.add(st, 0)
  st = m.add(st, 1, ended=(1,), terminated=(1,))
  st = m.add(st, 2)
  np.testing.assert_array_equal(np.asarray(st.head), [3, 4])
  st = SET_PRIORITIES(
    st, jnp.array([0, 0, 0, 1, 1, 1]), jnp.array([0, 1, 2, 0, 1, 3]), jnp.array([0.5, 2.0, 1.0, 4.0, 0.25, 1.5])
  )
  prio = np.array([[0.5, 2.0, 1.0, 0.0, 0.0, 0.0], [4.0, 0.25, 0.0, 1.5, 0.0, 0.0]])
  np.testing.assert_array_equal(np.asarray(st.priority), prio)
  return st, prio


@functools.cache
def jit_sample(batch):
  """jit(state, key, beta, alpha) -> Sample; alpha is traced so each batch size compiles once."""
  return jax.jit(lambda st, key, beta, alpha: replay.sample(st, key, batch, alpha=alpha, beta=beta))


@pytest.mark.parametrize("alpha", [0.0, 0.6, 1.0])
def test_sampling_frequencies(alpha):
  st, prio = small_buffer()
  n = 200_000
  smp = jit_sample(n)(st, jax.random.key(1234), jnp.float32(0.4), jnp.float32(alpha))
  env, index = np.asarray(smp.env), np.asarray(smp.index)
  counts = np.zeros((2, T))
  np.add.at(counts, (env, index % T), 1)
  p = np.where(prio > 0, prio**alpha, 0.0)
  p = p / p.sum()
  if alpha == 0.0:
    np.testing.assert_allclose(p[prio > 0], 1 / 6)  # uniform over the 6 written non-last rows
  # zero-priority rows (unwritten slots, env 1's `last` row in slot 2) are never drawn
  assert np.all(counts[prio == 0] == 0) and counts[1, 2] == 0 and counts[0, 3:].sum() == 0
  sigma = np.sqrt(n * p * (1 - p))
  np.testing.assert_array_less(
    np.abs(counts - n * p), 5 * sigma + 1e-9, err_msg=f"counts {counts.tolist()} vs expected {(n * p).tolist()}"
  )
  # absolute indices are within the written rows
  assert np.all(index >= 0) and np.all(index < np.asarray(st.head)[env])


@pytest.mark.parametrize("alpha,beta", [(0.6, 0.4), (1.0, 1.0), (0.6, 0.0)])
def test_importance_weights(alpha, beta):
  st, prio = small_buffer()
  smp = jit_sample(64)(st, jax.random.key(7), jnp.float32(beta), jnp.float32(alpha))
  env, index, weight = (np.asarray(x) for x in smp)
  p = np.where(prio > 0, prio**alpha, 0.0)
  p = p / p.sum()
  count = np.sum(prio > 0)  # 6 rows with nonzero priority
  assert count == 6
  w = (count * p[env, index % T]) ** (-beta)
  w = w / w.max()
  np.testing.assert_allclose(weight, w, rtol=1e-5)
  assert weight.max() == pytest.approx(1.0)
  assert len(set(zip(env.tolist(), index.tolist()))) > 3  # the batch is not degenerate


# ------------------------------------------------------------------ several replays sampled as one


def _one_env_buffer():
  """E=1, T=4, rows 0..2 written at priorities 1, 3, 2 (a source of another ring length than small_buffer's)."""
  st = replay.init(1, 4, (2,), np.float32, 3)
  m = Model(1, 4)
  for s in range(3):
    st = m.add(st, s)
  return SET_PRIORITIES(st, jnp.array([0, 0, 0]), jnp.array([0, 1, 2]), jnp.array([1.0, 3.0, 2.0]))


def test_shares_follow_the_sources_rows_and_add_up_to_the_batch():
  a, _ = small_buffer()  # 6 sampleable rows
  b = _one_env_buffer()  # 3
  assert replay.shares((a, b), 9) == (6, 3)
  assert replay.shares((a, b), 10) == (7, 3)  # 6.67 + 3.33: the larger remainder takes the spare draw
  assert replay.shares((a, b, b), 3) == (1, 1, 1)  # 1.5, 0.75, 0.75: every source with rows gets a draw
  empty = replay.init(1, 4, (2,), np.float32, 3)
  assert replay.shares((a, empty), 5) == (5, 0)


def test_one_source_samples_exactly_as_the_replay_itself():
  st, _ = small_buffer()
  key, beta = jax.random.key(3), jnp.float32(0.4)
  (got,) = replay.sample_sources(replay.Sources((st,), (64,)), key, alpha=0.6, beta=beta)
  want = replay.sample(st, key, 64, alpha=0.6, beta=beta)
  for g, w in zip(got, want, strict=True):
    np.testing.assert_array_equal(np.asarray(g), np.asarray(w))


@pytest.mark.parametrize("alpha,beta", [(0.6, 0.4), (1.0, 1.0)])
def test_sources_draw_their_shares_with_weights_over_the_union(alpha, beta):
  a, prio_a = small_buffer()
  b = _one_env_buffer()
  prio_b = np.asarray(b.priority)
  sizes = (40, 24)
  smp = jax.jit(lambda s, k: replay.sample_sources(s, k, alpha=alpha, beta=jnp.float32(beta)))(
    replay.Sources((a, b), sizes), jax.random.key(5)
  )
  assert [len(np.asarray(one.env)) for one in smp] == list(sizes)
  weights = []
  for one, prio, n in zip(smp, (prio_a, prio_b), sizes, strict=True):
    env, index = np.asarray(one.env), np.asarray(one.index)
    t = prio.shape[1]
    assert np.all(prio[env, index % t] > 0)  # only sampleable rows of its own source
    p = np.where(prio > 0, prio**alpha, 0.0)
    weights.append((9 * n / 64 * p[env, index % t] / p.sum()) ** (-beta))  # N = 6 + 3 rows in the union
  top = max(w.max() for w in weights)
  for one, w in zip(smp, weights, strict=True):
    np.testing.assert_allclose(np.asarray(one.weight), w / top, rtol=1e-5)


# ------------------------------------------------------------------ wrap-around indices, set_priorities


def wrapped_buffer(script):
  st = new_buffer()
  m = Model(2, T)
  for s, ended, term in script:
    st = m.add(st, s, ended, term)
  return st, m


WRAPS = {
  # env 0 wraps (head 7 > T=6: slot 0 holds row 6), env 1 does not (head 5, slot 5 unwritten)
  "one_wrapped": (6, [(0, (), ()), (1, (0,), (0,)), (2, (), ()), (3, (0,), ()), (4, (), ())]),
  # both wrap more than twice, with episode ends in both envs (heads 17 and 16)
  "multi_wrap": (6, [(s, (0,) if s in (4, 9) else (1,) if s == 7 else (), (0,) if s == 4 else ()) for s in range(15)]),
}


@pytest.mark.parametrize("name", list(WRAPS))
def test_sample_indices_after_wraparound(name):
  t, script = WRAPS[name]
  st, m = wrapped_buffer(script)
  heads = np.asarray(st.head)
  smp = jit_sample(4096)(st, jax.random.key(3), jnp.float32(0.5), jnp.float32(1.0))
  env, index = np.asarray(smp.env), np.asarray(smp.index)
  head = heads[env]
  assert np.all(head - t <= index) and np.all(index < head)
  # the row at slot index % T really is absolute row `index` (obs stores [env, absolute index])
  obs = np.asarray(st.rows.obs)[env, index % t]
  np.testing.assert_array_equal(obs[:, 0], env)
  np.testing.assert_array_equal(obs[:, 1], index)
  # never a `last` row or an unwritten slot; every sampleable slot is drawn at least once
  assert not np.any(np.asarray(st.rows.last)[env, index % t])
  sampleable = {(e, a % t) for e in range(2) for a in range(max(0, heads[e] - t), heads[e]) if not m.log[e][a]["last"]}
  assert set(zip(env.tolist(), (index % t).tolist())) == sampleable
  # gather from the sampled index returns the rows in order
  g, known = GATHER(st, smp.env[:16], smp.index[:16], 3)
  np.testing.assert_array_equal(
    np.asarray(g.obs)[:, :, 1][np.asarray(known)], (index[:16, None] + np.arange(3))[np.asarray(known)]
  )
  np.testing.assert_array_equal(np.asarray(known), index[:16, None] + np.arange(3) < head[:16, None])


def test_set_priorities():
  t, script = WRAPS["multi_wrap"]
  st, m = wrapped_buffer(script)
  heads = np.asarray(st.head)
  np.testing.assert_array_equal(heads, [17, 16])
  before = np.asarray(st.priority).copy()
  env = np.array([0, 1, 0])
  index = np.array([heads[0] - 1, heads[1] - 3, heads[0] - 5])  # absolute indices beyond T
  assert np.all(index >= t)
  st2 = SET_PRIORITIES(st, jnp.asarray(env), jnp.asarray(index), jnp.array([5.0, 0.7, 2.0]))
  want = before.copy()
  want[0, (heads[0] - 1) % t] = 5.0
  want[1, (heads[1] - 3) % t] = 0.7
  want[0, (heads[0] - 5) % t] = 2.0
  np.testing.assert_array_equal(np.asarray(st2.priority), want)
  assert float(st2.max_priority) == 5.0
  # lower priorities do not lower max_priority
  st3 = SET_PRIORITIES(st2, jnp.array([1]), jnp.array([heads[1] - 1]), jnp.array([0.1]))
  assert float(st3.max_priority) == 5.0
  assert float(st3.priority[1, (heads[1] - 1) % t]) == pytest.approx(0.1)
  # the next added rows get the new max priority
  m.max_priority = 5.0
  st4 = m.add(st3, 99)
  np.testing.assert_array_equal(np.asarray(st4.priority)[[0, 1], heads % t], [5.0, 5.0])


# ------------------------------------------------------------------ frame stacks (each frame stored once)


def reference_stack(m: Model, e: int, a: int, stack: int) -> list[list[float]]:
  """Slow reference: the S frames of absolute row a of env e, walking back row by row to the episode start
  (the row after a `last` row, row 0, or the oldest row still in the ring)."""
  oldest = max(0, len(m.log[e]) - m.t)
  start = a
  while start - 1 >= oldest and not m.log[e][start - 1]["last"]:
    start -= 1
  return [m.log[e][max(p, start)]["obs"] for p in range(a - stack + 1, a + 1)]


@pytest.mark.parametrize("stack", [2, 4])
def test_gather_rebuilds_frame_stacks_exactly(stack):
  add = jax.jit(functools.partial(replay.add, stack=stack))
  gather = jax.jit(functools.partial(replay.gather, stack=stack), static_argnums=3)
  st, m = new_buffer(), Model(2, T)
  script = WRAPS["multi_wrap"][1]
  for n, (s, ended, term) in enumerate(script):
    st = m.add(st, s, ended, term, add_fn=add)
    heads = np.asarray(st.head)
    # every row still in the ring, as a window root and inside windows of length 3
    env = np.repeat([0, 1], T)
    index = np.concatenate([np.arange(h - T, h) for h in heads])
    g, known = gather(st, jnp.asarray(env, jnp.int32), jnp.asarray(index, jnp.int32), 3)
    obs, known = np.asarray(g.obs), np.asarray(known)
    assert obs.shape == (2 * T, 3, stack, 2)
    for b, (e, root) in enumerate(zip(env, index)):
      for q in range(3):
        a = root + q
        if a < 0 or not known[b, q] or a < heads[e] - T:
          continue
        np.testing.assert_array_equal(obs[b, q], reference_stack(m, e, a, stack), err_msg=f"add {n} env {e} row {a}")
    # the S-1 oldest rows of a wrapped ring are never sampled: their earlier frames are gone
    prio = np.asarray(st.priority)
    for e in range(2):
      for a in range(max(0, heads[e] - T), heads[e]):
        lost = heads[e] > T and a < heads[e] - T + stack - 1
        want = 0.0 if lost or m.log[e][a]["last"] else m.log[e][a]["priority"]
        assert prio[e, a % T] == want, (n, e, a)


def test_stack_one_is_the_plain_gather():
  st, _ = wrapped_buffer(WRAPS["multi_wrap"][1])
  env, index = jnp.array([0, 1, 0]), jnp.array([11, 12, 15])
  plain, _ = GATHER(st, env, index, 4)
  stacked, _ = jax.jit(functools.partial(replay.gather, stack=1), static_argnums=3)(st, env, index, 4)
  for x, y in zip(jax.tree.leaves(plain), jax.tree.leaves(stacked)):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_pick_never_returns_a_row_of_zero_priority():
  """A CDF that float32 rounding made non-monotone (a zero row with its own sliver) and draws at the very
  top must still land on rows with p > 0: the nearest one at or before the draw."""
  p = jnp.array([0.0, 2.0, 0.0, 0.0, 1.0, 0.0, 0.0])
  cdf = jnp.array([0.0, 2.0, 2.0, 2.5, 3.0, 3.0, 3.0])  # row 3 has a spurious sliver (2.0, 2.5]
  u = jnp.array([0.0, 1.9, 2.0, 2.2, 2.6, 2.999, 3.0, 3.5])
  assert replay.pick(p, cdf, u).tolist() == [1, 1, 1, 1, 4, 4, 4, 4]
  # Exact CDFs are untouched: every draw equals the plain inverse CDF.
  p = jnp.array([0.5, 0.0, 1.5, 2.0])
  cdf = jnp.cumsum(p)
  u = jnp.linspace(0.0, 3.99, 50)
  assert replay.pick(p, cdf, u).tolist() == jnp.searchsorted(cdf, u, side="right").tolist()
