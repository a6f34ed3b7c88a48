"""Training targets for one gathered window of W = K + n + 1 rows per sample (row 0 is the sampled root).

For unroll row k (0..K):
- value: z_k = sum_{j=k}^{h-1} discount^(j-k) r_j + discount^(h-k) V(o_h) [0 if o_h is terminal], with
  h = min(k + n_eff, end of episode, newest written row); beyond a terminal end z_k = 0 (absorbing);
- value prefix (k >= 1): the sum of rewards r_s..r_{k-1} since the last LSTM reset s = ((k-1)//H)*H, with
  zero rewards beyond a terminal end;
- terminal (k >= 1): whether row k is the root episode's terminal end (its last row, the episode terminated);
- masks say which targets exist: nothing is trained past a truncation or past the newest written row.
n_eff is the off-policy correction: n shrinks by one per `td_age_steps` env steps of the root's age.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from dreamer.replay import Rows


class Targets(NamedTuple):
  value: jax.Array  # f32[B, K+1]
  value_mask: jax.Array  # f32[B, K+1]
  prefix: jax.Array  # f32[B, K]    (unroll steps 1..K)
  prefix_mask: jax.Array  # f32[B, K]
  policy_mask: jax.Array  # f32[B, K+1]  a search policy exists for the row
  obs_mask: jax.Array  # f32[B, K+1]  the row's observation belongs to the root's episode
  td_steps: jax.Array  # i32[B]       n_eff
  terminal: jax.Array | None = None  # f32[B, K]  1 at unroll step k (1..K) if row k ends the root's episode by
  # termination, else 0 (a truncation's last row included); trained where obs_mask[:, 1:] is 1


def td_horizon(age: jax.Array, *, td_steps: int, td_age_steps: int) -> jax.Array:
  """n_eff: td_steps shortened by one per `td_age_steps` env steps of age, at least 1 (0 turns this off)."""
  if td_age_steps <= 0:
    return jnp.full(age.shape, td_steps, jnp.int32)
  return jnp.clip(td_steps - age // td_age_steps, 1, td_steps).astype(jnp.int32)


def bootstrap_rows(last: jax.Array, known: jax.Array, n_eff: jax.Array, *, unroll_steps: int) -> jax.Array:
  """h: i32[B, K+1], the row each unroll row k bootstraps from: min(k + n_eff, first `last` row at or after
  k, newest written row). `last` must already be masked by `known`."""
  width = known.shape[1]
  j = jnp.arange(width)
  newest = jnp.sum(known, axis=1) - 1  # rows are known as a prefix
  rows = []
  for k in range(unroll_steps + 1):
    end = jnp.min(jnp.where(last & (j >= k), j, width + 1), axis=1)
    rows.append(jnp.minimum(jnp.minimum(k + n_eff, end), newest))
  return jnp.stack(rows, axis=1)


def compute(
  window: Rows,
  known: jax.Array,
  bootstrap: jax.Array,
  age: jax.Array,
  *,
  unroll_steps: int,
  td_steps: int,
  td_age_steps: int,
  discount: float,
  horizon: int,
) -> Targets:
  """window leaves [B, W, ...], known bool[B, W], bootstrap V(o_j) f32[B, W] (read only at the rows given by
  `bootstrap_rows`), age i32[B] -> Targets."""
  k_max, width = unroll_steps, known.shape[1]
  assert width == unroll_steps + td_steps + 1, (width, unroll_steps, td_steps)
  last = window.last & known
  j = jnp.arange(width)
  # Row j is in the root's episode iff no `last` row comes before it.
  ended_before = jnp.cumsum(last, axis=1) - last > 0
  in_episode = known & ~ended_before
  # The root's episode ends at its first `last` row; only that end decides absorbing (terminal) rows.
  end_terminal = last & (jnp.cumsum(last, axis=1) == 1) & window.terminal
  terminal_before = jnp.cumsum(end_terminal, axis=1) - end_terminal > 0
  n_eff = td_horizon(age, td_steps=td_steps, td_age_steps=td_age_steps)
  rows = bootstrap_rows(last, known, n_eff, unroll_steps=k_max)

  values = []
  for k in range(k_max + 1):
    h = rows[:, k]
    power = (j - k).astype(jnp.float32)
    weights = jnp.where((j[None] >= k) & (j[None] < h[:, None]), discount**power, 0.0)
    rewards = jnp.sum(weights * window.reward, axis=1)
    boot_row = jnp.take_along_axis(bootstrap, h[:, None], axis=1)[:, 0]
    boot_terminal = jnp.take_along_axis(last & window.terminal, h[:, None], axis=1)[:, 0]
    boot = jnp.where(boot_terminal, 0.0, discount ** (h - k).astype(jnp.float32) * boot_row)
    values.append(jnp.where(in_episode[:, k], rewards + boot, 0.0))
  value = jnp.stack(values, axis=1)
  value_mask = (in_episode | terminal_before)[:, : k_max + 1]

  # Rewards r_j exist for in-episode rows that are not `last`; past a terminal end they are 0.
  reward_known = (in_episode & ~last) | terminal_before | end_terminal
  reward = jnp.where(in_episode & ~last, window.reward, 0.0)
  prefixes, prefix_masks = [], []
  for k in range(1, k_max + 1):
    start = ((k - 1) // horizon) * horizon
    prefixes.append(jnp.sum(reward[:, start:k], axis=1))
    prefix_masks.append(reward_known[:, k - 1])
  return Targets(
    value=value,
    value_mask=value_mask.astype(jnp.float32),
    prefix=jnp.stack(prefixes, axis=1),
    prefix_mask=jnp.stack(prefix_masks, axis=1).astype(jnp.float32),
    policy_mask=(in_episode & ~last)[:, : k_max + 1].astype(jnp.float32),
    obs_mask=in_episode[:, : k_max + 1].astype(jnp.float32),
    td_steps=n_eff,
    terminal=end_terminal[:, 1 : k_max + 1].astype(jnp.float32),
  )
