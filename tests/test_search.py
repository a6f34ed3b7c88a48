"""Search on a tiny hand-made model: exact value-prefix decoding and the known best action."""

import dataclasses
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dreamer import config as config_lib
from dreamer import search
from dreamer.networks import LSTMState
from dreamer.support import scalar_to_probs

# A deterministic tree MDP with 2 actions, discount 1, hand-written as a model. The latent is a one-hot of the
# state, and the LSTM's c[:, 0] carries the cumulative reward so that the prefix head outputs value prefixes
# exactly as a trained EfficientZero model would: the search must difference them back into rewards and
# respect the periodic reset.
#   state 0 (root): action 0 -> state 1 with reward 1; action 1 -> state 2 with reward 0
#   state 1: any action -> state 3 (reward 0);   state 2: any action -> state 3 with reward 3
#   state 3: absorbing, reward 0.
# Best first action: 1 (return 3 against 1).
NEXT = np.array([[1, 2], [3, 3], [3, 3], [3, 3]])
REWARD = np.array([[1.0, 0.0], [0.0, 0.0], [3.0, 3.0], [0.0, 0.0]])
SUPPORT = 5


def _logits_of(x):
  return jnp.log(scalar_to_probs(x, SUPPORT) + 1e-30)


class TreeModel(NamedTuple):
  lstm_dim: int = 2
  scale: float = 1.0  # multiplies every reward
  prior: tuple[float, float] = (0.0, 0.0)  # the prior logits at every state
  ends: tuple[float, ...] = ()  # the terminal head's logit of each state; () means no terminal head

  @property
  def has_terminal(self):
    return bool(self.ends)

  def terminal(self, params, latent):
    return jnp.asarray(self.ends)[jnp.argmax(latent, -1)]

  def represent(self, params, obs):
    return jax.nn.one_hot(obs[:, 0].astype(jnp.int32), 4)

  def dynamics(self, params, latent, action, lstm):
    state = jnp.argmax(latent, -1)
    reward = self.scale * jnp.asarray(REWARD)[state, action]
    prefix = lstm.c[:, 0] + reward
    c = lstm.c.at[:, 0].set(prefix)
    return jax.nn.one_hot(jnp.asarray(NEXT)[state, action], 4), LSTMState(c, lstm.h), _logits_of(prefix)

  def predict(self, params, latent):
    b = latent.shape[0]
    return jnp.tile(jnp.asarray([self.prior]), (b, 1)), _logits_of(jnp.zeros((b,)))

  def search_predict(self, params, latent):
    return self.predict(params, latent)


def _config(**kw):
  base = dict(discount=1.0, value_support=SUPPORT, reward_support=SUPPORT, max_considered_actions=2)
  return config_lib.Config(**{**base, **kw})


@pytest.mark.parametrize("horizon", [1, 2, 3, 5])
def test_recurrent_fn_decodes_rewards_with_resets(horizon):
  model = TreeModel()
  fn = jax.jit(search.make_recurrent_fn(model, discount=1.0, horizon=horizon))
  root = search.make_root(model, None, jnp.zeros((1, 1)))
  emb = root.embedding
  # Path: action 1 (r=0) -> state 2, action 0 (r=3) -> state 3, then three absorbing steps (r=0).
  rewards = []
  for a in [1, 0, 0, 1, 0]:
    out, emb = fn(None, jax.random.PRNGKey(0), jnp.asarray([a]), emb)
    rewards.append(float(out.reward[0]))
  np.testing.assert_allclose(rewards, [0.0, 3.0, 0.0, 0.0, 0.0], atol=1e-4)
  assert int(emb.depth[0]) == 5


