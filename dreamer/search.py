"""Tree search in the learned model through mctx: Gumbel MuZero (default) and MuZero pUCT.

The search embedding carries the latent, the value-prefix LSTM state, the value prefix decoded so far
and the depth from the root. A node's reward is the increase of the value prefix over its parent's; every
`value_prefix_horizon` model steps the LSTM state and the prefix restart, by the same rule as in training
(networks.dynamics_step).
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple

import chex
import jax
import jax.numpy as jnp
import mctx

from dreamer.config import Config
from dreamer.networks import LSTMState, Model, Params, dynamics_step, zero_lstm_state
from dreamer.support import logits_to_scalar


class Embedding(NamedTuple):
  """State of one search node: latent f32[B, D], lstm (f32[B, L] x2), prefix f32[B], depth i32[B]."""

  latent: jax.Array
  lstm: LSTMState
  prefix: jax.Array
  depth: jax.Array


class SearchOutput(NamedTuple):
  """action i32[B]: action to take; policy f32[B, A]: search policy target; value f32[B]: root value;
  q_spread f32[B]: how far the search told the root's actions apart (`output`; 0 without a search)."""

  action: jax.Array
  policy: jax.Array
  value: jax.Array
  q_spread: jax.Array


def output(action: jax.Array, policy: jax.Array, tree: mctx.Tree) -> SearchOutput:
  """A search's output from its tree: the root's value, and q_spread, max minus min of the root's Q values
  (reward plus discounted value, one step deep) over its visited actions, 0 where fewer than two were
  visited (`config.noise_hold_spread` holds noise while it is small)."""
  summary = tree.summary()
  visited = summary.visit_counts > 0
  high = jnp.max(jnp.where(visited, summary.qvalues, -jnp.inf), axis=-1)
  low = jnp.min(jnp.where(visited, summary.qvalues, jnp.inf), axis=-1)
  spread = jnp.where(jnp.sum(visited, axis=-1) >= 2, high - low, 0.0)
  return SearchOutput(action.astype(jnp.int32), policy, summary.value, spread)


def make_root(model: Model, params: Params, obs: jax.Array) -> mctx.RootFnOutput:
  """obs [B, *obs_shape] -> root with prior logits f32[B, A], value f32[B] and a depth-0 embedding."""
  return root_from_latent(model, params, model.represent(params, obs))


def root_from_latent(model: Model, params: Params, latent: jax.Array) -> mctx.RootFnOutput:
  """A root at a latent state f32[B, ...] (real or imagined), with a fresh value-prefix LSTM."""
  logits, value_logits = model.search_predict(params, latent)
  batch = latent.shape[0]
  embedding = Embedding(
    latent, zero_lstm_state(batch, model.lstm_dim), jnp.zeros((batch,)), jnp.zeros((batch,), jnp.int32)
  )
  return mctx.RootFnOutput(prior_logits=logits, value=logits_to_scalar(value_logits), embedding=embedding)


def make_recurrent_fn(model: Model, *, discount: float, horizon: int) -> mctx.RecurrentFn:
  """The mctx recurrent function: one model step (networks.dynamics_step, whose LSTM restarts on the step out
  of every depth that is a multiple of `horizon`) with value-prefix decoding: a node's reward is its prefix
  minus its parent's, and the parent's counts as 0 where the prefix restarted. With a terminal head
  (`Model.has_terminal`) the step's discount is `discount` * (1 - p(terminal))."""

  def recurrent_fn(
    params: Params, rng_key: chex.PRNGKey, action: jax.Array, embedding: Embedding
  ) -> tuple[mctx.RecurrentFnOutput, Embedding]:
    del rng_key  # the model is deterministic
    call = lambda method, *args: getattr(model, method)(params, *args)  # noqa: E731
    latent, lstm, prefix_logits = dynamics_step(
      call, embedding.latent, action, embedding.lstm, embedding.depth, horizon=horizon
    )
    prefix = logits_to_scalar(prefix_logits)
    restarted = embedding.depth % horizon == 0
    reward = prefix - jnp.where(restarted, 0.0, embedding.prefix)
    logits, value_logits = model.search_predict(params, latent)
    child = Embedding(latent, lstm, prefix, embedding.depth + 1)
    gamma = jnp.full_like(reward, discount)
    if model.has_terminal:  # a step predicted to end the episode keeps its reward and discounts the rest away
      gamma = gamma * (1.0 - jax.nn.sigmoid(model.terminal(params, latent)))
    value = logits_to_scalar(value_logits)
    out = mctx.RecurrentFnOutput(reward=reward, discount=gamma, prior_logits=logits, value=value)
    return out, child

  return recurrent_fn


