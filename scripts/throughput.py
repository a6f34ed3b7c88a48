"""Throughput benchmark; prints one JSON object.

Measures, for a preset (default `cartpole`): jit compile seconds of the acting search and of a learner chunk,
learner updates/s (median over chunks on a filled replay), acting-search nodes expanded per second, and,
unless --no-train, one full training run's end-to-end env steps/s and time to its stop_return. Projects the
wall-clock of a whole run (acting + world + learner, evaluation excluded) from the medians. Records peak RSS
and the git commit.

  python scripts/throughput.py [--config cartpole] [--set key=value ...] [--chunks 20] [--no-train]
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

import worlds  # noqa: E402
from dreamer import config as config_lib  # noqa: E402
from dreamer import cost, frames  # noqa: E402
from dreamer import replay as replay_lib  # noqa: E402
from dreamer.agent import Agent  # noqa: E402
from dreamer.suites import commit  # noqa: E402
from dreamer.train import train  # noqa: E402


def progress(phase: str, **values) -> None:
  """One JSON line per finished phase on stderr, so a slow benchmark that is cut off still reports."""
  print(json.dumps({"phase": phase, **values}), file=sys.stderr, flush=True)


def fill_replay(agent: Agent, world, rb, steps: int, seed: int):
  """Fills replay with `steps` batched steps of a uniform random policy (real transitions, real episode ends).
  Returns the replay, the last stacked observations and the median seconds of one world step."""
  rng = np.random.default_rng(seed)
  stack = agent.config.frame_stack
  obs = frames.start(world.reset(seed), stack)
  b, a = world.num_envs, world.spec.num_actions
  world_seconds = []
  for t in range(steps):
    action = rng.integers(0, a, b)
    t0 = time.perf_counter()
    step = world.step(action)
    world_seconds.append(time.perf_counter() - t0)
    ended = step.terminated | step.truncated
    row = replay_lib.Rows(
      frames.newest(obs, stack),
      action,
      step.reward,
      np.full((b, a), 1.0 / a, np.float32),
      np.zeros(b, np.float32),
      np.zeros(b, bool),
      np.zeros(b, bool),
      np.full(b, t * b, np.int32),
    )
    rb = agent.add(rb, row, step.final_obs, ended, step.terminated)
    obs = frames.push(obs, step.obs, ended, stack)
  return rb, obs, statistics.median(world_seconds)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--config", default="cartpole")
  parser.add_argument("--set", action="append", default=[], dest="overrides", metavar="KEY=VALUE")
  parser.add_argument("--chunks", type=int, default=20, help="learner chunks timed after compilation")
  parser.add_argument("--act-steps", type=int, default=200, help="acting searches timed after compilation")
  parser.add_argument("--no-train", action="store_true", help="skip the end-to-end training run")
  args = parser.parse_args()
  config = config_lib.load(args.config, args.overrides)
  world = worlds.make(
    config.world, num_envs=config.num_envs, seed=config.seed, **config_lib.world_kwargs(config, train=True)
  )
  agent = Agent(config, world.spec)
  state, rb = agent.init(jax.random.PRNGKey(config.seed))
  rb, obs, world_s = fill_replay(agent, world, rb, max(200, config.learning_starts // config.num_envs), config.seed)
  progress("fill_replay", world_env_steps_per_s=config.num_envs / world_s)
  env_step = jnp.int32(config.learning_starts)
  key = jax.random.PRNGKey(1)

  t0 = time.perf_counter()
  act_compiled = agent.act.lower(state.params, obs, key, 1.0).compile()
  act_compile_s = time.perf_counter() - t0
  progress("act_compile", seconds=act_compile_s)
  act_seconds = []
  for i in range(args.act_steps):
    t0 = time.perf_counter()
    out = act_compiled(state.params, obs, jax.random.fold_in(key, i), 1.0)
    jax.block_until_ready(out)
    act_seconds.append(time.perf_counter() - t0)
  act_s = statistics.median(act_seconds)
  progress("act", median_s=act_s, env_steps_per_s=config.num_envs / (act_s + world_s))
  t0 = time.perf_counter()
  chunk_compiled = agent.train_chunk.lower(state, rb, env_step).compile()
  chunk_compile_s = time.perf_counter() - t0
  progress("chunk_compile", seconds=chunk_compile_s)

  chunk_seconds = []
  for _ in range(args.chunks):
    t0 = time.perf_counter()
    state, rb, metrics = chunk_compiled(state, rb, env_step)
    jax.block_until_ready(metrics)
    chunk_seconds.append(time.perf_counter() - t0)
    progress("chunk", seconds=chunk_seconds[-1], updates=config.updates_per_chunk)
  updates_per_s = config.updates_per_chunk / statistics.median(chunk_seconds)

  result = {
    "config": args.config,
    "overrides": args.overrides,
    "commit": commit(),
    "world": config.world,
    "backend": jax.default_backend(),
    "devices": [str(d) for d in jax.devices()],
    "batch_size": config.batch_size,
    "unroll_steps": config.unroll_steps,
    "num_envs": config.num_envs,
    "num_simulations": config.num_simulations,
    "updates_per_chunk": config.updates_per_chunk,
    "compile_s": {"act": act_compile_s, "train_chunk": chunk_compile_s, "total": act_compile_s + chunk_compile_s},
    "learner_updates_per_s": updates_per_s,
    "learner_chunk_s_median": statistics.median(chunk_seconds),
    "act_search_s_median": act_s,
    "search_nodes_per_s": config.num_envs * config.num_simulations / act_s,
    "acting_env_steps_per_s_search_only": config.num_envs / act_s,
    "world_env_steps_per_s": config.num_envs / world_s,
    "acting_env_steps_per_s": config.num_envs / (act_s + world_s),
  }
  # A whole run: every env step is one batched search plus one world step; every update is paid in chunks.
  result["projected_run_s"] = cost.projected_seconds(
    config, updates_per_s=updates_per_s, acting_env_steps_per_s=result["acting_env_steps_per_s"]
  )
  if not args.no_train:
    with tempfile.TemporaryDirectory() as tmp:
      summary = train(config, Path(tmp) / "run", console=False)
    result["train"] = {
      "env_steps": summary["env_steps"],
      "updates": summary["updates"],
      "wall_s": summary["wall_s"],
      "solved": summary["solved"],
      "eval_search_return": summary.get("eval/search_return"),
      "eval_policy_return": summary.get("eval/policy_return"),
      "env_steps_per_s_end_to_end": summary["env_steps"] / summary["wall_s"],
      "time_split_s": {k[5:-2]: v for k, v in summary.items() if k.startswith("time/")},
    }
  result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
  print(json.dumps(result, indent=2))


if __name__ == "__main__":
  main()
