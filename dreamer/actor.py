"""Acting: one batched search per step for B environments, and evaluation with and without search."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, NamedTuple, Protocol

import jax
import jax.numpy as jnp
import numpy as np

from dreamer import dream_ratio, frames, support
from dreamer import search as search_lib
from dreamer.config import Config
from dreamer.networks import Model, Params


class ActFn(Protocol):
  """(params, obs [B, ...], rng_key, temperature, held f32[B, A] | None) -> SearchOutput (`make_act`)."""

  def __call__(
    self,
    params: Params,
    obs: jax.Array,
    rng_key: jax.Array,
    temperature: jax.Array | float,
    held: jax.Array | None = None,
  ) -> search_lib.SearchOutput: ...


def make_act(model: Model, config: Config) -> ActFn:
  """jit(params, obs [B, ...], rng_key, temperature, held=None) -> SearchOutput; the key is consumed. With
  search 'none' the policy network's prior stands in for the search (policy = its softmax, value = its
  value). held: f32[B, A] Gumbel noise held per env (`config.noise_hold`), used by Gumbel search in place of a
  fresh draw; None: drawn afresh."""

  def act(params, obs, rng_key, temperature, held=None):
    if config.search == "none":  # the policy-only baseline: sample the policy (argmax at temperature 0)
      logits, value_logits = model.predict(params, model.represent(params, obs))  # the acting head, not search's
      value = support.logits_to_scalar(value_logits)
      sampled = jax.random.categorical(rng_key, logits / jnp.maximum(temperature, 1e-6))
      action = jnp.where(temperature > 0, sampled, jnp.argmax(logits, axis=-1)).astype(jnp.int32)
      return search_lib.SearchOutput(action, jax.nn.softmax(logits), value, jnp.zeros_like(value))
    root = search_lib.make_root(model, params, obs)
    return search_lib.run_search(
      model, params, rng_key, root, temperature=temperature, noise=temperature > 0, held=held,
      **search_lib.settings(config),
    )  # fmt: skip

  return jax.jit(act)


def policy_only(config: Config) -> Config:
  """`config` acting as the search 'none' baseline does: sampling the policy network (its argmax at
  temperature 0), whatever search it was trained or evaluates with."""
  return dataclasses.replace(config, search="none", train_search=True)


def make_policy_act(model: Model) -> Callable[[Params, jax.Array], jax.Array]:
  """jit(params, obs [B, ...]) -> i32[B]: argmax of the policy network's logits, no search."""

  def act(params, obs):
    logits, _ = model.predict(params, model.represent(params, obs))
    return jnp.argmax(logits, axis=-1).astype(jnp.int32)

  return jax.jit(act)


def make_sampled_policy_act(
  model: Model, config: Config, rng_key: jax.Array, temperature: float, steps: int
) -> Callable[[Params, jax.Array], np.ndarray]:
  """(params, obs [B, ...]) -> i32[B]: the policy network alone, sampling softmax(logits / temperature) (the
  `search = "none"` baseline's acting), one key of `rng_key`'s `steps` split keys per call."""
  sample = make_act(model, policy_only(config))
  keys = iter(jax.random.split(rng_key, steps))
  return lambda params, obs: np.asarray(sample(params, obs, next(keys), temperature).action)


def temperature(config: Config, env_step: int) -> float:
  """Training's acting temperature at `env_step`: that of the stage it falls in, or 1 when training acts with
  the policy network alone (search 'none', `train_search` off). That policy learns by regression onto the
  actions it took, so acting at T < 1 would make each fit a sharper copy of itself, pi^(1/T), compounding with
  every update: KungFuMaster's policy-only run collapsed that way once the schedule reached 0.25."""
  if not dream_ratio.trains_with_search(config):
    return 1.0
  fraction = env_step / config.total_env_steps
  stage = sum(fraction >= b for b in config.temperature_bounds)
  return float(config.temperatures[stage])


def holds_noise(config: Config) -> bool:
  """Whether training holds acting's Gumbel noise per env (`noise_hold` 'episode' and a search in training)."""
  return config.noise_hold == "episode" and dream_ratio.trains_with_search(config)


def make_held_draw(config: Config, num_actions: int) -> Callable[[jax.Array], tuple[jax.Array, jax.Array]]:
  """jit(rng_key) -> (redraw bool[N], noise f32[N, A]) for all `config.num_envs` envs (every process draws
  them all and keeps its own rows): whether each env's held noise is redrawn now though its episode goes on
  (probability `noise_redraw`), and fresh standard Gumbel noise (`noise_hold` 'episode')."""

  def draw(rng_key):
    k_redraw, k_noise = jax.random.split(rng_key)
    redraw = jax.random.uniform(k_redraw, (config.num_envs,)) < config.noise_redraw
    return redraw, jax.random.gumbel(k_noise, (config.num_envs, num_actions))

  return jax.jit(draw)


