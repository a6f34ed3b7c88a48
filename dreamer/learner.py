"""The EfficientZero learner: sample, build targets (target network + reanalysis), unroll, update.

`make_train_chunk` returns a jitted function that runs `updates_per_chunk` updates in one `lax.scan`,
reading the replay rows and updating their priorities on the device, so the host only dispatches chunks.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from dreamer import augment as augment_lib
from dreamer import devices as devices_lib
from dreamer import distil as distil_parts
from dreamer import dream_ratio, support
from dreamer import replay as replay_lib
from dreamer import search as search_lib
from dreamer import targets as targets_lib
from dreamer.config import Config
from dreamer.networks import Model, Params, init_params, unroll


class TrainState(NamedTuple):
  params: Params
  target_params: Params
  opt_state: Any
  rng_key: jax.Array
  updates: jax.Array  # i32[]


class Batch(NamedTuple):
  """What one update trains on: B samples, K unroll steps."""

  obs: jax.Array  # [B, K+1, *obs_shape] (stacked frames: [B, K+1, S, H, W, C])
  action: jax.Array  # i32[B, K]
  policy: jax.Array  # f32[B, K+1, A]
  targets: targets_lib.Targets
  weight: jax.Array  # f32[B] importance weights


def _learned(variables: Params) -> Any:
  """True at every leaf of the 'params' collection, False at BatchNorm's running averages."""
  return {k: jax.tree.map(lambda _, m=k == "params": m, v) for k, v in variables.items()}


def make_optimizer(config: Config) -> optax.GradientTransformation:
  """Clip, then AdamW or SGD with momentum and L2 over the network's variables. Running averages get zero
  gradients (so no Adam or momentum step) and, masked, no weight decay; `update` overwrites them."""
  lr = (
    optax.linear_schedule(0.0, config.learning_rate, config.warmup_updates)
    if config.warmup_updates > 0
    else config.learning_rate
  )
  mask = _learned if config.norm == "batch" else None  # None keeps LayerNorm runs' optimizer state as it was
  if config.optimizer == "adam":
    opt = optax.adamw(lr, weight_decay=config.weight_decay, mask=mask)
  else:
    opt = optax.chain(optax.add_decayed_weights(config.weight_decay, mask), optax.sgd(lr, momentum=config.momentum))
  return optax.chain(optax.clip_by_global_norm(config.max_grad_norm), opt)


def init_state(params: Params, optimizer: optax.GradientTransformation, rng_key: jax.Array) -> TrainState:
  # The target is a copy: the chunk donates the state, and one buffer may not be donated twice.
  target = jax.tree.map(jnp.copy, params)
  return TrainState(params, target, optimizer.init(params), rng_key, jnp.zeros((), jnp.int32))


def scale_gradient(x: jax.Array, scale: float) -> jax.Array:
  """Identity forward; multiplies the gradient by `scale`."""
  return x * scale + jax.lax.stop_gradient(x) * (1.0 - scale)


def _cross_entropy(logits: jax.Array, probs: jax.Array) -> jax.Array:
  return -jnp.sum(probs * jax.nn.log_softmax(logits), axis=-1)


def _entropy(logits: jax.Array) -> jax.Array:
  logp = jax.nn.log_softmax(logits)
  return -jnp.sum(jnp.exp(logp) * logp, axis=-1)


def _cosine(a: jax.Array, b: jax.Array) -> jax.Array:
  a = a / jnp.maximum(jnp.linalg.norm(a, axis=-1, keepdims=True), 1e-8)
  b = b / jnp.maximum(jnp.linalg.norm(b, axis=-1, keepdims=True), 1e-8)
  return jnp.sum(a * b, axis=-1)


AWR_MAX_WEIGHT = 20.0  # Peng et al. (2019)'s clip of the advantage weights


def _awr_mask(tg: targets_lib.Targets) -> jax.Array:
  """f32[B, K+1]: where the AWR loss has a target: a policy and a value target, and an action taken (not row K)."""
  mask = tg.policy_mask * tg.value_mask
  return mask.at[:, -1].set(0.0)


