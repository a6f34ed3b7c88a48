"""The learner: jit equals no-jit, losses fall when overfitting one batch, target-network sync."""

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import worlds
from dreamer import augment as augment_lib
from dreamer import config as config_lib
from dreamer import learner, replay
from dreamer import targets as targets_lib
from dreamer.agent import Agent

SMALL = dict(
  world="toy:chain",
  num_envs=4,
  latent_dim=16,
  hidden_dim=32,
  lstm_dim=16,
  proj_dim=16,
  value_support=5,
  reward_support=3,
  num_simulations=4,
  max_considered_actions=2,
  batch_size=16,
  replay_capacity=400,
  unroll_steps=3,
  td_steps=3,
  value_prefix_horizon=2,
  updates_per_chunk=2,
  target_update_interval=3,
  total_env_steps=1000,
  discount=0.9,
)


def _filled(config, steps=60, seed=0):
  """An agent, its initial state and a replay filled by a fixed random policy on the chain."""
  world = worlds.make(config.world, num_envs=config.num_envs, seed=seed)
  agent = Agent(config, world.spec)
  state, rb = agent.init(jax.random.PRNGKey(seed))
  rng = np.random.default_rng(seed)
  obs = world.reset(seed)
  a = world.spec.num_actions
  for t in range(steps):
    action = rng.integers(0, a, config.num_envs)
    step = world.step(action)
    policy = np.eye(a, dtype=np.float32)[rng.integers(0, a, config.num_envs)]  # one-hot: CE can reach 0
    row = replay.Rows(
      obs,
      action,
      step.reward,
      policy,
      np.zeros(config.num_envs, np.float32),
      np.zeros(config.num_envs, bool),
      np.zeros(config.num_envs, bool),
      np.full(config.num_envs, t * config.num_envs, np.int32),
    )
    rb = agent.add(rb, row, step.final_obs, step.terminated | step.truncated, step.terminated)
    obs = step.obs
  return agent, state, rb


@pytest.mark.slow
def test_jitted_update_equals_unjitted():
  config = config_lib.Config(
    **{**SMALL, "batch_size": 4, "num_simulations": 2}, reanalyze_fraction=0.5, td_age_steps=50
  )
  agent, state, rb = _filled(config)
  step = functools.partial(learner.update, model=agent.model, config=config, optimizer=agent.optimizer)
  env_step = jnp.int32(240)
  fast_state, fast_rb, fast_aux = jax.jit(step)(state, rb, env_step)
  with jax.disable_jit():
    slow_state, slow_rb, slow_aux = step(state, rb, env_step)
  for fast, slow in zip(jax.tree.leaves(fast_state.params), jax.tree.leaves(slow_state.params)):
    np.testing.assert_allclose(fast, slow, rtol=2e-4, atol=2e-6)
  np.testing.assert_allclose(fast_rb.priority, slow_rb.priority, rtol=2e-4, atol=1e-6)
  for key in fast_aux:
    np.testing.assert_allclose(fast_aux[key], slow_aux[key], rtol=2e-4, atol=1e-5)
  # The update changed something: parameters moved and sampled priorities were rewritten.
  moved = [
    np.abs(np.asarray(a) - np.asarray(b)).max()
    for a, b in zip(jax.tree.leaves(fast_state.params), jax.tree.leaves(state.params))
  ]
  assert max(moved) > 1e-4
  assert not np.array_equal(np.asarray(fast_rb.priority), np.asarray(rb.priority))


@pytest.mark.slow
def test_jitted_update_equals_unjitted_without_search():
  # The test above without search inside the update (reanalysis off).
  config = config_lib.Config(**{**SMALL, "batch_size": 4}, td_age_steps=50)
  agent, state, rb = _filled(config)
  step = functools.partial(learner.update, model=agent.model, config=config, optimizer=agent.optimizer)
  fast_state, fast_rb, fast_aux = jax.jit(step)(state, rb, jnp.int32(240))
  with jax.disable_jit():
    slow_state, slow_rb, slow_aux = step(state, rb, jnp.int32(240))
  for fast, slow in zip(jax.tree.leaves(fast_state.params), jax.tree.leaves(slow_state.params)):
    np.testing.assert_allclose(fast, slow, rtol=2e-4, atol=2e-6)
  np.testing.assert_allclose(fast_rb.priority, slow_rb.priority, rtol=2e-4, atol=1e-6)
  for key in fast_aux:
    np.testing.assert_allclose(fast_aux[key], slow_aux[key], rtol=2e-4, atol=1e-5)


