"""The training loop: a thin host loop around jitted acting, replay insertion and chunks of learner updates.

Per iteration the actor runs one batched search for all envs and steps them; the replay-ratio scheduler
owes `updates_per_env_step` updates per env step and pays them in jitted chunks of `updates_per_chunk`.
Evaluation (with search and with the policy network alone) runs every `eval_every` env steps.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

import worlds
from dreamer import actor as actor_lib
from dreamer import checkpoint
from dreamer import learner as learner_lib
from dreamer import replay as replay_lib
from dreamer.config import Config
from dreamer.logger import Logger
from dreamer.networks import Model, init_params, make_network


class Agent:
  """Everything built from a config and a world spec: the model and its jitted functions."""

  def __init__(self, config: Config, spec: worlds.Spec):
    self.config = config
    self.spec = spec
    self.net = make_network(config, spec.num_actions)
    self.model = Model(self.net)
    self.optimizer = learner_lib.make_optimizer(config)
    self.act = actor_lib.make_act(self.model, config)
    self.policy_act = actor_lib.make_policy_act(self.model)
    self.train_chunk = learner_lib.make_train_chunk(self.model, config, self.optimizer)
    self.add = jax.jit(replay_lib.add, donate_argnums=0)

  def init(self, rng_key: jax.Array) -> tuple[learner_lib.TrainState, replay_lib.ReplayState]:
    init_key, train_key = jax.random.split(rng_key)
    params = init_params(self.net, init_key, self.spec.obs_shape)
    state = learner_lib.init_state(params, self.optimizer, train_key)
    rb = replay_lib.init(self.config.num_envs, self.config.replay_capacity, self.spec.obs_shape,
                         self.spec.obs_dtype, self.spec.num_actions)
    return state, rb


def _eval_record(world, agent: Agent, params, rng_key, config: Config) -> dict[str, Any]:
  start = time.perf_counter()
  res = actor_lib.evaluate(world, params, agent.act, agent.policy_act, rng_key, seed=config.seed + 10_000,
                           max_steps=config.eval_max_steps)
  record = {"eval/seconds": time.perf_counter() - start}
  for name, r in res.items():
    record[f"eval/{name}_return"] = float(np.mean(r.returns))
    record[f"eval/{name}_return_std"] = float(np.std(r.returns))
    record[f"eval/{name}_length"] = float(np.mean(r.lengths))
  return record


def train(config: Config, logdir: str | Path, *, console: bool = True) -> dict[str, Any]:
  """Trains from scratch in `logdir`; returns a summary (also the last line of metrics.jsonl)."""
  run_dir = Path(logdir)
  run_dir.mkdir(parents=True, exist_ok=True)
  (run_dir / "config.json").write_text(json.dumps(config.to_dict(), indent=2) + "\n")
  world = worlds.make(config.world, num_envs=config.num_envs, seed=config.seed)
  eval_world = worlds.make(config.world, num_envs=config.eval_episodes, seed=config.seed + 10_000)
  agent = Agent(config, world.spec)
  key = jax.random.PRNGKey(config.seed)
  key, init_key = jax.random.split(key)
  state, rb = agent.init(init_key)
  log = Logger(run_dir, total_env_steps=config.total_env_steps, console=console)
  b = config.num_envs

  obs = world.reset(config.seed)
  env_steps = updates = episodes = 0
  owed = 0.0
  next_eval = config.eval_every if config.eval_every > 0 else config.total_env_steps
  next_ckpt = config.checkpoint_every if config.checkpoint_every > 0 else None
  start = time.perf_counter()
  timers = {"act": 0.0, "learn": 0.0, "eval": 0.0}
  window = {"t": start, "env_steps": 0, "updates": 0}
  recent_returns: list[float] = []
  last_eval: dict[str, Any] = {}
  solved = False

  while env_steps < config.total_env_steps and not solved:
    t0 = time.perf_counter()
    key, act_key = jax.random.split(key)
    out = agent.act(state.params, obs, act_key, actor_lib.temperature(config, env_steps))
    action = np.asarray(out.action)
    step = world.step(action)
    ended = step.terminated | step.truncated
    row = replay_lib.Rows(obs=obs, action=action, reward=step.reward, policy=out.policy, value=out.value,
                          last=np.zeros(b, bool), terminal=np.zeros(b, bool), step=np.full(b, env_steps, np.int32))
    rb = agent.add(rb, row, step.final_obs, ended, step.terminated)
    obs = step.obs
    env_steps += b
    for r in step.episode_return[ended]:
      recent_returns.append(float(r))
      episodes += 1
    t1 = time.perf_counter()
    timers["act"] += t1 - t0

    if env_steps >= config.learning_starts:
      owed += b * config.updates_per_env_step
    metrics = None
    while owed >= config.updates_per_chunk:
      state, rb, metrics = agent.train_chunk(state, rb, jnp.int32(env_steps))
      owed -= config.updates_per_chunk
      updates += config.updates_per_chunk
    if metrics is not None:
      metrics = {k: float(v) for k, v in metrics.items()}  # waits for the chunk, so the timer below is true
    timers["learn"] += time.perf_counter() - t1
    if metrics is not None:
      now = time.perf_counter()
      dt = now - window["t"]
      record = {"env_steps": env_steps, "updates": updates, "episodes": episodes,
                "wall_s": now - start, **metrics,
                "speed/env_steps_per_s": (env_steps - window["env_steps"]) / dt,
                "speed/updates_per_s": (updates - window["updates"]) / dt,
                "replay/bytes": replay_lib.nbytes(rb)}
      if recent_returns:
        record["train/episode_return"] = float(np.mean(recent_returns[-20:]))
      if dt > 2.0:
        window = {"t": now, "env_steps": env_steps, "updates": updates}
      log.write(record)

    if env_steps >= next_eval or env_steps >= config.total_env_steps:
      next_eval += config.eval_every if config.eval_every > 0 else config.total_env_steps
      t2 = time.perf_counter()
      key, eval_key = jax.random.split(key)
      last_eval = _eval_record(eval_world, agent, state.params, eval_key, config)
      timers["eval"] += time.perf_counter() - t2
      last_eval.update({"env_steps": env_steps, "updates": updates, "episodes": episodes,
                        "wall_s": time.perf_counter() - start})
      log.write(last_eval)
      solved = last_eval["eval/search_return"] >= config.stop_return
    if next_ckpt is not None and env_steps >= next_ckpt:
      next_ckpt += config.checkpoint_every
      checkpoint.save_params(run_dir, env_steps, state.params, config, world.spec)

  checkpoint.save_params(run_dir, env_steps, state.params, config, world.spec)
  summary = {"summary": True, "env_steps": env_steps, "updates": updates, "episodes": episodes,
             "wall_s": time.perf_counter() - start, "solved": solved,
             **{f"time/{k}_s": v for k, v in timers.items()},
             **{k: v for k, v in last_eval.items() if k.startswith("eval/")}}
  log.write(summary)
  log.close()
  world.close()
  eval_world.close()
  return summary
