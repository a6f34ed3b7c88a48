"""Acting: one batched search per step for B environments, and evaluation with and without search."""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from dreamer import frames
from dreamer import search as search_lib
from dreamer.config import Config
from dreamer.networks import Model, Params

ActFn = Callable[[Params, jax.Array, jax.Array, float], search_lib.SearchOutput]


def make_act(model: Model, config: Config) -> ActFn:
  """jit(params, obs [B, ...], rng_key, temperature) -> SearchOutput; the key is consumed. With search
  'none' the policy network's prior stands in for the search (policy = its softmax, value = its value)."""

  def act(params, obs, rng_key, temperature):
    root = search_lib.make_root(model, params, obs)
    if config.search == "none":  # the policy-only baseline: sample the prior (argmax at temperature 0)
      sampled = jax.random.categorical(rng_key, root.prior_logits / jnp.maximum(temperature, 1e-6))
      action = jnp.where(temperature > 0, sampled, jnp.argmax(root.prior_logits, axis=-1)).astype(jnp.int32)
      return search_lib.SearchOutput(action, jax.nn.softmax(root.prior_logits), root.value)
    return search_lib.run_search(
      model, params, rng_key, root, temperature=temperature, noise=temperature > 0, **search_lib.settings(config)
    )

  return jax.jit(act)


def make_policy_act(model: Model) -> Callable[[Params, jax.Array], jax.Array]:
  """jit(params, obs [B, ...]) -> i32[B]: argmax of the policy network's logits, no search."""

  def act(params, obs):
    logits, _ = model.predict(params, model.represent(params, obs))
    return jnp.argmax(logits, axis=-1).astype(jnp.int32)

  return jax.jit(act)


def temperature(config: Config, env_step: int) -> float:
  """Acting temperature of the stage that `env_step` falls in."""
  fraction = env_step / config.total_env_steps
  stage = sum(fraction >= b for b in config.temperature_bounds)
  return float(config.temperatures[stage])


class EvalResult(NamedTuple):
  returns: np.ndarray  # f32[episodes]
  lengths: np.ndarray  # i32[episodes]
  env_steps: int  # real steps spent evaluating


def run_episodes(
  world,
  choose: Callable[[np.ndarray], np.ndarray],
  *,
  seed: int,
  max_steps: int,
  stack: int = 1,
  record: Callable[[], None] | None = None,
) -> EvalResult:
  """Plays exactly one episode in each of the world's envs (`choose` sees observations stacked `stack` frames
  deep); episodes still running at `max_steps` count with the return they have so far. Evaluation worlds
  give true scores as rewards (an Atari world in "eval" mode neither clips nor ends episodes at life loss).
  `record()` is called before every action of env 0's episode (a video's frames)."""
  obs = frames.start(world.reset(seed), stack)
  n = world.num_envs
  returns, lengths = np.zeros(n, np.float32), np.zeros(n, np.int32)
  running = np.ones(n, bool)
  steps = 0
  for _ in range(max_steps):
    if record is not None and running[0]:
      record()
    step = world.step(choose(obs))
    steps += int(running.sum())
    returns += np.where(running, step.reward, 0.0)
    lengths += running
    ended = step.terminated | step.truncated
    running &= ~ended
    obs = frames.push(obs, step.obs, ended, stack)
    if not running.any():
      break
  return EvalResult(returns, lengths, steps)


def evaluate(
  world,
  params: Params,
  act: ActFn,
  policy_act,
  rng_key: jax.Array,
  *,
  seed: int,
  max_steps: int,
  stack: int = 1,
  record: Callable[[], None] | None = None,
) -> dict[str, EvalResult]:
  """Returns of one episode per env, acting with search (greedy, no noise) and with the policy network alone;
  `record` (see `run_episodes`) sees env 0's episode acting with search."""
  keys = iter(jax.random.split(rng_key, max_steps))

  def with_search(obs):
    return np.asarray(act(params, obs, next(keys), 0.0).action)

  def with_policy(obs):
    return np.asarray(policy_act(params, obs))

  return {
    "search": run_episodes(world, with_search, seed=seed, max_steps=max_steps, stack=stack, record=record),
    "policy": run_episodes(world, with_policy, seed=seed, max_steps=max_steps, stack=stack),
  }