def test_recurrent_fn_discounts_by_the_terminal_heads_probability():
  # Every state and action: the step's discount is discount * (1 - sigmoid(terminal logit of the next state))
  # with a terminal head, exactly `discount` without one; rewards, priors and values do not change.
  ends = (-3.0, 0.0, 2.0, 30.0)
  plain, ending = TreeModel(), TreeModel(ends=ends)
  for state in range(4):
    for a in range(2):
      outs = []
      for model in (plain, ending):
        emb = search.make_root(model, None, jnp.full((1, 1), state)).embedding
        out, _ = search.make_recurrent_fn(model, discount=0.9, horizon=2)(None, None, jnp.asarray([a]), emb)
        outs.append(out)
      nxt = NEXT[state][a]
      assert float(outs[0].discount[0]) == pytest.approx(0.9, abs=1e-7)
      assert float(outs[1].discount[0]) == pytest.approx(0.9 / (1.0 + np.exp(ends[nxt])), abs=1e-6)
      for field in ("reward", "prior_logits", "value"):
        np.testing.assert_array_equal(getattr(outs[0], field), getattr(outs[1], field))


def test_recurrent_fn_restarts_the_prefix_every_horizon_steps():
  # From a node at depth 2 (horizon 2) the next step is decoded as from a fresh root at the same latent: the
  # LSTM and the prefix restart there, whatever the path above it summed.
  model = TreeModel()
  fn = search.make_recurrent_fn(model, discount=1.0, horizon=2)
  emb = search.make_root(model, None, jnp.zeros((1, 1))).embedding
  for a in (1, 0):  # rewards 0 then 3: the prefix at depth 2 is 3
    _, emb = fn(None, None, jnp.asarray([a]), emb)
  assert int(emb.depth[0]) == 2 and float(emb.prefix[0]) == pytest.approx(3.0, abs=1e-4)
  fresh = search.root_from_latent(model, None, emb.latent).embedding
  for a in (0, 1):
    got, _ = fn(None, None, jnp.asarray([a]), emb)
    want, _ = fn(None, None, jnp.asarray([a]), fresh)
    assert float(got.reward[0]) == pytest.approx(float(want.reward[0]), abs=1e-6)


@pytest.mark.parametrize("kind", ["gumbel", "puct"])
def test_search_picks_the_known_best_action(kind):
  model = TreeModel()
  config = _config(search=kind, num_simulations=32, value_prefix_horizon=2)
  obs = jnp.zeros((4, 1))
  root = search.make_root(model, None, obs)
  out = jax.jit(
    lambda k: search.run_search(model, None, k, root, temperature=0.0, noise=False, **search.settings(config))
  )(jax.random.PRNGKey(3))
  np.testing.assert_array_equal(out.action, [1, 1, 1, 1])
  assert np.all(np.asarray(out.policy)[:, 1] > 0.5)
  # The root value is a visit-weighted mix of returns 3 and 1 and the root's own estimate 0.
  assert np.all((np.asarray(out.value) > 1.0) & (np.asarray(out.value) <= 3.0))


def _tree_minmax_reference(tree, node, *, floor, value_scale=0.1, maxvisit_init=50.0):
  """qtransform_tree_minmax written out in numpy for one node of one unbatched tree."""
  t = jax.tree.map(np.asarray, tree)
  children = t.children_index[node]
  visits = t.children_visits[node].astype(np.float64)
  q = t.children_rewards[node] + t.children_discounts[node] * t.children_values[node]
  prior = np.exp(t.children_prior_logits[node] - t.children_prior_logits[node].max())
  prior /= prior.sum()
  seen = visits > 0
  mixed = (t.raw_values[node] + visits.sum() * np.sum(prior[seen] * q[seen]) / prior[seen].sum()) / (visits.sum() + 1)
  completed = np.where(seen, q, mixed)
  all_q = (t.children_rewards + t.children_discounts * t.children_values)[t.children_visits > 0]
  low, high = min(all_q.min(), completed.min()), max(all_q.max(), completed.max())
  assert children.shape == visits.shape
  return (maxvisit_init + visits.max()) * value_scale * (completed - low) / max(high - low, floor)


def _shrunk_tree(scale):
  """One unbatched tree (as mctx calls the transform) of an 8-simulation Gumbel search of TreeModel, its
  rewards and values multiplied by `scale`."""
  import mctx

  model = TreeModel()
  root = search.make_root(model, None, jnp.zeros((1, 1)))
  recurrent = search.make_recurrent_fn(model, discount=1.0, horizon=2)
  out = mctx.gumbel_muzero_policy(None, jax.random.PRNGKey(0), root, recurrent, 8, max_num_considered_actions=2)
  tree = jax.tree.map(lambda x: x[0], out.search_tree)
  return dataclasses.replace(
    tree,
    children_rewards=tree.children_rewards * scale,
    children_values=tree.children_values * scale,
    raw_values=tree.raw_values * scale,
  )