def _awr_loss(
  policy_logits: jax.Array, value_logits: jax.Array, action: jax.Array, tg: targets_lib.Targets, config: Config
) -> jax.Array:
  """The policy-only baseline's policy loss f32[B, K+1] (0 at row K, which has no action): advantage-weighted
  regression on the actions taken, -min(exp(A / (awr_temperature * rms(A))), 20) * log pi(a_k | s_k), with the
  advantage A = z_k - v_k of the n-step value target over the predicted value (no gradient through either),
  scaled by its root mean square over the batch so one temperature serves any reward scale."""
  k = action.shape[1]
  mask = _awr_mask(tg)[:, :k]
  adv = tg.value[:, :k] - jax.lax.stop_gradient(support.logits_to_scalar(value_logits[:, :k]))
  rms = jnp.sqrt(jnp.sum(mask * adv**2) / jnp.maximum(jnp.sum(mask), 1.0))
  weight = jnp.minimum(jnp.exp(adv / (config.awr_temperature * jnp.maximum(rms, 1e-6))), AWR_MAX_WEIGHT)
  logp = jnp.take_along_axis(jax.nn.log_softmax(policy_logits[:, :k]), action[..., None], axis=-1)[..., 0]
  loss = -jax.lax.stop_gradient(weight * mask) * logp
  return jnp.concatenate([loss, jnp.zeros_like(loss[:, :1])], axis=1)


def _flat(fn, x: jax.Array, lead: int = 2):
  """Applies a batched function to x [B, N, ...] as [B*N, ...] and restores the two leading axes."""
  shape = x.shape[:lead]
  out = fn(x.reshape(-1, *x.shape[lead:]))
  return jax.tree.map(lambda y: y.reshape(*shape, *y.shape[1:]), out)


def unroll_outputs(
  call,
  root_obs: jax.Array,
  next_obs: jax.Array,
  action: jax.Array,
  *,
  horizon: int,
  lstm_dim: int,
  terminal: bool = False,
  decode: bool = False,
) -> tuple[jax.Array, ...]:
  """Training's K-step model unroll (networks.unroll) from root observations [B, *obs] along actions
  i32[B, K], with `call(method, *args)` running each network call (training or eval mode). Returns value
  logits f32[B, K+1, V], policy logits f32[B, K+1, A], value-prefix logits f32[B, K, R], online projections
  f32[B, K, P] of the unrolled latents and their consistency targets f32[B, K, P] (projections of the real
  next observations [B, K, *obs], no gradient). The gradient into each unrolled latent is halved, as MuZero.
  Each depth's projection and prediction run right after its dynamics step, as always, so BatchNorm's running
  averages move in the same order and the gradients sum in the same order. With `terminal` (a network with a
  terminal head), a sixth output: the terminal logits f32[B, K] of the unrolled latents, read after each
  depth's prediction. With `decode` (a network with an observation decoder), a last output: every latent's
  decoded observation f32[B, K+1, N] (N the observation's elements), read after each depth's other reads."""
  target_proj = jax.lax.stop_gradient(_flat(lambda o: call("project", call("represent", o), False), next_obs))

  def read(k: int, latent: jax.Array) -> tuple[Any, ...]:  # projection (unrolled latents only), prediction
    out = (call("project", latent, True) if k > 0 else None, *call("predict", latent))
    out = (*out, call("terminal", latent) if k > 0 else None) if terminal else out
    return (*out, call("decode", latent)) if decode else out

  _, prefix_logits, reads = unroll(
    call, call("represent", root_obs), action, lstm_dim=lstm_dim, horizon=horizon,
    after_step=lambda z: scale_gradient(z, 0.5), read=read,
  )  # fmt: skip
  online_proj, policy_logits, value_logits, *extra = zip(*reads)
  outs = (
    jnp.stack(value_logits, 1),
    jnp.stack(policy_logits, 1),
    jnp.stack(prefix_logits, 1),
    jnp.stack(online_proj[1:], 1),
    target_proj,
  )
  outs = (*outs, jnp.stack(extra[0][1:], 1)) if terminal else outs
  return (*outs, jnp.stack(extra[-1], 1)) if decode else outs


