"""Tests for dreamer/targets.py: a slow pure-Python reference written from the module docstring, compared
exactly against the jitted vectorised `compute` on hand-made windows, plus hand-computed literal cases."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dreamer import targets as targets_lib
from dreamer.replay import Rows

# ------------------------------------------------------------------ reference (plain Python floats, no jax)


def ref_one(reward, boot, last, terminal, known, age, *, K, n, td_age_steps, discount, H):
  """Targets for one window (lists of length W = K + n + 1), straight from the docstring semantics.

  The root's episode ends at the first known `last` row (if any). Rows after a terminal end are absorbing
  (value 0, reward 0, targets trained); rows after a truncation end or beyond the newest written row have
  no targets; a later episode's own end inside the window changes nothing.
  """
  W = K + n + 1
  assert len(reward) == len(boot) == len(last) == len(terminal) == len(known) == W
  newest = -1
  for j in range(W):
    if not known[j]:
      break
    newest = j
  assert newest >= 0 and not any(known[newest + 1 :]), "known must be a non-empty prefix"
  assert not last[0], "the root is never a `last` row"
  end = None  # first `last` row of the root's episode
  for j in range(newest + 1):
    if last[j]:
      end = j
      break
  term_end = end is not None and bool(terminal[end])

  if td_age_steps <= 0:
    n_eff = n
  else:
    n_eff = min(max(n - age // td_age_steps, 1), n)

  def in_episode(j):
    return j <= newest and (end is None or j <= end)

  def absorbing(j):  # strictly after a terminal end of the root's episode (known or not)
    return term_end and j > end

  value, value_mask, policy_mask, obs_mask = [], [], [], []
  for k in range(K + 1):
    if in_episode(k):
      h = min(k + n_eff, newest if end is None else min(end, newest))
      z = 0.0
      for j in range(k, h):
        z += discount ** (j - k) * reward[j]
      if not (end is not None and h == end and term_end):
        z += discount ** (h - k) * boot[h]
      value.append(z)
      value_mask.append(1.0)
      obs_mask.append(1.0)
      policy_mask.append(0.0 if (end is not None and k == end) else 1.0)
    else:
      value.append(0.0)
      value_mask.append(1.0 if absorbing(k) else 0.0)
      obs_mask.append(0.0)
      policy_mask.append(0.0)

  def reward_of(j):  # (reward r_j, whether it exists)
    if in_episode(j) and not (end is not None and j == end):
      return reward[j], True
    if absorbing(j) or (term_end and j == end):
      return 0.0, True  # terminal row and beyond: absorbing, reward 0
    return 0.0, False

  prefix, prefix_mask = [], []
  for k in range(1, K + 1):
    s = ((k - 1) // H) * H
    prefix.append(sum(reward_of(j)[0] for j in range(s, k)))
    prefix_mask.append(1.0 if reward_of(k - 1)[1] else 0.0)
  return dict(
    value=value,
    value_mask=value_mask,
    prefix=prefix,
    prefix_mask=prefix_mask,
    policy_mask=policy_mask,
    obs_mask=obs_mask,
    td_steps=n_eff,
    # the terminal head's target at unroll step k: row k is the root episode's terminal end
    terminal=[1.0 if term_end and k == end else 0.0 for k in range(1, K + 1)],
  )


# ------------------------------------------------------------------ window construction


def make_window(reward, last, terminal, num_actions=2):
  """Rows [B, W] with the given reward/last/terminal (other fields zero; obs is [B, W, 1])."""
  reward = np.asarray(reward, np.float32)
  b, w = reward.shape
  return Rows(
    obs=jnp.zeros((b, w, 1), jnp.float32),
    action=jnp.zeros((b, w), jnp.int32),
    reward=jnp.asarray(reward),
    policy=jnp.zeros((b, w, num_actions), jnp.float32),
    value=jnp.zeros((b, w), jnp.float32),
    last=jnp.asarray(np.asarray(last, bool)),
    terminal=jnp.asarray(np.asarray(terminal, bool)),
    step=jnp.zeros((b, w), jnp.int32),
  )


@functools.cache
def jitted(K, n, td_age_steps, discount, H):
  return jax.jit(
    functools.partial(
      targets_lib.compute, unroll_steps=K, td_steps=n, td_age_steps=td_age_steps, discount=discount, horizon=H
    )
  )


PAD_B = 48  # every call is padded to this batch size so each static config compiles once (keeps the file fast)


def fast(reward, boot, last, terminal, known, age, **cfg):
  """The jitted `compute` on a batch of windows (padded with copies of the first window, then cut)."""
  reward, boot, last, terminal, known, age = (np.asarray(x) for x in (reward, boot, last, terminal, known, age))
  b = len(age)
  assert b <= PAD_B
  pad = lambda x: np.concatenate([x, np.repeat(x[:1], PAD_B - b, axis=0)])  # noqa: E731
  reward, boot, last, terminal, known, age = map(pad, (reward, boot, last, terminal, known, age))
  window = make_window(reward, last, terminal)
  out = jitted(cfg["K"], cfg["n"], cfg["td_age_steps"], cfg["discount"], cfg["H"])(
    window, jnp.asarray(known.astype(bool)), jnp.asarray(boot.astype(np.float32)), jnp.asarray(age.astype(np.int32))
  )
  return jax.tree.map(lambda x: np.asarray(x)[:b], out)


def scenarios(W, K):
  """Hand-made episode layouts for a window of W rows: (name, {row: terminal} of `last` rows, newest row).

  Stale junk (last/terminal set) is written into rows beyond the newest one, as a ring would hold."""
  out = [("no_end", {}, W - 1)]
  for r in sorted({1, 2, 3, K - 1, K, K + 1, W - 2, W - 1}):
    if 1 <= r <= W - 1:
      out.append((f"terminal@{r}", {r: True}, W - 1))
      out.append((f"truncated@{r}", {r: False}, W - 1))
  for newest in sorted({0, 1, 2, K - 1, K, K + 1, W - 2}):
    if 0 <= newest < W - 1:
      out.append((f"newest={newest}", {}, newest))
  # an end followed by unknown rows
  out.append(("terminal@2,newest=4", {2: True}, 4))
  out.append(("truncated@2,newest=4", {2: False}, 4))
  out.append(("terminal@newest=3", {3: True}, 3))
  out.append(("truncated@newest=3", {3: False}, 3))
  # a later episode ends inside the window after the root's episode ends
  out.append(("terminal@1,truncated@3", {1: True, 3: False}, W - 1))
  out.append(("terminal@2,terminal@4", {2: True, 4: True}, W - 1))
  out.append(("truncated@1,truncated@3", {1: False, 3: False}, W - 1))
  out.append(("truncated@2,truncated@4,newest=5", {2: False, 4: False}, 5))
  return [(name, ends, newest) for name, ends, newest in out if newest < W and all(r < W for r in ends)]


def build_batch(K, n, ages, seed, layouts):
  W = K + n + 1
  rng = np.random.default_rng(seed)
  b = len(layouts)
  # positive values, so float32 vs float64 differences stay well within rtol 1e-6
  reward = rng.uniform(0.5, 2.0, (b, W)).round(3)
  boot = rng.uniform(1.0, 5.0, (b, W)).round(3)
  last = np.zeros((b, W), bool)
  terminal = np.zeros((b, W), bool)
  known = np.zeros((b, W), bool)
  for i, (_, ends, newest) in enumerate(layouts):
    known[i, : newest + 1] = True
    for r, term in ends.items():
      last[i, r] = True
      terminal[i, r] = term
    # stale ring contents beyond the newest row: must be ignored
    last[i, newest + 1 :: 2] = True
    terminal[i, newest + 1 :: 2] = True
  age = np.array([ages[i % len(ages)] for i in range(b)], np.int32)
  return reward, boot, last, terminal, known, age


def compare(cfg, ages, seed, layouts):
  reward, boot, last, terminal, known, age = build_batch(cfg["K"], cfg["n"], ages, seed, layouts)
  got = fast(reward, boot, last, terminal, known, age, **cfg)
  for i, (name, _, _) in enumerate(layouts):
    want = ref_one(
      list(map(float, reward[i])),
      list(map(float, boot[i])),
      list(last[i]),
      list(terminal[i]),
      list(known[i]),
      int(age[i]),
      **cfg,
    )
    for field in ("value", "value_mask", "prefix", "prefix_mask", "policy_mask", "obs_mask", "terminal"):
      np.testing.assert_allclose(
        getattr(got, field)[i],
        np.asarray(want[field], np.float32),
        rtol=1e-6,
        err_msg=f"{field} for {name} (age {age[i]}, {cfg})",
      )
    assert int(got.td_steps[i]) == want["td_steps"], (name, cfg)


CONFIGS = [
  dict(K=5, n=3, td_age_steps=10, discount=0.9, H=5),  # H = K: no reset inside the unroll
  dict(K=5, n=3, td_age_steps=0, discount=1.0, H=2),  # H < K: resets at 2 and 4; age correction off
  dict(K=3, n=1, td_age_steps=0, discount=1.0, H=2),  # also used by the hand-computed prefix cases
  dict(K=1, n=2, td_age_steps=5, discount=0.5, H=1),  # also used by the hand-computed cases
]
# ages that keep n (0, just below one step), shrink it by one / several, and clip it at 1
AGES = [0, 9, 10, 25, 1000, 3, 14, 7, 4, 5]


@pytest.mark.parametrize("cfg", CONFIGS, ids=lambda c: "K{K}-n{n}-age{td_age_steps}-d{discount}-H{H}".format(**c))
def test_compute_matches_reference(cfg):
  W = cfg["K"] + cfg["n"] + 1
  compare(cfg, AGES, seed=cfg["K"] * 100 + cfg["n"] * 10 + cfg["H"], layouts=scenarios(W, cfg["K"]))


def test_truncation_then_later_terminal_stays_masked():
  cfg = CONFIGS[0]
  compare(
    cfg,
    [0],
    seed=7,
    layouts=[("truncated@1,terminal@3", {1: False, 3: True}, 8), ("truncated@2,terminal@4", {2: False, 4: True}, 8)],
  )


def test_td_horizon():
  # sanity of the test's own n_eff formula (clip(n - age // td_age_steps, 1, n); 0 turns it off)
  got = targets_lib.td_horizon(jnp.array([0, 9, 10, 25, 1000]), td_steps=3, td_age_steps=10)
  np.testing.assert_array_equal(np.asarray(got), [3, 3, 2, 1, 1])
  np.testing.assert_array_equal(
    np.asarray(targets_lib.td_horizon(jnp.array([0, 10**6]), td_steps=3, td_age_steps=0)), [3, 3]
  )


# ------------------------------------------------------------------ hand-computed exact cases


def one(reward, boot, last, terminal, known, age, **cfg):
  out = fast([reward], [boot], [last], [terminal], [known], [age], **cfg)
  return jax.tree.map(lambda x: x[0], out)


HAND = CONFIGS[3]  # K=1, n=2, td_age_steps=5, discount 0.5, H=1 (age < 5 keeps n_eff = 2)
R4, V4 = [1.0, 2.0, 3.0, 4.0], [10.0, 20.0, 30.0, 40.0]
F4, T4 = [False] * 4, [True] * 4


def test_hand_no_end():
  t = one(R4, V4, F4, F4, T4, 4, **HAND)
  # z0 = 1 + .5*2 + .25*V2(30) = 9.5 ; z1 = 2 + .5*3 + .25*V3(40) = 13.5 ; prefix1 = r0 = 1
  np.testing.assert_array_equal(t.value, [9.5, 13.5])
  np.testing.assert_array_equal(t.value_mask, [1, 1])
  np.testing.assert_array_equal(t.prefix, [1.0])
  np.testing.assert_array_equal(t.prefix_mask, [1])
  np.testing.assert_array_equal(t.policy_mask, [1, 1])
  np.testing.assert_array_equal(t.obs_mask, [1, 1])
  assert int(t.td_steps) == 2


def test_hand_terminal_and_truncation():
  # terminal at row 1: z0 = r0 = 1 (no bootstrap), z1 = 0 (absorbing, trained); row 1 has no policy
  t = one(R4, V4, [False, True, False, False], [False, True, False, False], T4, 0, **HAND)
  np.testing.assert_array_equal(t.value, [1.0, 0.0])
  np.testing.assert_array_equal(t.value_mask, [1, 1])
  np.testing.assert_array_equal(t.policy_mask, [1, 0])
  np.testing.assert_array_equal(t.obs_mask, [1, 1])
  np.testing.assert_array_equal(t.prefix, [1.0])
  np.testing.assert_array_equal(t.prefix_mask, [1])
  np.testing.assert_array_equal(t.terminal, [1.0])  # the step into row 1 ended the episode
  # terminal at row 2: z0 = 1 + .5*2 = 2 ; z1 = 2 (h=2 is terminal -> no bootstrap)
  t = one(R4, V4, [False, False, True, False], [False, False, True, False], T4, 0, **HAND)
  np.testing.assert_array_equal(t.value, [2.0, 2.0])
  # truncated at row 1: z0 = 1 + .5*V1(20) = 11 ; z1 = V1 = 20 (bootstraps from the final observation)
  t = one(R4, V4, [False, True, False, False], F4, T4, 0, **HAND)
  np.testing.assert_array_equal(t.value, [11.0, 20.0])
  np.testing.assert_array_equal(t.terminal, [0.0])  # a time limit is not a termination
  np.testing.assert_array_equal(t.value_mask, [1, 1])
  np.testing.assert_array_equal(t.policy_mask, [1, 0])
  np.testing.assert_array_equal(t.prefix_mask, [1])


def test_hand_age_and_newest():
  # td_age_steps=5, age 7 -> n_eff = 2 - 1 = 1: z0 = 1 + .5*20 = 11 ; z1 = 2 + .5*30 = 17
  t = one(R4, V4, F4, F4, T4, 7, **HAND)
  np.testing.assert_array_equal(t.value, [11.0, 17.0])
  assert int(t.td_steps) == 1
  # only rows 0, 1 written: z0 = 1 + .5*V1 = 11 ; z1 = V1 = 20 ; row 2/3 junk ignored
  t = one(R4, V4, [False, False, True, True], [False, False, True, True], [True, True, False, False], 0, **HAND)
  np.testing.assert_array_equal(t.value, [11.0, 20.0])
  np.testing.assert_array_equal(t.value_mask, [1, 1])
  # only row 0 written: z0 = V0 = 10 ; row 1 unknown -> masked
  t = one(R4, V4, F4, F4, [True, False, False, False], 0, **HAND)
  np.testing.assert_array_equal(t.value, [10.0, 0.0])
  np.testing.assert_array_equal(t.value_mask, [1, 0])
  np.testing.assert_array_equal(t.prefix_mask, [1])
  np.testing.assert_array_equal(t.policy_mask, [1, 0])
  np.testing.assert_array_equal(t.obs_mask, [1, 0])


def test_hand_prefix_resets():
  # K=3, n=1, H=2, discount 1: prefix1 = r0 = 1, prefix2 = r0+r1 = 3, prefix3 = r2 = 4 (reset at 2)
  # z_k = r_k + V_{k+1}: 1+2, 2+3, 4+4, 8+5
  cfg = CONFIGS[2]
  t = one([1.0, 2.0, 4.0, 8.0, 16.0], [1.0, 2.0, 3.0, 4.0, 5.0], [False] * 5, [False] * 5, [True] * 5, 0, **cfg)
  np.testing.assert_array_equal(t.prefix, [1.0, 3.0, 4.0])
  np.testing.assert_array_equal(t.value, [3.0, 5.0, 8.0, 13.0])
  # terminal at row 2: prefix3 = r2 -> 0 (absorbing) but still trained; z2 = 0, z3 = 0 both trained
  t = one(
    [1.0, 2.0, 4.0, 8.0, 16.0],
    [1.0, 2.0, 3.0, 4.0, 5.0],
    [False, False, True, False, False],
    [False, False, True, False, False],
    [True] * 5,
    0,
    **cfg,
  )
  np.testing.assert_array_equal(t.prefix, [1.0, 3.0, 0.0])
  np.testing.assert_array_equal(t.prefix_mask, [1, 1, 1])
  np.testing.assert_array_equal(t.value, [3.0, 2.0, 0.0, 0.0])
  np.testing.assert_array_equal(t.value_mask, [1, 1, 1, 1])
  np.testing.assert_array_equal(t.obs_mask, [1, 1, 1, 0])
  # truncated at row 2: z1 = r1 + V2 = 5, z2 = V2 = 3; prefix3 and z3 have no target
  t = one(
    [1.0, 2.0, 4.0, 8.0, 16.0],
    [1.0, 2.0, 3.0, 4.0, 5.0],
    [False, False, True, False, False],
    [False] * 5,
    [True] * 5,
    0,
    **cfg,
  )
  np.testing.assert_array_equal(t.value, [3.0, 5.0, 3.0, 0.0])
  np.testing.assert_array_equal(t.value_mask, [1, 1, 1, 0])
  np.testing.assert_array_equal(t.prefix_mask, [1, 1, 0])
  np.testing.assert_array_equal(t.prefix[:2], [1.0, 3.0])