@pytest.mark.parametrize("floor", [1e-8, 0.01])
def test_tree_minmax_against_a_numpy_reference_and_its_floor(floor):
  tree, small = _shrunk_tree(1.0), _shrunk_tree(1e-4)  # shrunk: every Q within 3e-4, noise-sized differences
  nodes = [n for n in range(int(tree.num_simulations) + 1) if (np.asarray(tree.children_visits[n]) > 0).any()]
  assert len(nodes) >= 3
  for node in nodes:
    got = np.asarray(search.qtransform_tree_minmax(tree, jnp.asarray(node), epsilon=floor))
    np.testing.assert_allclose(got, _tree_minmax_reference(tree, node, floor=floor), rtol=1e-5, atol=1e-6)
    got_small = np.asarray(search.qtransform_tree_minmax(small, jnp.asarray(node), epsilon=floor))
    np.testing.assert_allclose(got_small, _tree_minmax_reference(small, node, floor=floor), rtol=1e-4, atol=1e-6)
    if floor == 0.01:  # a range below the floor is not stretched: the tree's Q range 3 x 1e-4, over the floor
      np.testing.assert_allclose(got_small, got * (3 * 1e-4) / 0.01, rtol=1e-3, atol=1e-6)
    else:  # min-max normalisation is blind to scale: noise-sized differences become full preferences
      np.testing.assert_allclose(got_small, got, rtol=1e-3, atol=1e-5)


@pytest.mark.parametrize("kind", ["gumbel", "puct"])
def test_q_range_floor_binds_only_on_noise_sized_q_ranges(kind):
  # The same search on TreeModel's rewards and on them shrunk to 1e-4 (noise-sized Q differences). Min-max
  # normalisation is blind to scale: with mctx's 1e-8 floor both searches give the same policy, far from the
  # prior. With EfficientZero's 0.01 the floor does not bind at full scale (the same policy again) and keeps
  # the shrunk differences small, so the search policy stays near the prior (73% on action 0).
  def policy(scale, floor):
    model = TreeModel(scale=scale, prior=(1.0, 0.0))  # the prior prefers the worse first action 0
    root = search.make_root(model, None, jnp.zeros((2, 1)))
    config = _config(
      search=kind, num_simulations=32, value_prefix_horizon=2, q_range_floor=floor, q_normalization="tree"
    )
    out = search.run_search(
      model, None, jax.random.PRNGKey(3), root, temperature=0.0, noise=False, **search.settings(config)
    )
    return np.asarray(out.policy)

  prior = np.asarray(jax.nn.softmax(jnp.asarray([1.0, 0.0])))
  full = policy(1.0, 1e-8)
  assert np.all(np.abs(full - prior) > 0.2)
  np.testing.assert_allclose(policy(1.0, 0.01), full, atol=1e-6)
  np.testing.assert_allclose(policy(1e-4, 1e-8), full, atol=1e-3)
  np.testing.assert_allclose(policy(1e-4, 0.01), np.broadcast_to(prior, full.shape), atol=0.05)


class TableModel(NamedTuple):
  """A random tabular MDP of S states and A actions written as a model (TreeModel's prefix mechanism):
  next_state i32[S, A], reward f32[S, A], prior f32[S, A] logits."""

  next_state: np.ndarray
  reward: np.ndarray
  prior: np.ndarray
  lstm_dim: int = 2
  has_terminal: bool = False

  @classmethod
  def random(cls, seed: int, states: int = 5, actions: int = 6, scale: float = 1.0) -> "TableModel":
    rng = np.random.default_rng(seed)
    reward = scale * rng.uniform(0, 1, (states, actions)).round(2)
    return cls(rng.integers(0, states, (states, actions)), reward, rng.normal(0, 1, (states, actions)))

  def represent(self, params, obs):
    return jax.nn.one_hot(obs[:, 0].astype(jnp.int32), len(self.reward))

  def dynamics(self, params, latent, action, lstm):
    state = jnp.argmax(latent, -1)
    prefix = lstm.c[:, 0] + jnp.asarray(self.reward)[state, action]
    nxt = jax.nn.one_hot(jnp.asarray(self.next_state)[state, action], len(self.reward))
    return nxt, LSTMState(lstm.c.at[:, 0].set(prefix), lstm.h), _logits_of(prefix)

  def predict(self, params, latent):
    return jnp.asarray(self.prior, jnp.float32)[jnp.argmax(latent, -1)], _logits_of(jnp.zeros(latent.shape[:1]))

  def search_predict(self, params, latent):
    return self.predict(params, latent)


