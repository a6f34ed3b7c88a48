"""Rehearsal and distillation, the device side of `dreamer dream`: imagined rollouts of the student policy in
the frozen teacher model from real recorded states, Gumbel search targets at every imagined state, and the
student's update toward them (with `kl_weight` x a KL term to the original policy on anchor states).

All functions are pure; `make_distil_chunk` jits a `lax.scan` over `updates_per_chunk` updates.
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from dreamer import replay as replay_lib
from dreamer import search as search_lib
from dreamer import support
from dreamer.config import Config
from dreamer.networks import Model, Params, dynamics_step, unroll, zero_lstm_state

# Top-level modules of the prediction function (policy and value heads and what only they read), in both
# network families; 'heads' distillation trains only these.
PREDICTION_PARTS = ("trunk", "policy_head", "value_head", "pred_blocks")
# The policy head alone: 'policy' distillation leaves every value the search reads exactly as it was.
POLICY_PARTS = ("policy_head",)
# Modules of the dynamics function (the next latent; not the value-prefix LSTM and head).
DYNAMICS_PARTS = ("dyn_",)
# The world model that adaptation changes by default: dynamics, the value prefix (reward) LSTM and head, the
# terminal head where there is one (`end_head`), and with `task_input` the latent offset per task member
# (`task_offset`: its home row sees only zeros, so adapting it to another member leaves the home world's
# latents as they were).
MODEL_PARTS = ("dyn_", "lstm", "prefix_", "end_", "task_")
# The task rows alone (`task_input`'s latent offset, `task_dynamics`' shift): data of the home world never
# reach them, so adapting only these leaves the checkpoint's model on its own world exactly as it was.
TASK_PARTS = ("task_offset", "dyn_task")


def part_mask(params: Params, parts: tuple[str, ...]) -> Any:
  """bool pytree like `params`: True at the leaves of 'params' whose top-level module name starts with one of
  `parts`, False elsewhere (and at every running average)."""

  def leaf(col: str, name: str, sub: Any) -> Any:
    learn = col == "params" and name.startswith(parts)
    return jax.tree.map(lambda _: learn, sub)

  return {col: {name: leaf(col, name, sub) for name, sub in tree.items()} for col, tree in params.items()}


def with_parts(params: Params, donor: Params, parts: tuple[str, ...]) -> Params:
  """`params` with the leaves of `parts` (see part_mask) taken from `donor`."""
  return jax.tree.map(lambda m, a, b: b if m else a, part_mask(params, parts), params, donor)


def set_prior(params: Params, donor: Params, head: str = "policy_head") -> Params:
  """`params` whose search prior head (`search_prior`, networks' `prior_head`) is a copy of `donor`'s `head`
  (its parameters and, with BatchNorm, its running averages): with the policy head, search over them reads the
  prior that `donor` acts with; with 'search_prior', the one `donor`'s search reads."""
  return {
    name: ({**tree, "search_prior": donor[name][head]} if "policy_head" in tree else tree)
    for name, tree in params.items()
  }


def drop_prior(params: Params) -> Params:
  """`params` without a search prior head: one policy head, which search and acting both read."""
  return {name: {k: v for k, v in tree.items() if k != "search_prior"} for name, tree in params.items()}


def only(
  optimizer: optax.GradientTransformation, params: Params, parts: tuple[str, ...]
) -> optax.GradientTransformation:
  """`optimizer` on the leaves of `parts` (see part_mask); every other leaf, running averages included, is
  never changed."""
  labels = jax.tree.map(lambda m: "learn" if m else "freeze", part_mask(params, parts))
  return optax.multi_transform({"learn": optimizer, "freeze": optax.set_to_zero()}, labels)


def make_optimizer(
  *, learning_rate: float, train: str, params: Params, updates: int = 0
) -> optax.GradientTransformation:
  """SGD with momentum 0.9 and a global-norm clip of 5 on the trainable leaves ('policy': the policy head
  only; 'heads': the prediction function; 'all': every learned parameter); the rest, running averages included,
  never change. SGD rather than Adam: a step is proportional to the gradient, so a teacher that equals the
  student (zero signal, float noise) leaves the weights where they are instead of stepping each by ~lr.
  updates > 0: the learning rate decays to 0 over that many updates (cosine), so that the written weights are
  not one noisy iterate of a large step size."""
  parts = {"policy": POLICY_PARTS, "heads": PREDICTION_PARTS, "all": ("",)}[train]
  rate = optax.cosine_decay_schedule(learning_rate, updates) if updates > 0 else learning_rate
  return only(optax.chain(optax.clip_by_global_norm(5.0), optax.sgd(rate, momentum=0.9)), params, parts)


class DistilState(NamedTuple):
  params: Params  # the student's variables
  opt_state: Any
  rng_key: jax.Array
  updates: jax.Array  # i32[]


class Rehearsal(NamedTuple):
  """Imagined trajectories of R roots, H states each (state 0 is the real root)."""

  action: jax.Array  # i32[R, H-1] the student's sampled actions between states
  policy: jax.Array  # f32[R, H, A] the teacher's Gumbel search policy at each state
  value: jax.Array  # f32[R, H] the teacher's search value
  predicted: jax.Array  # f32[R, H] the teacher's predicted value (its value head)
  valid: jax.Array  # bool[R, H] kept by the guard (and every state before it)


def sample_roots(rb: replay_lib.ReplayState, rng_key: jax.Array, n: int, stack: int) -> jax.Array:
  """n real observations [n, *obs] drawn uniformly from the written rows of `rb` (stacked `stack` deep)."""
  smp = replay_lib.sample(rb, rng_key, n, alpha=0.0, beta=jnp.float32(1.0))
  window, _ = replay_lib.gather(rb, smp.env, smp.index, 1, stack=stack)
  return window.obs[:, 0]


def rehearse(
  student: Params,
  teacher: Params,
  obs: jax.Array,
  rng_key: jax.Array,
  *,
  model: Model,
  config: Config,
  horizon: int,
  num_simulations: int,
  search_bonus: float,
  guard: float,
  q_normalization: str = "tree",
) -> Rehearsal:
  """From real roots obs [R, *obs]: the student picks each action by sampling its policy (on its own unrolled
  latent), the teacher's model carries the imagined state; then one batched Gumbel search of the teacher
  labels all R*H teacher states. search_bonus scales the completed-Q term of the improved policy (0: the target
  is the teacher's prior). guard: a state whose search value and predicted value disagree by more than
  guard * (|predicted| + 1) marks the model unreliable there; it and the rest of its trajectory are dropped."""
  r = obs.shape[0]
  act_key, search_key = jax.random.split(rng_key)
  z, s = model.represent(teacher, obs), model.represent(student, obs)
  lz = ls = zero_lstm_state(r, model.lstm_dim)
  in_teacher = lambda method, *args: getattr(model, method)(teacher, *args)  # noqa: E731
  in_student = lambda method, *args: getattr(model, method)(student, *args)  # noqa: E731
  latents, actions = [z], []
  for h, key in enumerate(jax.random.split(act_key, horizon - 1)):
    logits, _ = model.predict(student, s)
    a = jax.random.categorical(key, logits).astype(jnp.int32)
    z, lz, _ = dynamics_step(in_teacher, z, a, lz, h, horizon=config.value_prefix_horizon)
    s, ls, _ = dynamics_step(in_student, s, a, ls, h, horizon=config.value_prefix_horizon)
    latents.append(z)
    actions.append(a)
  flat = jnp.stack(latents, 1).reshape(r * horizon, *z.shape[1:])
  root = search_lib.root_from_latent(model, teacher, flat)
  search = {**search_lib.settings(config), "kind": "gumbel", "q_normalization": q_normalization}
  search.update(num_simulations=num_simulations, value_scale=0.1 * search_bonus)
  out = search_lib.run_search(model, teacher, search_key, root, temperature=1.0, noise=False, **search)
  value, predicted = out.value.reshape(r, horizon), root.value.reshape(r, horizon)
  ok = jnp.abs(value - predicted) <= guard * (jnp.abs(predicted) + 1.0)
  valid = jnp.cumprod(ok.astype(jnp.int32), axis=1).astype(bool)
  action = jnp.stack(actions, 1) if actions else jnp.zeros((r, 0), jnp.int32)
  return Rehearsal(
    action, jax.lax.stop_gradient(out.policy.reshape(r, horizon, -1)), jax.lax.stop_gradient(value), predicted, valid
  )


def kl(p_logits: jax.Array, q_logits: jax.Array) -> jax.Array:
  """KL(p || q) f32[...] between categorical distributions given by logits [..., A]."""
  logp, logq = jax.nn.log_softmax(p_logits), jax.nn.log_softmax(q_logits)
  return jnp.sum(jnp.exp(logp) * (logp - logq), axis=-1)


def kl_probs(p: jax.Array, q_logits: jax.Array) -> jax.Array:
  """KL(p || q) with p given as probabilities (zeros allowed)."""
  logq = jax.nn.log_softmax(q_logits)
  return jnp.sum(jnp.where(p > 0, p * (jnp.log(jnp.where(p > 0, p, 1.0)) - logq), 0.0), axis=-1)


def student_outputs(
  params: Params, obs: jax.Array, action: jax.Array, *, model: Model, horizon: int
) -> tuple[jax.Array, jax.Array]:
  """The student unrolled in its own model (networks.unroll, value-prefix horizon `horizon`) from obs
  [R, *obs] along action i32[R, H-1]: policy logits f32[R, H, A] and value logits f32[R, H, V]."""
  call = functools.partial(model.call, params)
  read = lambda k, latent: model.predict(params, latent)  # noqa: E731
  _, _, outputs = unroll(
    call, model.represent(params, obs), action, lstm_dim=model.lstm_dim, horizon=horizon, read=read
  )
  policy, value = zip(*outputs)
  return jnp.stack(policy, 1), jnp.stack(value, 1)


def loss_fn(
  params: Params,
  obs: jax.Array,
  reh: Rehearsal,
  anchor_obs: jax.Array | None,
  base_logits: jax.Array | None,
  *,
  model: Model,
  config: Config,
  value_weight: float,
  kl_weight: float,
  value_target: str = "teacher",
) -> tuple[jax.Array, dict]:
  """Cross-entropy of the student's policy to the teacher's search policy and of its value to the teacher's
  search value (value_target 'search') or predicted value ('teacher') as two-hot, averaged over kept states,
  plus kl_weight * KL(base || student) on anchor states."""
  policy_logits, value_logits = student_outputs(
    params, obs, reh.action, model=model, horizon=config.value_prefix_horizon
  )
  keep = reh.valid.astype(jnp.float32)
  kept = jnp.maximum(jnp.sum(keep), 1.0)
  ce = -jnp.sum(reh.policy * jax.nn.log_softmax(policy_logits), -1)
  target = reh.value if value_target == "search" else reh.predicted
  value_ce = -jnp.sum(support.scalar_to_probs(target, config.value_support) * jax.nn.log_softmax(value_logits), -1)
  loss = jnp.sum(keep * (ce + value_weight * value_ce)) / kept
  aux = {
    "distil/teacher_kl": jnp.sum(keep * kl_probs(reh.policy, policy_logits)) / kept,
    "distil/value_ce": jnp.sum(keep * value_ce) / kept,
    "distil/kept": jnp.mean(keep),
    "distil/search_minus_predicted": jnp.sum(keep * (reh.value - reh.predicted)) / kept,
  }
  if anchor_obs is not None:
    student_logits, _ = model.predict(params, model.represent(params, anchor_obs))
    drift = jnp.mean(kl(base_logits, student_logits))
    loss = loss + kl_weight * drift
    aux["distil/anchor_drift"] = drift
  aux["distil/loss"] = loss
  return loss, aux


def update(
  state: DistilState,
  teacher: Params,
  base: Params,
  rb: replay_lib.ReplayState,
  anchor: replay_lib.ReplayState | None,
  *,
  model: Model,
  config: Config,
  optimizer,
  dream,
) -> tuple:
  """One rehearse-and-distil update from `dream.roots` recorded roots (and as many anchor states)."""
  key, root_key, anchor_key, roll_key = jax.random.split(state.rng_key, 4)
  obs = sample_roots(rb, root_key, dream.roots, config.frame_stack)
  reh = rehearse(
    state.params,
    teacher,
    obs,
    roll_key,
    model=model,
    config=config,
    horizon=dream.horizon,
    num_simulations=dream.num_simulations,
    search_bonus=dream.search_bonus,
    guard=dream.guard,
    q_normalization=dream.q_normalization,
  )
  anchor_obs = base_logits = None
  if anchor is not None:
    anchor_obs = sample_roots(anchor, anchor_key, dream.roots, config.frame_stack)
    base_logits = jax.lax.stop_gradient(model.predict(base, model.represent(base, anchor_obs))[0])
  grads, aux = jax.grad(
    functools.partial(
      loss_fn,
      model=model,
      config=config,
      value_weight=dream.value_weight,
      kl_weight=dream.kl_weight,
      value_target=dream.value_target,
    ),
    has_aux=True,
  )(state.params, obs, reh, anchor_obs, base_logits)
  updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
  params = optax.apply_updates(state.params, updates)
  return DistilState(params, opt_state, key, state.updates + 1), aux


def model_steps_per_update(dream) -> int:
  """Imagined model steps (dynamics calls on one sample) of one update: the rollout in the teacher's model
  (R (H-1)) and in the student's (R (H-2): its last step is never read, and the compiler drops it), the
  teacher's search (R H simulations), the student's gradient unroll (R (H-1)). Anchor states are only
  represented, not imagined."""
  r, h = dream.roots, dream.horizon
  return 2 * r * (h - 1) + r * max(h - 2, 0) + r * h * dream.num_simulations


def forward_steps_per_update(dream) -> int:
  """`model_steps_per_update` in forward-pass equivalents: a model step that is also backpropagated (the
  student's gradient unroll, R (H-1)) counts 3 (forward and backward), the rest 1. The control is matched on
  these."""
  return model_steps_per_update(dream) + 2 * dream.roots * (dream.horizon - 1)


def make_distil_chunk(model: Model, config: Config, optimizer, dream, *, anchor: bool):
  """jit(state, teacher, base, rb, anchor_rb) -> (state, metrics f32[updates_per_chunk] each)."""
  step = functools.partial(update, model=model, config=config, optimizer=optimizer, dream=dream)

  def chunk(state, teacher, base, rb, anchor_rb):
    def body(s, _):
      return step(s, teacher, base, rb, anchor_rb if anchor else None)

    return jax.lax.scan(body, state, None, length=dream.updates_per_chunk)

  return jax.jit(chunk, donate_argnums=(0,))