def qtransform_tree_minmax(
  tree: mctx.Tree,
  node_index: chex.Numeric,
  *,
  value_scale: float = 0.1,
  maxvisit_init: float = 50.0,
  epsilon: float = 1e-8,
) -> jax.Array:
  """Gumbel's completed Q-values, min-max normalised over every visited edge of the tree (EfficientZero's
  normalisation) rather than over the node's own children.

  mctx's default rescales by the children's own range, which maps any two distinct Q-values to exactly 0 and
  1: with few actions (CartPole has 2) a difference that is pure model noise then becomes a ~6-logit
  preference. The tree-wide range keeps differences in proportion to the values the search has seen.
  Works on one unbatched tree, as mctx calls it.
  """
  chex.assert_shape(node_index, ())
  qvalues = tree.qvalues(node_index)
  visits = tree.children_visits[node_index]
  prior = jax.nn.softmax(tree.children_prior_logits[node_index])
  completed = jnp.where(visits > 0, qvalues, _mixed_value(tree.raw_values[node_index], qvalues, visits, prior))
  all_q = tree.children_rewards + tree.children_discounts * tree.children_values
  seen = tree.children_visits > 0
  low = jnp.minimum(jnp.min(jnp.where(seen, all_q, jnp.inf)), jnp.min(completed))
  high = jnp.maximum(jnp.max(jnp.where(seen, all_q, -jnp.inf)), jnp.max(completed))
  normalized = (completed - low) / jnp.maximum(high - low, epsilon)
  return (maxvisit_init + jnp.max(visits)) * value_scale * normalized


def _mixed_value(raw_value: jax.Array, qvalues: jax.Array, visits: jax.Array, prior: jax.Array) -> jax.Array:
  """Appendix D of the Gumbel MuZero paper: the raw value mixed with the prior-weighted visited Q-values."""
  total = jnp.sum(visits)
  prior = jnp.maximum(jnp.finfo(prior.dtype).tiny, prior)
  visited_prob = jnp.sum(jnp.where(visits > 0, prior, 0.0))
  weighted_q = jnp.sum(jnp.where(visits > 0, prior * qvalues / visited_prob, 0.0))
  return (raw_value + total * weighted_q) / (total + 1)


def settings(config: Config) -> dict[str, Any]:
  """The search settings of a config, as run_search's keywords: the one adapter from a Config to search."""
  return dict(
    kind=config.search,
    num_simulations=config.num_simulations,
    discount=config.discount,
    horizon=config.value_prefix_horizon,
    max_considered_actions=config.max_considered_actions,
    q_normalization=config.q_normalization,
    q_range_floor=config.q_range_floor,
    dirichlet_fraction=config.dirichlet_fraction,
    dirichlet_alpha=config.dirichlet_alpha,
    pb_c_init=config.pb_c_init,
    pb_c_base=config.pb_c_base,
  )


def run_search(
  model: Model,
  params: Params,
  rng_key: chex.PRNGKey,
  root: mctx.RootFnOutput,
  *,
  kind: str,
  num_simulations: int,
  discount: float,
  horizon: int,
  temperature: jax.Array | float,
  noise: jax.Array | bool,
  held: jax.Array | None = None,
  max_considered_actions: int = 16,
  q_normalization: str = "children",
  q_range_floor: float = 1e-8,
  value_scale: float = 0.1,
  dirichlet_fraction: float = 0.25,
  dirichlet_alpha: float = 0.3,
  pb_c_init: float = 1.25,
  pb_c_base: float = 19652.0,
) -> SearchOutput:
  """Searches from `root` (kind 'gumbel': Gumbel MuZero; 'puct': MuZero pUCT); the key is consumed.
  Settings from a config: `run_search(..., **settings(config))`.

  discount, horizon: the model's discount and value-prefix horizon. temperature: pUCT samples the action from
  visits**(1/temperature) (0: the most visited); Gumbel scales its Gumbel noise by it (0: deterministic).
  noise: pUCT adds root Dirichlet noise (dirichlet_fraction, dirichlet_alpha). Gumbel: max_considered_actions,
  q_normalization ('children': mctx's per-node min-max; 'tree': qtransform_tree_minmax), q_range_floor (the
  smallest range either normalises by; pUCT's per-node min-max too) and value_scale, the
  weight of the completed Q-values in its improved policy softmax(prior logits + sigma(q)) (mctx's 0.1; 0
  makes the policy target the prior). pUCT: pb_c_init, pb_c_base.
  held: Gumbel only, f32[B, A] standard Gumbel noise the caller holds (`config.noise_hold`), scaled by
  `temperature`, in place of a fresh draw (see gumbel_search).
  """
  recurrent_fn = make_recurrent_fn(model, discount=discount, horizon=horizon)
  if kind == "gumbel":
    qtransform = qtransform_tree_minmax if q_normalization == "tree" else mctx.qtransform_completed_by_mix_value
    return gumbel_search(
      params, rng_key, root, recurrent_fn, num_simulations=num_simulations, temperature=temperature, held=held,
      max_considered_actions=max_considered_actions,
      qtransform=functools.partial(qtransform, value_scale=value_scale, epsilon=q_range_floor),
    )  # fmt: skip
  assert held is None, "held noise is Gumbel search's"
  out = mctx.muzero_policy(
    params,
    rng_key,
    root,
    recurrent_fn,
    num_simulations,
    dirichlet_fraction=dirichlet_fraction * jnp.asarray(noise, jnp.float32),
    dirichlet_alpha=dirichlet_alpha,
    pb_c_init=pb_c_init,
    pb_c_base=pb_c_base,
    temperature=temperature,
    qtransform=functools.partial(mctx.qtransform_by_parent_and_siblings, epsilon=q_range_floor),
  )
  return output(out.action, out.action_weights, out.search_tree)