def test_the_chunk_takes_the_runs_length_as_a_value_and_computes_what_a_compiled_in_length_does():
  # Runs that differ only in total_env_steps share one compiled chunk (one program for the suite's many short
  # runs over its compilation cache, and for a resume that extends a run); bit for bit, it computes the update
  # with the length compiled in. Uneven priorities, so that beta's annealing over the length shows.
  config = config_lib.Config(**{**SMALL, "total_env_steps": 3000, "updates_per_chunk": 1, "reanalyze_fraction": 0.0})
  agent, state, rb = _filled(config)
  scale = np.random.default_rng(0).uniform(0.2, 3.0, rb.priority.shape).astype(np.float32)
  rb = rb._replace(priority=rb.priority * scale)
  env_step = jnp.int32(900)
  chunk = learner.make_train_chunk(agent.model, config, agent.optimizer)
  longer = learner.make_train_chunk(agent.model, dataclasses.replace(config, total_env_steps=9000), agent.optimizer)
  assert chunk.lower(state, rb, env_step).as_text() == longer.lower(state, rb, env_step).as_text()
  update = functools.partial(learner.update, model=agent.model, config=config, optimizer=agent.optimizer)
  want_state, want_rb, _ = jax.jit(update)(state, rb, env_step)
  copy = lambda tree: jax.tree.map(jnp.array, tree)  # noqa: E731 - the chunk donates its inputs
  got_state, got_rb, _ = chunk(copy(state), copy(rb), env_step)
  for got, want in zip(jax.tree.leaves(got_state.params), jax.tree.leaves(want_state.params), strict=True):
    np.testing.assert_array_equal(got, want)
  np.testing.assert_array_equal(got_rb.priority, want_rb.priority)
  # The length reaches the update: another length, other weights.
  other, _, _ = longer(copy(state), copy(rb), env_step)
  assert any(not np.array_equal(x, y) for x, y in zip(jax.tree.leaves(other.params), jax.tree.leaves(got_state.params)))


def test_losses_fall_when_overfitting_one_batch():
  config = config_lib.Config(**SMALL)
  agent, state, rb = _filled(config)
  batch, _ = jax.jit(functools.partial(learner.make_batch, model=agent.model, config=config))(
    state, rb, jax.random.PRNGKey(1), jnp.int32(240)
  )
  opt = optax.adam(3e-3)
  loss = jax.jit(functools.partial(learner.loss_fn, model=agent.model, config=config))

  @jax.jit
  def fit(params, opt_state):
    grads, _ = jax.grad(functools.partial(learner.loss_fn, model=agent.model, config=config), has_aux=True)(
      params, batch
    )
    updates, opt_state = opt.update(grads, opt_state)
    return optax.apply_updates(params, updates), opt_state

  params, opt_state = state.params, opt.init(state.params)
  _, before = loss(params, batch)
  for _ in range(300):
    params, opt_state = fit(params, opt_state)
  _, after = loss(params, batch)
  for key in ["loss/value", "loss/policy", "loss/value_prefix"]:
    assert after[key] < 0.7 * before[key], (key, before[key], after[key])
  assert after["loss/consistency"] < before["loss/consistency"] - 0.05
  assert after["loss/total"] < 0.5 * before["loss/total"]


@pytest.mark.slow
def test_chunk_syncs_target_network_every_interval():
  config = config_lib.Config(**{**SMALL, "updates_per_chunk": 3, "target_update_interval": 3})
  agent, state, rb = _filled(config)
  new, rb, metrics = agent.train_chunk(state, rb, jnp.int32(240))
  assert int(new.updates) == 3
  for p, t in zip(jax.tree.leaves(new.params), jax.tree.leaves(new.target_params)):
    np.testing.assert_array_equal(p, t)
  config = config_lib.Config(**{**SMALL, "updates_per_chunk": 2, "target_update_interval": 3})
  agent, state, rb = _filled(config)
  init_params = jax.tree.map(np.asarray, state.params)
  new, rb, metrics = agent.train_chunk(state, rb, jnp.int32(240))
  for p, t in zip(jax.tree.leaves(init_params), jax.tree.leaves(new.target_params)):
    np.testing.assert_array_equal(p, t)
  assert all(v.shape == (2,) and np.isfinite(v).all() for v in jax.tree.leaves(metrics))


def test_batch_targets_equal_targets_from_every_rows_bootstrap():
  """make_batch evaluates the target network only at bootstrap rows; that must equal evaluating every row."""
  from dreamer import support, targets

  config = config_lib.Config(**{**SMALL, "td_age_steps": 40})
  agent, state, rb = _filled(config)
  key, env_step = jax.random.PRNGKey(5), jnp.int32(240)
  batch, smp = jax.jit(functools.partial(learner.make_batch, model=agent.model, config=config))(
    state, rb, key, env_step
  )
  window, known = replay.gather(rb, smp.env, smp.index, config.unroll_steps + config.td_steps + 1)
  m, tp = agent.model, state.target_params
  obs = window.obs.reshape(-1, *window.obs.shape[2:])
  every = support.logits_to_scalar(m.predict(tp, m.represent(tp, obs))[1]).reshape(known.shape)
  ref = targets.compute(
    window,
    known,
    every,
    env_step - window.step[:, 0],
    unroll_steps=config.unroll_steps,
    td_steps=config.td_steps,
    td_age_steps=config.td_age_steps,
    discount=config.discount,
    horizon=config.value_prefix_horizon,
  )
  np.testing.assert_allclose(batch.targets.value, ref.value, rtol=1e-5, atol=1e-6)
  assert float(jnp.abs(ref.value).max()) > 0.1  # bootstraps matter in this batch