def obs_loss(decoded: jax.Array, obs: jax.Array, mask: jax.Array, *, binary: bool) -> jax.Array:
  """f32[B, K+1] loss of the decoded observations f32[B, K+1, N] against the real ones [B, K+1, *obs] (the stored
  frames, shifted as the root was where frames are augmented): binary cross-entropy of logits where the stored
  frames are bool (`binary`), squared error otherwise, summed over the N elements, where the row belongs to the
  root's episode (`mask` f32[B, K+1], its last row included)."""
  target = obs.reshape(*obs.shape[:2], -1).astype(jnp.float32)
  if binary:
    per_element = optax.sigmoid_binary_cross_entropy(decoded, target)
  else:
    per_element = jnp.square(decoded - target)
  return per_element.sum(-1) * mask


def terminal_loss(logits: jax.Array, tg: targets_lib.Targets) -> jax.Array:
  """f32[B, K] binary cross-entropy of the terminal head's logits f32[B, K] against the unrolled rows' terminal
  targets, where the row belongs to the root's episode (its last row included)."""
  return optax.sigmoid_binary_cross_entropy(logits, tg.terminal) * tg.obs_mask[:, 1:]


def depth_losses(
  value_logits: jax.Array,
  policy_logits: jax.Array,
  prefix_logits: jax.Array,
  online_proj: jax.Array,
  target_proj: jax.Array,
  batch: Batch,
  config: Config,
):
  """Masked per-sample losses by unroll depth (the outputs of `unroll` against the batch's targets): value
  and policy f32[B, K+1], value prefix and consistency (negative cosine) f32[B, K]. The policy loss is the
  cross-entropy to search's target plus `awr_weight` times the AWR loss, or the AWR loss alone without search,
  less `policy_entropy_weight` times the policy's entropy where that loss has a target."""
  tg = batch.targets
  value_loss = _cross_entropy(value_logits, support.scalar_to_probs(tg.value, config.value_support)) * tg.value_mask
  if not dream_ratio.trains_with_search(config):
    policy_loss = _awr_loss(policy_logits, value_logits, batch.action, tg, config)
    target_mask = _awr_mask(tg)
  else:
    policy_loss = _cross_entropy(policy_logits, batch.policy) * tg.policy_mask
    target_mask = tg.policy_mask
    if config.awr_weight > 0.0:  # a static choice: without it the graph is today's, bit for bit
      policy_loss = policy_loss + config.awr_weight * _awr_loss(policy_logits, value_logits, batch.action, tg, config)
  if config.policy_entropy_weight > 0.0:  # a static choice: without it the graph is today's, bit for bit
    policy_loss = policy_loss - config.policy_entropy_weight * _entropy(policy_logits) * target_mask
  prefix_loss = (
    _cross_entropy(prefix_logits, support.scalar_to_probs(tg.prefix, config.reward_support)) * tg.prefix_mask
  )
  consistency_loss = -_cosine(online_proj, target_proj) * tg.obs_mask[:, 1:]
  return value_loss, policy_loss, prefix_loss, consistency_loss


def _priority(value_pred: jax.Array, prefix_logits: jax.Array, tg: targets_lib.Targets, config: Config) -> jax.Array:
  """f32[B] new priorities of the sampled rows: |root value error| (EfficientZero), plus `priority_reward_weight`
  times the largest |value-prefix error| over the K unrolled steps [B, K], so that rows whose rare rewards the
  model still mispredicts are replayed more."""
  priority = jnp.abs(value_pred - tg.value[:, 0])
  if config.priority_reward_weight > 0.0:  # a static choice: without it the graph is today's, bit for bit
    prefix_error = jnp.abs(support.logits_to_scalar(prefix_logits) - tg.prefix) * tg.prefix_mask
    priority = priority + config.priority_reward_weight * prefix_error.max(1)
  return priority


