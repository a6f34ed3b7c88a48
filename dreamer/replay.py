"""Prioritised trajectory replay that lives on the device as one pytree (so it is jitted, sharded and saved whole).

Each of the E actor environments owns a ring of T rows; rows of one env are consecutive steps, so any row
starts a trajectory segment. Row t holds obs_t, the action taken, the reward received and the search
statistics. When an episode ends, one extra row holds its final observation (`last`; `terminal` if it
ended by termination rather than truncation), so truncated episodes bootstrap from the true final state.
Sampling is proportional to priority**alpha over every written non-last row (inverse-CDF on a cumulative
sum), with importance weights (N P(i))**-beta normalised by their batch maximum, as in EfficientZero.

Pixel worlds are stacked S frames deep by the agent, but each frame is stored once: row t holds only frame t,
and `gather(..., stack=S)` rebuilds the stack of rows t-S+1..t, repeating the first frame of the episode for
frames from before its start (as the actor's stack does). So that every sampled root has all its frames,
the S-1 oldest rows of a ring that has wrapped are never sampled.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np


class Rows(NamedTuple):
  """Stored rows; leading axes [E, T] in the buffer, [E] for one step, [B, W] for a gathered window."""

  obs: jax.Array  # [..., *obs_shape]
  action: jax.Array  # i32[...]
  reward: jax.Array  # f32[...]   reward received after `action`
  policy: jax.Array  # f32[..., A] search policy at acting time
  value: jax.Array  # f32[...]   search root value at acting time
  last: jax.Array  # bool[...]  the final observation of an episode (no action follows)
  terminal: jax.Array  # bool[...]  last, and the episode terminated (value 0 beyond it)
  step: jax.Array  # i32[...]   env steps done when the row was written (sample age)


class ReplayState(NamedTuple):
  rows: Rows  # leaves [E, T, ...]
  priority: jax.Array  # f32[E, T]; 0 for rows that may not be sampled (unwritten or `last`)
  head: jax.Array  # i32[E]: rows written so far per env (absolute; slot = index % T)
  max_priority: jax.Array  # f32[]: priority given to new rows


class Sample(NamedTuple):
  env: jax.Array  # i32[B]
  index: jax.Array  # i32[B] absolute row index within the env's ring
  weight: jax.Array  # f32[B] importance weight, max 1


def init(num_envs: int, capacity: int, obs_shape: tuple[int, ...], obs_dtype, num_actions: int) -> ReplayState:
  """An empty buffer of `capacity` rows in all (capacity // num_envs per env)."""
  e, t = num_envs, capacity // num_envs
  rows = Rows(
    obs=jnp.zeros((e, t, *obs_shape), obs_dtype),
    action=jnp.zeros((e, t), jnp.int32),
    reward=jnp.zeros((e, t), jnp.float32),
    policy=jnp.zeros((e, t, num_actions), jnp.float32),
    value=jnp.zeros((e, t), jnp.float32),
    last=jnp.zeros((e, t), bool),
    terminal=jnp.zeros((e, t), bool),
    step=jnp.zeros((e, t), jnp.int32),
  )
  return ReplayState(rows, jnp.zeros((e, t), jnp.float32), jnp.zeros((e,), jnp.int32), jnp.ones((), jnp.float32))


def nbytes(state: ReplayState) -> int:
  return int(sum(np.prod(x.shape) * x.dtype.itemsize for x in jax.tree.leaves(state)))


def add(
  state: ReplayState, row: Rows, final_obs: jax.Array, ended: jax.Array, terminated: jax.Array, *, stack: int = 1
) -> ReplayState:
  """Appends one step for every env (leaves of `row`: [E, ...]); envs whose episode `ended` also get the
  final-observation row `final_obs` [E, *obs_shape] right after it. `stack` S > 1: the S-1 oldest rows of a
  wrapped ring lose their earlier frames, so their priority becomes 0."""
  e, t = state.priority.shape
  envs = jnp.arange(e)
  slot = state.head % t
  # The final row goes to the next slot, or nowhere (index t is out of range and dropped) if not ended.
  final_slot = jnp.where(ended, (state.head + 1) % t, t)
  final = Rows(
    obs=final_obs,
    action=jnp.zeros_like(row.action),
    reward=jnp.zeros_like(row.reward),
    policy=jnp.zeros_like(row.policy),
    value=jnp.zeros_like(row.value),
    last=jnp.ones_like(row.last),
    terminal=terminated,
    step=row.step,
  )
  rows = jax.tree.map(lambda buf, x: buf.at[envs, slot].set(x), state.rows, row)
  rows = jax.tree.map(lambda buf, x: buf.at[envs, final_slot].set(x, mode="drop"), rows, final)
  priority = state.priority.at[envs, slot].set(state.max_priority)
  priority = priority.at[envs, final_slot].set(0.0, mode="drop")
  head = state.head + 1 + ended.astype(jnp.int32)
  for j in range(stack - 1):
    oldest = head - t + j  # absolute index; its predecessor frames were overwritten if the ring wrapped
    priority = priority.at[envs, jnp.where(head > t, oldest % t, t)].set(0.0, mode="drop")
  return state._replace(rows=rows, priority=priority, head=head)


def pick(p: jax.Array, cdf: jax.Array, u: jax.Array) -> jax.Array:
  """Inverse-CDF draw: for each u in [0, total), the first row i with cdf[i] > u, moved back to the nearest row
  at or before it whose p > 0 (or the first such row). The move matters only through float32 rounding: XLA's
  cumsum is a tree scan, so a row with p = 0 can get a sliver of the CDF (or u can round up to the total), and
  with ~1e5 mostly unwritten rows such a draw happened within a few hundred updates; its weight was then
  (N * 0)^-beta = inf and the loss NaN. p f32[N] >= 0 with some p > 0, cdf f32[N], u f32[B] -> i32[B]."""
  n = p.shape[0]
  flat = jnp.minimum(jnp.searchsorted(cdf, u, side="right"), n - 1)
  last_valid = jax.lax.cummax(jnp.where(p > 0, jnp.arange(n), -1))  # integer scan: exact
  flat = last_valid[flat]
  return jnp.where(flat >= 0, flat, jnp.argmax(p > 0))


def sample(state: ReplayState, rng_key: jax.Array, batch: int, *, alpha: float, beta: jax.Array) -> Sample:
  """Draws `batch` rows with probability p_i**alpha / sum_j p_j**alpha, with replacement."""
  env, index, prob, count = _draw(state, rng_key, batch, alpha=alpha)
  weight = (count * prob) ** (-beta)
  return Sample(env, index, weight / jnp.max(weight))


def _draw(state: ReplayState, rng_key: jax.Array, batch: int, *, alpha: float) -> tuple[jax.Array, ...]:
  """(env i32[B], absolute index i32[B], probability f32[B] of each draw, count of sampleable rows)."""
  e, t = state.priority.shape
  p = jnp.where(state.priority > 0, state.priority**alpha, 0.0).reshape(-1)
  cdf = jnp.cumsum(p)
  total = cdf[-1]
  flat = pick(p, cdf, jax.random.uniform(rng_key, (batch,)) * total)
  env, slot = flat // t, flat % t
  newest = state.head[env] - 1
  index = newest - (newest - slot) % t
  return env.astype(jnp.int32), index.astype(jnp.int32), p[flat] / total, jnp.sum(p > 0)


@functools.partial(jax.tree_util.register_dataclass, data_fields=["replays"], meta_fields=["sizes"])
@dataclasses.dataclass(frozen=True)
class Sources:
  """Several replays sampled as one, each as it is (rings of their own lengths, nothing copied or padded):
  every batch takes `sizes[s]` rows from `replays[s]` (`sample_sources`). The learner takes it wherever it
  takes a ReplayState; `sizes` is static (part of the compiled program), sum(sizes) the batch size."""

  replays: tuple[ReplayState, ...]
  sizes: tuple[int, ...]

  @staticmethod
  def of(replays: tuple[ReplayState, ...], batch: int) -> Sources:
    """The replays with a batch split in proportion to their sampleable rows (`shares`)."""
    return Sources(tuple(replays), shares(tuple(replays), batch))

  def priorities(self) -> tuple[jax.Array, ...]:
    return tuple(r.priority for r in self.replays)

  def with_priorities(self, priorities: tuple[jax.Array, ...]) -> Sources:
    """These replays with `priorities` (as `priorities()` gave them), max_priority raised to cover them."""
    replays = tuple(
      r._replace(priority=p, max_priority=jnp.maximum(r.max_priority, jnp.max(p)))
      for r, p in zip(self.replays, priorities, strict=True)
    )
    return Sources(replays, self.sizes)


def sample_sources(sources: Sources, rng_key: jax.Array, *, alpha: float, beta: jax.Array) -> tuple[Sample, ...]:
  """`sizes[s]` draws from `replays[s]` by its priorities: a batch stratified by source, each source's share
  fixed. Importance weights are over the union, as `sample`'s: P(i) = sizes[s] / B x p_i**alpha / (the sum
  over source s), N the sampleable rows of all sources, weights normalised by the batch's maximum. With
  shares in proportion to the sources' rows and priorities all equal, this samples the union uniformly, each
  source's count fixed at its expectation rather than binomial."""
  sizes = sources.sizes
  keys = [rng_key] if len(sizes) == 1 else jax.random.split(rng_key, len(sizes))  # one source: as `sample`
  draws = [_draw(src, k, n, alpha=alpha) for src, k, n in zip(sources.replays, keys, sizes, strict=True)]
  count = sum(d[3] for d in draws)
  batch = sum(sizes)
  weights = [(count * (n / batch) * d[2]) ** (-beta) for n, d in zip(sizes, draws, strict=True)]
  top = jnp.max(jnp.concatenate(weights))
  return tuple(Sample(d[0], d[1], w / top) for d, w in zip(draws, weights, strict=True))


def shares(sources: tuple[ReplayState, ...], batch: int) -> tuple[int, ...]:
  """Draws per source for `sample_sources`, on the host: in proportion to each source's sampleable rows (what
  sampling their union uniformly would give on average), at least one for a source that has any, summing to
  `batch`."""
  counts = np.array([int(jnp.sum(src.priority > 0)) for src in sources], np.float64)
  if counts.sum() == 0:
    raise ValueError("no source has a row to sample")
  exact = batch * counts / counts.sum()
  sizes = np.maximum(np.floor(exact), (counts > 0).astype(np.float64)).astype(int)
  while sizes.sum() > batch:  # the minimum of one took draws from the largest
    sizes[np.argmax(sizes)] -= 1
  for i in np.argsort(-(exact - sizes))[: batch - sizes.sum()]:  # largest remainders first
    sizes[i] += 1
  return tuple(int(n) for n in sizes)


def gather(
  state: ReplayState, env: jax.Array, index: jax.Array, length: int, *, stack: int = 1
) -> tuple[Rows, jax.Array]:
  """Rows index..index+length-1 of each sampled env: leaves [B, length, ...], and known: bool[B, length]
  (False for rows not written yet). With `stack` S > 1, obs is [B, length, S, *frame_shape]: each row's
  frame with the S-1 before it, oldest first, frames before the episode's start replaced by its first."""
  t = state.priority.shape[1]
  absolute = index[:, None] + jnp.arange(length)[None, :]
  window = jax.tree.map(lambda buf: buf[env[:, None], absolute % t], state.rows._replace(obs=None))
  head = state.head[env][:, None]
  if stack > 1:
    frames = stack_indices(state.rows.last[env], index, head, length=length, stack=stack, capacity=t)
    obs = state.rows.obs[env[:, None, None], frames % t]
  else:
    obs = state.rows.obs[env[:, None], absolute % t]
  return window._replace(obs=obs), absolute < head


def stack_indices(
  last: jax.Array, index: jax.Array, head: jax.Array, *, length: int, stack: int, capacity: int
) -> jax.Array:
  """Absolute row of every stacked frame, i32[B, length, stack], for rows index..index+length-1.

  last: bool[B, T] the sampled envs' `last` flags; head: i32[B, 1]. A row's episode starts after the newest
  `last` row before it, at absolute row 0, or at the oldest row still in the ring, whichever is latest.
  """
  s = stack
  ext = index[:, None] - (s - 1) + jnp.arange(length + s - 1)[None, :]  # [B, L+S-1]
  oldest = jnp.maximum(head - capacity, 0)
  written = (ext >= oldest) & (ext < head)
  is_last = jnp.take_along_axis(last, ext % capacity, axis=1) & written
  # The first row after each `last` row starts an episode; carry the latest such start forward.
  starts = jax.lax.cummax(jnp.where(is_last, ext + 1, jnp.iinfo(jnp.int32).min), axis=1)
  start = jnp.maximum(starts[:, s - 2 : s - 2 + length], oldest)  # [B, L]: rows before each row
  row = index[:, None] + jnp.arange(length)[None, :]
  frames = row[:, :, None] - (s - 1) + jnp.arange(s)[None, None, :]
  return jnp.maximum(frames, start[:, :, None])


def set_priorities(state: ReplayState, env: jax.Array, index: jax.Array, priority: jax.Array) -> ReplayState:
  """New priorities (f32[B] > 0) of the sampled rows. A row sampled twice in one batch takes the larger of its
  two: a plain scatter keeps whichever write lands last, which XLA leaves unspecified, and which differs once
  the batch is split over devices."""
  t = state.priority.shape[1]
  cleared = state.priority.at[env, index % t].set(0.0)  # the same value from every duplicate: well defined
  return state._replace(
    priority=cleared.at[env, index % t].max(priority),
    max_priority=jnp.maximum(state.max_priority, jnp.max(priority)),
  )