def test_awr_policy_loss_equals_a_plain_reference():
  """search 'none': -min(exp(A / (T * rms A)), 20) * log pi(a_k | s_k) on rows with an action and a value
  target, 0 at row K; computed element by element in numpy."""
  rng = np.random.default_rng(0)
  b, k, a, v = 3, 2, 4, 5
  config = config_lib.Config(value_support=2, awr_temperature=0.7)
  policy_logits = rng.normal(size=(b, k + 1, a)).astype(np.float32)
  value_logits = rng.normal(size=(b, k + 1, v)).astype(np.float32)
  action = rng.integers(0, a, (b, k)).astype(np.int32)
  value = rng.normal(size=(b, k + 1)).astype(np.float32) * 3
  policy_mask = np.array([[1, 1, 1], [1, 0, 0], [1, 1, 0]], np.float32)
  value_mask = np.array([[1, 1, 1], [1, 1, 0], [0, 1, 1]], np.float32)
  tg = targets_lib.Targets(
    value=jnp.asarray(value),
    value_mask=jnp.asarray(value_mask),
    prefix=None,
    prefix_mask=None,
    policy_mask=jnp.asarray(policy_mask),
    obs_mask=None,
    td_steps=None,
  )
  got = np.asarray(
    learner._awr_loss(jnp.asarray(policy_logits), jnp.asarray(value_logits), jnp.asarray(action), tg, config)
  )
  atoms = np.arange(-2, 3, dtype=np.float64)
  inv = lambda y: np.sign(y) * (((np.sqrt(1 + 4 * 0.001 * (np.abs(y) + 1 + 0.001)) - 1) / (2 * 0.001)) ** 2 - 1)  # noqa: E731
  adv, mask = np.zeros((b, k)), np.zeros((b, k))
  for i in range(b):
    for j in range(k):
      probs = np.exp(value_logits[i, j] - value_logits[i, j].max())
      probs /= probs.sum()
      adv[i, j] = value[i, j] - inv(probs @ atoms)
      mask[i, j] = policy_mask[i, j] * value_mask[i, j]
  rms = np.sqrt((mask * adv**2).sum() / mask.sum())
  want = np.zeros((b, k + 1))
  for i in range(b):
    for j in range(k):
      logp = policy_logits[i, j] - np.log(np.exp(policy_logits[i, j]).sum())
      want[i, j] = -min(np.exp(adv[i, j] / (0.7 * rms)), 20.0) * mask[i, j] * logp[action[i, j]]
  np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
  assert (got[:, k] == 0).all() and got[1, 1] == 0 and got[2, 0] == 0  # masked rows


def _batch_and_outputs(config):
  """A filled replay's learner batch (fixed key, env step 240) and the training unroll's outputs on it:
  (agent, state, batch, (value, policy, prefix logits, online and target projections))."""
  agent, state, rb = _filled(config)
  batch, _ = jax.jit(functools.partial(learner.make_batch, model=agent.model, config=config))(
    state, rb, jax.random.PRNGKey(1), jnp.int32(240)
  )
  outs = learner.unroll_outputs(
    lambda method, *args: agent.model.call(state.params, method, *args, train=True)[0],
    batch.obs[:, 0],
    batch.obs[:, 1:],
    batch.action,
    horizon=config.value_prefix_horizon,
    lstm_dim=agent.model.lstm_dim,
  )
  return agent, state, batch, outs


def test_awr_weight_adds_exactly_the_awr_term_to_search_targets_cross_entropy():
  """awr_weight w: the policy loss of a search agent is CE(search target) + w * the AWR loss, element by element,
  and the same batch's other losses do not change; w = 0 is search's target alone."""
  base = config_lib.Config(**SMALL)
  _, _, batch, outs = _batch_and_outputs(base)

  def losses(config):
    return [np.asarray(x) for x in learner.depth_losses(*outs, batch, config)]

  plain = losses(base)
  mixed = losses(dataclasses.replace(base, awr_weight=0.5, awr_temperature=0.7))
  awr = np.asarray(
    learner._awr_loss(outs[1], outs[0], batch.action, batch.targets, dataclasses.replace(base, awr_temperature=0.7))
  )
  ce = np.asarray(learner._cross_entropy(outs[1], batch.policy) * batch.targets.policy_mask)
  np.testing.assert_allclose(plain[1], ce, rtol=1e-6)
  np.testing.assert_allclose(mixed[1], ce + 0.5 * awr, rtol=1e-5, atol=1e-6)
  assert np.abs(awr).max() > 1e-2  # the term is not empty on this batch
  for i in (0, 2, 3):
    np.testing.assert_array_equal(mixed[i], plain[i])