def gumbel_search(
  params: Params,
  rng_key: chex.PRNGKey,
  root: mctx.RootFnOutput,
  recurrent_fn: mctx.RecurrentFn,
  *,
  num_simulations: int,
  max_considered_actions: int,
  qtransform: Any,
  temperature: jax.Array | float,
  held: jax.Array | None,
) -> SearchOutput:
  """mctx's Gumbel MuZero, its root noise drawn afresh (held None) or given (held f32[B, A], scaled by
  `temperature`: see held_gumbel_search)."""
  if held is not None:
    return held_gumbel_search(
      params, rng_key, root, recurrent_fn, gumbel=temperature * held, num_simulations=num_simulations,
      max_considered_actions=max_considered_actions, qtransform=qtransform,
    )  # fmt: skip
  out = mctx.gumbel_muzero_policy(
    params,
    rng_key,
    root,
    recurrent_fn,
    num_simulations,
    max_num_considered_actions=max_considered_actions,
    gumbel_scale=temperature,
    qtransform=qtransform,
  )
  return output(out.action, out.action_weights, out.search_tree)


def held_gumbel_search(
  params: Params,
  rng_key: chex.PRNGKey,
  root: mctx.RootFnOutput,
  recurrent_fn: mctx.RecurrentFn,
  *,
  gumbel: jax.Array,
  num_simulations: int,
  max_considered_actions: int,
  qtransform: Any,
) -> SearchOutput:
  """Gumbel MuZero with its root noise `gumbel` f32[B, A] given: mctx.gumbel_muzero_policy's steps with the
  noise it would have drawn replaced (that function draws it inside). The search runs on mctx's own Gumbel
  action selection with the noise as its extra data; the action is the considered action (most visited: the
  last round of sequential halving) of highest noise + prior logits + completed Q, and the policy target is
  softmax(prior logits + completed Q), with no noise term (the noise only chose which actions were visited).
  mctx's own steps are private (seq_halving.score_considered); tests/test_search.py holds this to
  gumbel_muzero_policy with the same noise, so a change in mctx shows there."""
  search_key, _ = jax.random.split(rng_key)  # gumbel_muzero_policy's split: the second key would draw the noise
  tree = mctx.search(
    params=params,
    rng_key=search_key,
    root=root,
    recurrent_fn=recurrent_fn,
    root_action_selection_fn=functools.partial(
      mctx.gumbel_muzero_root_action_selection,
      num_simulations=num_simulations,
      max_num_considered_actions=max_considered_actions,
      qtransform=qtransform,
    ),
    interior_action_selection_fn=functools.partial(mctx.gumbel_muzero_interior_action_selection, qtransform=qtransform),
    num_simulations=num_simulations,
    extra_data=mctx.GumbelMuZeroExtraData(root_gumbel=gumbel),
  )
  visits = tree.summary().visit_counts
  completed = jax.vmap(qtransform, in_axes=[0, None])(tree, tree.ROOT_INDEX)
  considered = visits == jnp.max(visits, axis=-1, keepdims=True)
  logits = root.prior_logits - jnp.max(root.prior_logits, axis=-1, keepdims=True)
  score = jnp.maximum(-1e9, gumbel + logits + completed) + jnp.where(considered, 0.0, -jnp.inf)
  return output(jnp.argmax(score, axis=-1), jax.nn.softmax(root.prior_logits + completed, axis=-1), tree)