@pytest.mark.parametrize(
  ("temperature", "simulations", "considered"), [(1.0, 16, 6), (0.5, 16, 6), (1.0, 8, 3), (1.0, 4, 6)]
)
def test_held_noise_searches_as_mctx_drawing_that_noise_itself(temperature, simulations, considered):
  # mctx's Gumbel search draws its root noise from its key (split once: the second half) and scales it by
  # the temperature. Handing that same noise in as held noise must give the same action, policy target and
  # value, whether every root action is visited or not (3 considered of 6, or 4 simulations: some never are,
  # and their completed Q comes from the prior-weighted mixed value); so must a zero noise against a search at
  # temperature 0.
  model = TableModel.random(0)
  config = _config(
    search="gumbel", num_simulations=simulations, max_considered_actions=considered, q_normalization="tree"
  )
  root = search.make_root(model, None, jnp.arange(5)[:, None] % 5)
  run = jax.jit(
    lambda k, t, held: search.run_search(
      model, None, k, root, temperature=t, noise=t > 0, held=held, **search.settings(config)
    )
  )
  actions = set()
  for seed in range(8):
    key = jax.random.PRNGKey(seed)
    drawn = jax.random.gumbel(jax.random.split(key)[1], (5, 6))  # what mctx draws from `key`
    want, got = run(key, temperature, None), run(key, temperature, drawn)
    np.testing.assert_array_equal(got.action, want.action)
    np.testing.assert_array_equal(got.policy, want.policy)  # the same steps as mctx's, so the same floats
    np.testing.assert_array_equal(got.value, want.value)
    actions.update(np.asarray(got.action).tolist())
  assert len(actions) >= 3  # the noise did move the actions
  zero_noise, greedy = run(key, temperature, jnp.zeros((5, 6))), run(key, 0.0, None)
  np.testing.assert_array_equal(zero_noise.action, greedy.action)
  np.testing.assert_allclose(zero_noise.policy, greedy.policy, atol=1e-6)


def test_held_noise_over_a_flat_model_holds_its_argmax_and_leaves_the_prior_as_target():
  # No rewards and a uniform prior: Q ranks nothing, so every search with the same held noise takes the
  # noise's own argmax whatever the state (a fresh draw each step would wander), and the target is the prior.
  flat = TableModel.random(1)._replace(reward=np.zeros((5, 6)), prior=np.zeros((5, 6)))
  config = _config(search="gumbel", num_simulations=16, max_considered_actions=6, q_normalization="tree")
  noise = jax.random.gumbel(jax.random.PRNGKey(7), (5, 6))
  for seed in range(4):
    root = search.make_root(flat, None, (jnp.arange(5)[:, None] + seed) % 5)
    out = search.run_search(
      flat, None, jax.random.PRNGKey(seed), root, temperature=1.0, noise=True, held=noise, **search.settings(config)
    )
    np.testing.assert_array_equal(out.action, jnp.argmax(noise, -1))
    np.testing.assert_allclose(out.policy, np.full((5, 6), 1 / 6), atol=1e-6)