def test_policy_entropy_weight_subtracts_the_policys_entropy_where_it_has_a_target():
  """policy_entropy_weight w: the policy loss is today's minus w * H(softmax(logits)) at every step with a
  policy target, against a numpy entropy, for search's target and for search 'none''s AWR loss; the other
  losses do not move, and the logged root entropy is the numpy one's masked mean."""
  base = config_lib.Config(**SMALL)
  agent, state, batch, outs = _batch_and_outputs(base)
  # The policy head starts at uniform: random logits of the same shape give the entropy something to vary.
  outs = (outs[0], jax.random.normal(jax.random.PRNGKey(3), outs[1].shape) * 2.0, *outs[2:])
  logits = np.asarray(outs[1], np.float64)
  p = np.exp(logits - logits.max(-1, keepdims=True))
  p /= p.sum(-1, keepdims=True)
  entropy = -(p * np.log(p)).sum(-1)  # [B, K+1]
  tg = batch.targets
  mask = np.asarray(tg.policy_mask)
  # The AWR loss has a target where there are policy and value targets and an action (not the last row).
  awr_mask = mask * np.asarray(tg.value_mask)
  awr_mask[:, -1] = 0
  assert entropy.std() > 1e-3 and 0 < mask.sum() < mask.size and awr_mask.sum() < mask.sum()
  for search, target_mask in (("gumbel", mask), ("none", awr_mask)):
    plain_config = dataclasses.replace(base, search=search)
    plain = [np.asarray(x) for x in learner.depth_losses(*outs, batch, plain_config)]
    bonus_config = dataclasses.replace(plain_config, policy_entropy_weight=0.3)
    bonus = [np.asarray(x) for x in learner.depth_losses(*outs, batch, bonus_config)]
    np.testing.assert_allclose(bonus[1], plain[1] - 0.3 * entropy * target_mask, rtol=1e-5, atol=1e-6)
    for i in (0, 2, 3):
      np.testing.assert_array_equal(bonus[i], plain[i])
  leaves, tree = jax.tree.flatten(state.params)  # perturbed, so the logged root entropy varies by row too
  keys = jax.random.split(jax.random.PRNGKey(4), len(leaves))
  params = jax.tree.unflatten(tree, [x + 0.3 * jax.random.normal(k, x.shape) for x, k in zip(leaves, keys)])
  # Rows 0-4 lose their root policy target: the record is a mean over the others only.
  root_mask = np.asarray(tg.policy_mask).copy()
  root_mask[:5, 0] = 0
  batch = batch._replace(targets=tg._replace(policy_mask=jnp.asarray(root_mask)))
  aux = jax.jit(functools.partial(learner.loss_fn, model=agent.model, config=base))(params, batch)[1]
  root = np.asarray(agent.model.predict(params, agent.model.represent(params, batch.obs[:, 0]))[0], np.float64)
  q = np.exp(root - root.max(-1, keepdims=True))
  q /= q.sum(-1, keepdims=True)
  root_entropy = -(q * np.log(q)).sum(-1)
  assert root_entropy.std() > 1e-3
  expected = (root_entropy * root_mask[:, 0]).sum() / root_mask[:, 0].sum()
  assert abs(expected - root_entropy.mean()) > 1e-4  # a plain mean would not pass
  np.testing.assert_allclose(float(aux["train/policy_entropy"]), expected, rtol=1e-4)