def loss_fn(
  params: Params, batch: Batch, aug_key: jax.Array | None = None, *, model: Model, config: Config
) -> tuple[jax.Array, dict]:
  """EfficientZero loss, weighted per sample; unroll-step losses scaled by 1/K. Returns (loss, aux).
  `aug_key` is consumed by the frame augmentations when `config.augment`. Every network call runs in training
  mode (`Model.call`); aux["moved"] holds BatchNorm's moved running averages."""
  k_max, tg = config.unroll_steps, batch.targets
  root_obs, next_obs = batch.obs[:, 0], batch.obs[:, 1:]
  decode_target = batch.obs  # the decoder's: the stored frames [B, K+1, *obs]
  if config.augment:  # the root and its K next observations get independent transforms, as EfficientZero
    root_key, next_key = jax.random.split(aug_key)
    aug = functools.partial(augment_lib.augment, pad=config.augment_shift, scale=config.augment_intensity)
    root_obs, next_obs = aug(root_obs, root_key), aug(next_obs, next_key)
    if model.has_decoder:  # every row in the root's frame of reference: its shift (not its intensity) on all
      decode_target = augment_lib.augment_shift(batch.obs, root_key, pad=config.augment_shift)
  variables = params

  def call(method: str, *args):  # training mode: BatchNorm's running averages move with every call, in order
    nonlocal variables
    out, variables = model.call(variables, method, *args, train=True)
    return out

  outs = unroll_outputs(
    call, root_obs, next_obs, batch.action, horizon=config.value_prefix_horizon, lstm_dim=model.lstm_dim,
    terminal=model.has_terminal, decode=model.has_decoder,
  )  # fmt: skip
  value_logits, policy_logits, prefix_logits, online_proj, target_proj = outs[:5]
  value_loss, policy_loss, prefix_loss, consistency_loss = depth_losses(
    value_logits, policy_logits, prefix_logits, online_proj, target_proj, batch, config
  )

  step_scale = jnp.concatenate([jnp.ones((1,)), jnp.full((k_max,), 1.0 / k_max)])
  per_sample = (
    config.value_loss_weight * value_loss @ step_scale
    + config.policy_loss_weight * policy_loss @ step_scale
    + config.reward_loss_weight * prefix_loss.sum(1) / k_max
    + config.consistency_loss_weight * consistency_loss.sum(1) / k_max
  )
  if model.has_terminal:  # a static choice: without the head the graph is today's, bit for bit
    end_loss = terminal_loss(outs[5], tg).sum(1) / k_max
    per_sample = per_sample + config.terminal_loss_weight * end_loss
  if model.has_decoder:  # the same
    binary = batch.obs.dtype == jnp.bool_
    decode_loss = obs_loss(outs[-1], decode_target, tg.obs_mask, binary=binary) @ step_scale
    per_sample = per_sample + config.obs_loss_weight * decode_loss
  loss = jnp.mean(batch.weight * per_sample)
  value_pred = support.logits_to_scalar(value_logits[:, 0])
  aux = {
    "loss/total": loss,
    "loss/value": jnp.mean(value_loss @ step_scale),
    "loss/policy": jnp.mean(policy_loss @ step_scale),
    "loss/value_prefix": jnp.mean(prefix_loss.sum(1) / k_max),
    "loss/consistency": jnp.mean(consistency_loss.sum(1) / k_max),
    "train/value_pred": jnp.mean(value_pred),
    "train/value_target": jnp.mean(tg.value[:, 0]),
    "train/td_steps": jnp.mean(tg.td_steps.astype(jnp.float32)),
    # The root policy's entropy (nats) in this training forward pass (augmented frames, BatchNorm on the batch's
    # statistics, replay's roots): a policy narrowing onto its own argmax shows here first.
    "train/policy_entropy": jnp.sum(_entropy(policy_logits[:, 0]) * tg.policy_mask[:, 0])
    / jnp.maximum(jnp.sum(tg.policy_mask[:, 0]), 1.0),
    "priority": _priority(value_pred, prefix_logits, tg, config),
    # BatchNorm's running averages after this forward pass (no gradient flows to them); {} with LayerNorm.
    "moved": {k: v for k, v in variables.items() if k != "params"},
  }
  if model.has_terminal:
    aux["loss/terminal"] = jnp.mean(end_loss)
  if model.has_decoder:
    aux["loss/obs"] = jnp.mean(decode_loss)
  return loss, aux