@pytest.mark.parametrize(
  ("kind", "simulations", "considered"), [("gumbel", 16, 6), ("gumbel", 4, 2), ("puct", 64, 6), ("puct", 1, 6)]
)
def test_q_spread_is_the_visited_root_actions_q_range(kind, simulations, considered):
  # Every action of root states 0-4 leads to an absorbing state 5 that pays nothing and whose value is 0, so
  # a root action's Q is its reward exactly: q_spread must be max minus min of reward[s] over the actions
  # the search visited. All six (Gumbel's 16 simulations; pUCT's 64 over a uniform prior), the prior's top
  # two (Gumbel at temperature 0, 2 considered: its sequential halving visits exactly those), or one (pUCT's
  # single simulation: spread 0).
  table = TableModel.random(2, states=6)
  reward = table.reward.copy()
  reward[5] = 0.0
  prior = table.prior if kind == "gumbel" else np.zeros((6, 6))
  model = table._replace(next_state=np.full((6, 6), 5), reward=reward, prior=prior)
  config = _config(search=kind, num_simulations=max(simulations, 2), max_considered_actions=considered)
  root = search.make_root(model, None, jnp.arange(5)[:, None])

  def run(**kw):
    settings = search.settings(config) | {"num_simulations": simulations}
    return search.run_search(model, None, jax.random.PRNGKey(0), root, **settings, **kw)

  rows = reward[:5]
  if simulations == 1:
    want = np.zeros(5)
  elif considered == 2:
    picked = np.take_along_axis(rows, np.argsort(-prior[:5], axis=1)[:, :2], axis=1)
    want = np.abs(picked[:, 0] - picked[:, 1])
  else:
    want = rows.max(1) - rows.min(1)
  assert want.min() > 0 or simulations == 1  # the case tests something
  np.testing.assert_allclose(run(temperature=0.0, noise=False).q_spread, want, atol=1e-5)
  if kind == "gumbel":  # held noise of 0 at temperature 1: the same visits
    held = run(temperature=1.0, noise=True, held=jnp.zeros((5, 6)))
    np.testing.assert_allclose(held.q_spread, want, atol=1e-5)


def test_q_spread_counts_the_childrens_discounted_values_and_the_terminal_head():
  # Even actions lead to an absorbing state worth 0.3, odd ones to one worth -0.7, whose terminal heads give
  # different probabilities of ending: a root action's Q is r + discount * (1 - p_end(next)) * v(next), and
  # with 2 simulations over the prior's 2 considered actions each is visited once. A spread of the rewards
  # alone (or without the discount or the head) differs from it on these states.
  table = TableModel.random(2, states=7)
  nxt = np.tile(np.where(np.arange(6) % 2 == 0, 5, 6), (7, 1))
  nxt[5], nxt[6] = 5, 6
  reward = table.reward.copy()
  reward[5:] = 0.0
  values, ends = np.array([0, 0, 0, 0, 0, 0.3, -0.7]), np.array([0, 0, 0, 0, 0, 0.5, -1.0])
  tabular = table._replace(next_state=nxt, reward=reward)

  class Valued(NamedTuple):
    lstm_dim: int = 2
    has_terminal: bool = True

    def represent(self, params, obs):
      return tabular.represent(params, obs)

    def dynamics(self, params, latent, action, lstm):
      return tabular.dynamics(params, latent, action, lstm)

    def predict(self, params, latent):
      state = jnp.argmax(latent, -1)
      return jnp.asarray(table.prior, jnp.float32)[state], _logits_of(jnp.asarray(values, jnp.float32)[state])

    def search_predict(self, params, latent):
      return self.predict(params, latent)

    def terminal(self, params, latent):
      return jnp.asarray(ends, jnp.float32)[jnp.argmax(latent, -1)]

  config = _config(search="gumbel", num_simulations=2, max_considered_actions=2, discount=0.9)
  model = Valued()
  root = search.make_root(model, None, jnp.arange(5)[:, None])
  out = search.run_search(
    model, None, jax.random.PRNGKey(0), root, temperature=0.0, noise=False, **search.settings(config)
  )
  top2 = np.argsort(-table.prior[:5], axis=1)[:, :2]
  nxt_top = nxt[np.arange(5)[:, None], top2]
  q = reward[np.arange(5)[:, None], top2] + 0.9 * values[nxt_top] / (1 + np.exp(ends[nxt_top]))  # 1 - sigmoid
  want = np.abs(q[:, 0] - q[:, 1])
  rewards_only = np.abs(np.diff(reward[np.arange(5)[:, None], top2], axis=1))[:, 0]
  assert np.abs(want - rewards_only).max() > 0.1  # the case tells them apart
  np.testing.assert_allclose(out.q_spread, want, atol=1e-4)