def test_priority_reward_weight_adds_the_largest_value_prefix_error_to_the_value_error():
  """priority_reward_weight w: a row's priority is |root value error| + w * max over the unroll of the masked
  |value-prefix error|, against a numpy reference from the same logits; w = 0 leaves the value error alone and
  the losses do not depend on w."""
  base = config_lib.Config(**SMALL)
  agent, state, batch, outs = _batch_and_outputs(base)

  def expected_scalar(logits):  # the support's expectation and h^-1, by hand
    logits = np.asarray(logits, np.float64)
    size = (logits.shape[-1] - 1) // 2
    p = np.exp(logits - logits.max(-1, keepdims=True))
    x = (p / p.sum(-1, keepdims=True)) @ np.arange(-size, size + 1)
    eps = 0.001  # EfficientZero's h(x) = sign(x)(sqrt(|x| + 1) - 1) + eps x, inverted
    return np.sign(x) * (((np.sqrt(1 + 4 * eps * (np.abs(x) + 1 + eps)) - 1) / (2 * eps)) ** 2 - 1)

  tg = batch.targets
  value_error = np.abs(expected_scalar(outs[0][:, 0]) - np.asarray(tg.value[:, 0]))
  prefix_error = np.abs(expected_scalar(outs[2]) - np.asarray(tg.prefix)) * np.asarray(tg.prefix_mask)
  assert prefix_error.max() > 1e-2  # the term is not empty on this batch

  def aux(config):
    return jax.jit(functools.partial(learner.loss_fn, model=agent.model, config=config))(state.params, batch)[1]

  plain, weighted = aux(base), aux(dataclasses.replace(base, priority_reward_weight=0.5))
  np.testing.assert_allclose(plain["priority"], value_error, rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(weighted["priority"], value_error + 0.5 * prefix_error.max(1), rtol=1e-4, atol=1e-5)
  for key in ("loss/total", "loss/value", "loss/policy", "loss/value_prefix", "loss/consistency"):
    assert float(weighted[key]) == float(plain[key])


def _bn_state(state):
  return {k: v for k, v in state.params.items() if k != "params"}


def test_batchnorm_update_keeps_the_forward_pass_running_averages_untouched_by_the_optimizer():
  # SGD with momentum and a large weight decay: running averages must be exactly those the training-mode
  # forward pass left, neither decayed nor stepped.
  config = config_lib.Config(**SMALL, norm="batch", optimizer="sgd", weight_decay=0.5, learning_rate=0.1)
  agent, state, rb = _filled(config)
  assert set(state.params) == {"params", "batch_stats"}
  env_step = jnp.int32(240)
  step = jax.jit(functools.partial(learner.update, model=agent.model, config=config, optimizer=agent.optimizer))
  new, _, _ = step(state, rb, env_step)
  # The same batch and forward pass, by hand.
  _, batch_key = jax.random.split(state.rng_key)
  batch, _ = jax.jit(functools.partial(learner.make_batch, model=agent.model, config=config))(
    state, rb, batch_key, env_step
  )
  _, aux = jax.jit(functools.partial(learner.loss_fn, model=agent.model, config=config))(state.params, batch)
  stats = jax.tree.leaves(_bn_state(new))
  for got, want in zip(stats, jax.tree.leaves(aux["moved"])):
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
  # They moved (means start at 0, variances at 1), and so did the learned parameters.
  assert (
    max(np.abs(np.asarray(a) - np.asarray(b)).max() for a, b in zip(stats, jax.tree.leaves(_bn_state(state)))) > 1e-3
  )
  assert (
    max(
      np.abs(np.asarray(a) - np.asarray(b)).max()
      for a, b in zip(jax.tree.leaves(new.params["params"]), jax.tree.leaves(state.params["params"]))
    )
    > 1e-4
  )


def test_batchnorm_running_average_follows_pytorch_momentum():
  # After one training-mode call the running mean is 0.9 * old + 0.1 * the batch mean (PyTorch's momentum
  # 0.1), and an eval-mode call reads it: a sample's output no longer depends on the rest of its batch.
  config = config_lib.Config(**SMALL, norm="batch")
  agent, state, rb = _filled(config)
  model, params = agent.model, state.params
  obs = jax.random.normal(jax.random.PRNGKey(3), (8, 6)) * 3.0 + 1.0
  _, moved = model.call(params, "represent", obs, train=True)
  # The first norm of the representation MLP reads Dense_0(obs): its batch mean is the reference.
  dense = params["params"]["repr_net"]["Dense_0"]
  pre = np.asarray(obs) @ np.asarray(dense["kernel"]) + np.asarray(dense["bias"])
  np.testing.assert_allclose(
    moved["batch_stats"]["repr_net"]["BatchNorm_0"]["mean"], 0.1 * pre.mean(0), rtol=1e-4, atol=1e-5
  )
  np.testing.assert_allclose(
    moved["batch_stats"]["repr_net"]["BatchNorm_0"]["var"], 0.9 + 0.1 * pre.var(0), rtol=1e-4, atol=1e-5
  )
  alone = model.represent(moved, obs[:1])
  np.testing.assert_allclose(alone, model.represent(moved, obs)[:1], rtol=1e-5, atol=1e-6)
  train_alone, _ = model.call(moved, "represent", obs[:2], train=True)
  train_all, _ = model.call(moved, "represent", obs, train=True)
  assert not np.allclose(train_alone[:1], train_all[:1], atol=1e-3)  # batch statistics couple samples


def _old_unroll(call, root_obs, next_obs, action, *, horizon, lstm_dim):
  """The learner's unroll as it was written before networks.unroll (commit a046f0f), kept as the reference:
  each depth's dynamics, projection and prediction in turn, the LSTM reset inline."""
  from dreamer.networks import zero_lstm_state

  k_max, b = action.shape[1], root_obs.shape[0]
  target_proj = jax.lax.stop_gradient(learner._flat(lambda o: call("project", call("represent", o), False), next_obs))
  latent = call("represent", root_obs)
  lstm = zero_lstm_state(b, lstm_dim)
  value_logits, policy_logits, prefix_logits, online_proj = [], [], [], []
  for k in range(k_max + 1):
    if k > 0:
      if (k - 1) % horizon == 0:
        lstm = zero_lstm_state(b, lstm_dim)
      latent, lstm, prefix = call("dynamics", latent, action[:, k - 1], lstm)
      latent = learner.scale_gradient(latent, 0.5)
      prefix_logits.append(prefix)
      online_proj.append(call("project", latent, True))
    logits, value = call("predict", latent)
    policy_logits.append(logits)
    value_logits.append(value)
  stack = functools.partial(jnp.stack, axis=1)
  return stack(value_logits), stack(policy_logits), stack(prefix_logits), stack(online_proj), target_proj


@pytest.mark.parametrize("norm, horizon", [("layer", 2), ("layer", 1), ("batch", 2)])
def test_one_unroll_equals_the_old_learner_unroll(norm, horizon):
  # On a fixed batch, in training mode (BatchNorm's running averages threaded through every call): the same
  # outputs, the same moved running averages and the same gradients, to the bit.
  config = config_lib.Config(**{**SMALL, "value_prefix_horizon": horizon, "norm": norm})
  agent, state, rb = _filled(config)
  batch, _ = learner.make_batch(state, rb, jax.random.PRNGKey(7), jnp.int32(240), model=agent.model, config=config)

  def outputs(unroll, params):
    variables = params

    def call(method, *args):
      nonlocal variables
      out, variables = agent.model.call(variables, method, *args, train=True)
      return out

    outs = unroll(call, batch.obs[:, 0], batch.obs[:, 1:], batch.action, horizon=horizon, lstm_dim=config.lstm_dim)
    return sum(jnp.sum(jnp.sin(o)) for o in outs), (outs, variables)

  results = []
  for unroll in (_old_unroll, learner.unroll_outputs):
    grads, (outs, variables) = jax.jit(jax.grad(functools.partial(outputs, unroll), has_aux=True))(state.params)
    results.append((outs, variables, grads))
  (old_outs, old_vars, old_grads), (new_outs, new_vars, new_grads) = results
  assert [o.shape for o in new_outs] == [o.shape for o in old_outs]
  for tree_old, tree_new in [(old_outs, new_outs), (old_vars, new_vars), (old_grads, new_grads)]:
    for a, b in zip(jax.tree.leaves(tree_old), jax.tree.leaves(tree_new), strict=True):
      np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("parts, shrink", [("heads", 0.0), ("model", 0.5)])
def test_reset_touches_exactly_its_parts_on_schedule(parts, shrink):
  # Against a plain reference: the same updates without resets, and a fresh initialisation from the key the
  # reset derives. Updates 1 and 2 are untouched; after update 3 (reset_interval 3) the chosen leaves are
  # shrink * theirs + (1 - shrink) * fresh, every other leaf (and the target) exactly as without the reset.
  base = {**SMALL, "target_update_interval": 50}  # no target sync within the 3 updates
  on = config_lib.Config(**base, reset_interval=3, reset_parts=parts, reset_shrink=shrink)
  off = config_lib.Config(**base)
  agent, state, rb = _filled(off)
  env_step = jnp.int32(240)
  step_on = jax.jit(functools.partial(learner.update, model=agent.model, config=on, optimizer=agent.optimizer))
  step_off = jax.jit(functools.partial(learner.update, model=agent.model, config=off, optimizer=agent.optimizer))
  s_on, s_off, r_on, r_off = state, state, rb, rb
  for count in (1, 2, 3):
    key_before = s_off.rng_key
    s_on, r_on, _ = step_on(s_on, r_on, env_step)
    s_off, r_off, _ = step_off(s_off, r_off, env_step)
    if count < 3:
      for a, b in zip(jax.tree.leaves(s_on.params), jax.tree.leaves(s_off.params), strict=True):
        np.testing.assert_array_equal(a, b)
  _, batch_key = jax.random.split(key_before)
  fresh = learner.init_params(agent.net, jax.random.fold_in(batch_key, 2), agent.obs_shape)
  mask = learner.distil_parts.part_mask(s_off.params, learner.reset_parts(parts))
  touched = 0
  for got, old, new, m in zip(*(jax.tree.leaves(t) for t in (s_on.params, s_off.params, fresh, mask)), strict=True):
    if m:
      touched += 1
      np.testing.assert_allclose(got, shrink * old + (1.0 - shrink) * new, rtol=1e-6, atol=1e-7)
      assert not np.array_equal(got, old)
    else:
      np.testing.assert_array_equal(got, old)
  assert 0 < touched < len(jax.tree.leaves(mask))
  for a, b in zip(jax.tree.leaves(s_on.target_params), jax.tree.leaves(s_off.target_params), strict=True):
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("kind", ["search", "mixed"])
def test_search_value_targets_replace_exactly_the_reanalysed_stale_rows(kind):
  """EfficientZero V2's value targets: a reanalysed sample's rows that have an action take the reanalysis
  search's root value ('mixed': only samples older than search_value_age); everything else keeps its n-step
  target. The reference reruns the reanalysis search by hand."""
  from dreamer import search as search_lib

  base = {**SMALL, "reanalyze_fraction": 0.5, "num_simulations": 4, "search_value_age": 120}
  td_config = config_lib.Config(**base)
  config = config_lib.Config(**base, value_target=kind)
  agent, state, rb = _filled(config)
  key, env_step = jax.random.PRNGKey(7), jnp.int32(240)
  td_batch, _ = learner.make_batch(state, rb, key, env_step, model=agent.model, config=td_config)
  batch, smp = learner.make_batch(state, rb, key, env_step, model=agent.model, config=config)
  np.testing.assert_array_equal(batch.policy, td_batch.policy)  # the policy targets do not change

  num_re, k1 = config.batch_size // 2, config.unroll_steps + 1
  obs = batch.obs[:num_re].reshape(-1, *batch.obs.shape[2:])
  root = search_lib.make_root(agent.model, state.params, obs)
  fresh = search_lib.run_search(
    agent.model, state.params, jax.random.split(key)[1], root, temperature=1.0, noise=True,
    **search_lib.settings(config),
  )  # fmt: skip
  root_value = np.asarray(fresh.value).reshape(num_re, k1)
  age = np.asarray(env_step - replay.gather(rb, smp.env, smp.index, 1)[0].step[:, 0])
  want = np.array(td_batch.targets.value)
  for i in range(num_re):
    for k in range(k1):
      stale = kind == "search" or age[i] > config.search_value_age
      if stale and batch.targets.policy_mask[i, k] > 0:
        want[i, k] = root_value[i, k]
  np.testing.assert_allclose(batch.targets.value, want, rtol=1e-5, atol=1e-6)
  changed = np.abs(np.asarray(batch.targets.value) - np.asarray(td_batch.targets.value)) > 1e-4
  assert changed[:num_re].any() and not changed[num_re:].any()
  if kind == "mixed":  # both kinds of sample are in the batch, and the fresh ones keep their n-step targets
    fresh_rows = age[:num_re] <= config.search_value_age
    assert fresh_rows.any() and (~fresh_rows).any() and not changed[:num_re][fresh_rows].any()


def test_search_value_target_needs_a_reanalysis_search():
  for bad in (dict(reanalyze_fraction=0.0), dict(reanalyze_fraction=0.5, search="none")):
    with pytest.raises(config_lib.ConfigError, match="value_target 'mixed' takes its values from the reanalysis"):
      config_lib.Config(**{**SMALL, **bad}, value_target="mixed")


def _filled_with_head(config, plain, head: str):
  """`_filled(config)`, checking that its network has the module `head` which `plain`'s (the same config
  without the head's weight) lacks, and that every other initial parameter is plain's."""
  agent, state, rb = _filled(config)
  _, plain_state, _ = _filled(plain)
  assert head in state.params["params"] and head not in plain_state.params["params"]
  rest = {k: v for k, v in state.params["params"].items() if k != head}
  for a, b in zip(jax.tree.leaves(rest), jax.tree.leaves(plain_state.params["params"]), strict=True):
    np.testing.assert_array_equal(a, b)
  return agent, state, rb


def test_terminal_loss_weight_adds_the_heads_masked_cross_entropy():
  # The loss at terminal_loss_weight 3 is the loss at 1 plus 2 * mean_b weight_b * sum_k obs_mask[b, k+1] *
  # BCE(logit[b, k], terminal[b, k]) / K, with the logits read off the training unroll and the BCE written in
  # numpy; the chain's replay holds terminal targets of both kinds. Without the weight there is no head, and the
  # head leaves every other initial parameter as it was.
  config = config_lib.Config(**SMALL, terminal_loss_weight=1.0)
  agent, state, rb = _filled_with_head(config, config_lib.Config(**SMALL), "end_head")
  batch, _ = learner.make_batch(state, rb, jax.random.PRNGKey(1), jnp.int32(240), model=agent.model, config=config)
  tg = batch.targets
  mask, target = np.asarray(tg.obs_mask[:, 1:]), np.asarray(tg.terminal)
  assert (target * mask).sum() >= 1 and ((1 - target) * mask).sum() >= 1
  outs = learner.unroll_outputs(
    lambda method, *args: agent.model.call(state.params, method, *args, train=True)[0],
    batch.obs[:, 0], batch.obs[:, 1:], batch.action,
    horizon=config.value_prefix_horizon, lstm_dim=agent.model.lstm_dim, terminal=True,
  )  # fmt: skip
  x = np.asarray(outs[5], np.float64)
  bce = -(target * np.log(1 / (1 + np.exp(-x))) + (1 - target) * np.log(1 / (1 + np.exp(x))))
  per_sample = (bce * mask).sum(1) / config.unroll_steps
  losses = {}
  for w in (1.0, 3.0):
    c = dataclasses.replace(config, terminal_loss_weight=w)
    losses[w] = learner.loss_fn(state.params, batch, model=agent.model, config=c)
  weighted = float(np.mean(np.asarray(batch.weight) * per_sample))
  assert float(losses[3.0][0] - losses[1.0][0]) == pytest.approx(2.0 * weighted, rel=1e-4)
  assert float(losses[1.0][1]["loss/terminal"]) == pytest.approx(float(per_sample.mean()), rel=1e-5)


@pytest.mark.parametrize(
  "world, augment", [("toy:chain", False), ("minatar:Breakout", False), ("minatar:Breakout", True)]
)
def test_obs_loss_weight_adds_the_decoders_masked_reconstruction_loss(world, augment):
  # The loss at obs_loss_weight 3 is the loss at 1 plus 2 * mean_b weight_b * sum_k scale_k * obs_mask[b, k] *
  # sum_n err(decoded[b, k, n], target[b, k, n]), scale 1 at the root and 1/K after it, the decoded observations
  # read off the training unroll and err written in numpy: squared error on the chain's float observations,
  # binary cross-entropy of logits on MinAtar's bool frames. The targets are the stored frames; with the shift
  # augmentation every row of a sample is shifted by the root's offset (numpy's clip-indexing here), so row 0 is
  # the frame the network saw. Without the weight there is no decoder, and the decoder leaves every other initial
  # parameter as it was.
  if world.startswith("minatar:"):
    pytest.importorskip("minatar")
  shift = dict(augment=True, augment_shift=1, augment_intensity=0.0) if augment else {}
  base = {**SMALL, "world": world, **shift}
  config = config_lib.Config(**base, obs_loss_weight=1.0)
  agent, state, rb = _filled_with_head(config, config_lib.Config(**base), "decoder")
  batch, _ = learner.make_batch(state, rb, jax.random.PRNGKey(1), jnp.int32(240), model=agent.model, config=config)
  obs = np.asarray(batch.obs)
  root_obs, next_obs, aug_key = batch.obs[:, 0], batch.obs[:, 1:], None
  if augment:  # the inputs as loss_fn makes them
    aug_key = jax.random.PRNGKey(5)
    root_key, next_key = jax.random.split(aug_key)
    root_obs = augment_lib.augment(root_obs, root_key, pad=1, scale=0.0)
    next_obs = augment_lib.augment(next_obs, next_key, pad=1, scale=0.0)
    offset = np.asarray(jax.random.randint(jax.random.split(root_key)[0], (obs.shape[0], 2), 0, 3)) - 1
    assert np.any(offset != 0)
    h, w = obs.shape[-3:-1]
    shifted = [o[..., np.clip(np.arange(h) + dy, 0, h - 1), :, :][..., np.clip(np.arange(w) + dx, 0, w - 1), :]
               for o, (dy, dx) in zip(obs, offset)]  # fmt: skip
    obs = np.stack(shifted)
    np.testing.assert_array_equal(obs[:, 0], np.asarray(root_obs))
  outs = learner.unroll_outputs(
    lambda method, *args: agent.model.call(state.params, method, *args, train=True)[0],
    root_obs, next_obs, batch.action,
    horizon=config.value_prefix_horizon, lstm_dim=agent.model.lstm_dim, decode=True,
  )  # fmt: skip
  x = np.asarray(outs[-1], np.float64)
  target = obs.reshape(*obs.shape[:2], -1).astype(np.float64)
  assert x.shape == target.shape == (config.batch_size, config.unroll_steps + 1, int(np.prod(agent.obs_shape)))
  if world.startswith("minatar:"):
    assert np.asarray(batch.obs).dtype == np.bool_
    err = -(target * np.log(1 / (1 + np.exp(-x))) + (1 - target) * np.log(1 / (1 + np.exp(x))))
  else:
    err = np.square(x - target)
  mask = np.asarray(batch.targets.obs_mask)
  assert mask.min() == 0.0  # some unrolled rows left the root's episode: the mask matters here
  scale = np.array([1.0] + [1.0 / config.unroll_steps] * config.unroll_steps)
  per_sample = (err.sum(-1) * mask) @ scale
  losses = {}
  for w in (1.0, 3.0):
    c = dataclasses.replace(config, obs_loss_weight=w)
    losses[w] = learner.loss_fn(state.params, batch, aug_key, model=agent.model, config=c)
  weighted = float(np.mean(np.asarray(batch.weight) * per_sample))
  assert float(losses[3.0][0] - losses[1.0][0]) == pytest.approx(2.0 * weighted, rel=1e-4)
  assert float(losses[1.0][1]["loss/obs"]) == pytest.approx(float(per_sample.mean()), rel=1e-5)


def test_obs_loss_weight_needs_the_mlp_network():
  with pytest.raises(config_lib.ConfigError, match="obs_loss_weight decodes the 'mlp' network's flat latent"):
    config_lib.Config(**SMALL, network="resnet", obs_loss_weight=1.0)
  with pytest.raises(config_lib.ConfigError, match="obs_loss_weight must be >= 0"):
    config_lib.Config(**SMALL, obs_loss_weight=-1.0)