class Repeats(NamedTuple):
  """Exploratory repeats (ez-greedy) of B envs: the action each holds and the steps it still runs (0: none)."""

  action: np.ndarray  # i32[B]
  left: np.ndarray  # i32[B]

  @classmethod
  def none(cls, b: int) -> Repeats:
    return cls(np.zeros(b, np.int32), np.zeros(b, np.int32))


def explore_epsilon(config: Config, env_step: int) -> float:
  """The probability of starting an exploratory repeat at `env_step`: explore_epsilon, falling linearly to 0
  over explore_decay_steps when that is set."""
  if config.explore_decay_steps == 0:
    return config.explore_epsilon
  return config.explore_epsilon * max(0.0, 1.0 - env_step / config.explore_decay_steps)


def make_explore(config: Config, num_actions: int) -> Callable[[jax.Array, float], tuple[np.ndarray, ...]]:
  """jit(rng_key, epsilon) -> (start bool[N], action i32[N], duration i32[N]) for all `config.num_envs` envs
  (every process draws them all and keeps its own rows): whether each env would start a repeat now, its
  action (uniform) and its duration (P(n) proportional to n^-explore_zeta on 1..explore_max_repeat)."""
  n = config.num_envs
  log_p = -config.explore_zeta * jnp.log(jnp.arange(1, config.explore_max_repeat + 1, dtype=jnp.float32))

  def draw(rng_key, epsilon):
    k_start, k_action, k_duration = jax.random.split(rng_key, 3)
    start = jax.random.uniform(k_start, (n,)) < epsilon
    action = jax.random.randint(k_action, (n,), 0, num_actions, dtype=jnp.int32)
    duration = jax.random.categorical(k_duration, log_p, shape=(n,)).astype(jnp.int32) + 1
    return start, action, duration

  return jax.jit(draw)


def explore(
  chosen: np.ndarray, repeats: Repeats, *, start: np.ndarray, action: np.ndarray, duration: np.ndarray
) -> tuple[np.ndarray, Repeats, np.ndarray]:
  """(the actions taken i32[B], the repeats after this step, which envs a repeat moved bool[B]): an env with
  no repeat running starts the drawn one (`action`, `duration`) where `start` bool[B]; an env with a repeat
  running takes its action (this step counts as one of its duration); the others take `chosen`, the search's
  action."""
  begin = (repeats.left == 0) & start
  held = np.where(begin, action, repeats.action).astype(np.int32)
  left = np.where(begin, duration, repeats.left).astype(np.int32)
  running = left > 0
  taken = np.where(running, held, chosen).astype(np.int32)
  after = Repeats(np.where(running, held, 0).astype(np.int32), np.maximum(left - 1, 0).astype(np.int32))
  return taken, after, running


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
  after: Callable[[np.ndarray, Any, np.ndarray], None] | None = None,
) -> EvalResult:
  """Plays exactly one episode in each of the world's envs (`choose` sees observations stacked `stack` frames
  deep); episodes still running at `max_steps` count with the return they have so far. Evaluation worlds
  give true scores as rewards (an Atari world in "eval" mode neither clips nor ends episodes at life loss).
  `record()` is called before every action of env 0's episode (a video's frames); `after(action i32[B], step,
  running bool[B])` after every step, with the envs whose episode was still running when it was taken."""
  obs = frames.start(world.reset(seed), stack)
  n = world.num_envs
  returns, lengths = np.zeros(n, np.float32), np.zeros(n, np.int32)
  running = np.ones(n, bool)
  steps = 0
  for _ in range(max_steps):
    if record is not None and running[0]:
      record()
    action = choose(obs)
    step = world.step(action)
    if after is not None:
      after(action, step, running.copy())
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
  temperature: float = 0.0,
) -> dict[str, EvalResult]:
  """Returns of one episode per env, acting with search and with the policy network alone (`policy_act`);
  `record` (see `run_episodes`) sees env 0's episode acting with search. At `temperature` 0 (the protocol)
  search is greedy, without noise; above 0 it samples as acting does, with its noise scaled by it."""
  keys = iter(jax.random.split(rng_key, max_steps))

  def with_search(obs):
    return np.asarray(act(params, obs, next(keys), temperature).action)

  def with_policy(obs):
    return np.asarray(policy_act(params, obs))

  return {
    "search": run_episodes(world, with_search, seed=seed, max_steps=max_steps, stack=stack, record=record),
    "policy": run_episodes(world, with_policy, seed=seed, max_steps=max_steps, stack=stack),
  }