def reciprocal(n: int) -> np.float32:
  """1 / n in float32, correctly rounded."""
  return np.float32(1.0) / np.float32(n)


def make_batch(
  state: TrainState,
  rb: replay_lib.ReplayState,
  rng_key: jax.Array,
  env_step: jax.Array,
  *,
  model: Model,
  config: Config,
  split: Callable[[Any], Any] | None = None,
  inv_total_env_steps: jax.Array | None = None,
) -> tuple[Batch, replay_lib.Sample]:
  """Samples B roots, builds their targets with the target network, reanalyses a fraction of policies.
  `split` (inside jit, several devices): lays the sampled windows' leading axis over the devices, so that
  everything after the sampling runs B / D samples per device (see `dreamer/devices.py`).
  `inv_total_env_steps` (f32[], traced): 1 / the run's length, over which prioritized replay's beta anneals;
  default: the config's, compiled in."""
  k_max, n = config.unroll_steps, config.td_steps
  sample_key, search_key = jax.random.split(rng_key)
  # env_step times a float32 reciprocal: the product XLA makes of a division by a compiled-in length, so a
  # traced length (TrainChunk) computes bit for bit what a compiled-in one does.
  inv = reciprocal(config.total_env_steps) if inv_total_env_steps is None else inv_total_env_steps
  progress = jnp.minimum(env_step * inv, 1.0)
  beta = config.priority_beta + (1.0 - config.priority_beta) * progress
  if isinstance(rb, replay_lib.Sources):  # several replays sampled as one (a /dream job's data)
    if sum(rb.sizes) != config.batch_size or split is not None:
      raise ValueError(f"sources' sizes {rb.sizes} must add up to batch_size {config.batch_size}, on one device")
    per_source = replay_lib.sample_sources(rb, sample_key, alpha=config.priority_alpha, beta=beta)
    parts = [
      replay_lib.gather(src, one.env, one.index, k_max + n + 1, stack=config.frame_stack)
      for src, one in zip(rb.replays, per_source, strict=True)
    ]
    (window, known), smp = jax.tree.map(lambda *x: jnp.concatenate(x), *zip(parts, per_source, strict=True))
  else:
    smp = replay_lib.sample(rb, sample_key, config.batch_size, alpha=config.priority_alpha, beta=beta)
    window, known = replay_lib.gather(rb, smp.env, smp.index, k_max + n + 1, stack=config.frame_stack)
  if split is not None:
    smp, window, known = split((smp, window, known))
  age = env_step - window.step[:, 0]
  # The target network's values, computed only at the K+1 rows that are bootstrapped from (not all W rows).
  n_eff = targets_lib.td_horizon(age, td_steps=n, td_age_steps=config.td_age_steps)
  rows = targets_lib.bootstrap_rows(window.last & known, known, n_eff, unroll_steps=k_max)  # [B, K+1]
  boot_obs = jnp.take_along_axis(window.obs, rows.reshape(*rows.shape, *([1] * (window.obs.ndim - 2))), axis=1)
  tp = state.target_params
  boot_values = _flat(lambda o: support.logits_to_scalar(model.predict(tp, model.represent(tp, o))[1]), boot_obs)
  bootstrap = jnp.zeros(known.shape).at[jnp.arange(known.shape[0])[:, None], rows].set(boot_values)
  tg = targets_lib.compute(
    window,
    known,
    jax.lax.stop_gradient(bootstrap),
    age,
    unroll_steps=k_max,
    td_steps=n,
    td_age_steps=config.td_age_steps,
    discount=config.discount,
    horizon=config.value_prefix_horizon,
  )
  policy = window.policy[:, : k_max + 1]
  num_re = dream_ratio.reanalysed_samples(config)
  if num_re > 0:
    obs = window.obs[:num_re, : k_max + 1].reshape(-1, *window.obs.shape[2:])
    root = search_lib.make_root(model, state.params, obs)
    fresh = search_lib.run_search(
      model, state.params, search_key, root, temperature=1.0, noise=True, **search_lib.settings(config)
    )
    fresh_policy = jax.lax.stop_gradient(fresh.policy).reshape(num_re, k_max + 1, -1)
    policy = policy.at[:num_re].set(fresh_policy)
    if config.value_target != "td":
      tg = tg._replace(value=search_values(tg, fresh.value.reshape(num_re, k_max + 1), age[:num_re], config=config))
  batch = Batch(
    obs=window.obs[:, : k_max + 1], action=window.action[:, :k_max], policy=policy, targets=tg, weight=smp.weight
  )
  return batch, smp


def search_values(tg: targets_lib.Targets, root_value: jax.Array, age: jax.Array, *, config: Config) -> jax.Array:
  """Value targets f32[B, K+1] with the first R (reanalysed) samples' rows replaced by their search root values
  root_value f32[R, K+1] (ages i32[R]): EfficientZero V2's search-based value estimation, at the rows that have
  an action in the root's episode (a final observation keeps its n-step target: 0 when terminal)."""
  num_re = root_value.shape[0]
  use = tg.policy_mask[:num_re] > 0
  if config.value_target == "mixed":  # stale samples take the search value, fresh ones the n-step return
    use = use & (age > config.search_value_age)[:, None]
  value = jnp.where(use, jax.lax.stop_gradient(root_value), tg.value[:num_re])
  return tg.value.at[:num_re].set(value)


def update(
  state: TrainState,
  rb: replay_lib.ReplayState,
  env_step: jax.Array,
  *,
  model: Model,
  config: Config,
  optimizer: optax.GradientTransformation,
  split: Callable[[Any], Any] | None = None,
  inv_total_env_steps: jax.Array | None = None,
) -> tuple[TrainState, replay_lib.ReplayState, dict]:
  """One learner update; returns the new state, the replay with new priorities, and scalar metrics. `split`,
  `inv_total_env_steps`: see `make_batch`."""
  rng_key, batch_key = jax.random.split(state.rng_key)
  batch, smp = make_batch(
    state, rb, batch_key, env_step, model=model, config=config, split=split, inv_total_env_steps=inv_total_env_steps
  )
  # The augmentation key is derived, not split off, so runs without augmentation keep their random stream.
  aug_key = jax.random.fold_in(batch_key, 1) if config.augment else None
  grads, aux = jax.grad(functools.partial(loss_fn, model=model, config=config), has_aux=True)(
    state.params, batch, aug_key
  )
  moved = aux.pop("moved")
  updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
  params = {**optax.apply_updates(state.params, updates), **moved}  # running averages: set, not learned
  count = state.updates + 1
  if config.reset_interval > 0:
    params = reset_if_due(params, count, batch_key, model=model, obs_shape=batch.obs.shape[2:], config=config)
  sync = count % config.target_update_interval == 0
  target = jax.tree.map(lambda p, t: jnp.where(sync, p, t), params, state.target_params)
  priority = aux.pop("priority") + config.priority_eps
  if isinstance(rb, replay_lib.Sources):  # the batch is the sources' draws in order: each takes its slice
    cuts = (0, *itertools.accumulate(rb.sizes))
    replays = tuple(
      replay_lib.set_priorities(src, smp.env[a:b], smp.index[a:b], priority[a:b])
      for src, a, b in zip(rb.replays, cuts[:-1], cuts[1:], strict=True)
    )
    rb = replay_lib.Sources(replays, rb.sizes)
  else:
    rb = replay_lib.set_priorities(rb, smp.env, smp.index, priority)
  aux["train/grad_norm"] = optax.tree.norm(grads)
  aux["train/weight_min"] = jnp.min(smp.weight)
  return TrainState(params, target, opt_state, rng_key, count), rb, aux


def reset_parts(name: str) -> tuple[str, ...]:
  """Top-level module-name prefixes of a `reset_parts` setting (the part lists of distil.part_mask)."""
  return {
    "heads": ("policy_head", "value_head"),
    "prediction": distil_parts.PREDICTION_PARTS,
    "model": distil_parts.MODEL_PARTS,
    "all": ("",),
  }[name]


def reset_if_due(
  params: Params, count: jax.Array, rng_key: jax.Array, *, model: Model, obs_shape: tuple[int, ...], config: Config
) -> Params:
  """After update `count`: every `reset_interval` updates, the learned leaves of `reset_parts` become
  reset_shrink * theirs + (1 - reset_shrink) * a fresh initialisation's (from a key derived from `rng_key`);
  everything else, BatchNorm's running averages included, is returned as it is. The optimizer's statistics
  are kept (BBF keeps its optimizer too)."""
  mask = distil_parts.part_mask(params, reset_parts(config.reset_parts))

  def reset(p: Params) -> Params:
    fresh = init_params(model.net, jax.random.fold_in(rng_key, 2), obs_shape)
    a = config.reset_shrink
    return jax.tree.map(lambda old, new, m: jnp.where(m, a * old + (1.0 - a) * new, old), p, fresh, mask)

  return jax.lax.cond(count % config.reset_interval == 0, reset, lambda p: p, params)


@dataclasses.dataclass(frozen=True)
class TrainChunk:
  """A jitted chunk, called as chunk(state, replay, env_step), or lowered (`lower`, then `compile`) and called
  the same way. The run's length goes in as a value (1 / length, its last argument), not compiled into the
  program: runs that differ only in `total_env_steps` (a resume that extends a run; the test suite's many short
  runs, over its compilation cache) share one compiled chunk."""

  target: Any  # the jitted, lowered or compiled chunk(state, replay, env_step, inv_total_env_steps)
  inv_total_env_steps: np.float32

  def __call__(self, state: TrainState, rb: replay_lib.ReplayState, env_step: jax.Array):
    return self.target(state, rb, env_step, self.inv_total_env_steps)

  def lower(self, state: TrainState, rb: replay_lib.ReplayState, env_step: jax.Array) -> TrainChunk:
    return TrainChunk(self.target.lower(state, rb, env_step, self.inv_total_env_steps), self.inv_total_env_steps)

  def compile(self) -> TrainChunk:
    return TrainChunk(self.target.compile(), self.inv_total_env_steps)

  def as_text(self) -> str:
    return self.target.as_text()


def make_train_chunk(
  model: Model, config: Config, optimizer: optax.GradientTransformation, *, layout: devices_lib.Layout | None = None
) -> TrainChunk:
  """chunk(state, replay, env_step) -> (state, replay, metrics: f32[updates_per_chunk] each, one per update, so
  the host can name the first update whose loss is not finite), jitted. With a `layout` of several devices: data
  parallel, the state replicated, the replay and each batch split over the devices (`dreamer/devices.py`)."""
  split = layout.constrain if layout is not None and layout.count > 1 else None
  step = functools.partial(update, model=model, config=config, optimizer=optimizer, split=split)

  def chunk(state: TrainState, rb: replay_lib.ReplayState, env_step: jax.Array, inv_total_env_steps: jax.Array):
    def body(carry, _):
      s, r = carry
      s, r, aux = step(s, r, env_step, inv_total_env_steps=inv_total_env_steps)
      return (s, r), aux

    (state, rb), aux = jax.lax.scan(body, (state, rb), None, length=config.updates_per_chunk)
    return state, rb, aux

  if split is None:
    return TrainChunk(jax.jit(chunk, donate_argnums=(0, 1)), reciprocal(config.total_env_steps))
  shardings = (layout.replicated, layout.replay, layout.replicated)
  jitted = jax.jit(chunk, donate_argnums=(0, 1), in_shardings=(*shardings, layout.replicated), out_shardings=shardings)
  return TrainChunk(jitted, reciprocal(config.total_env_steps))
