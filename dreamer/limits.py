"""Memory limits: a size that cannot fit in memory is refused, with one line, before anything is allocated.

Every integer setting is first bounded by `config.INT_MAX` (2**31 - 1). Within that, the sizes a user sets
(replay_capacity, num_envs, eval_episodes, batch_size, the network's widths and supports; `dreamer eval
--episodes`, `dreamer play --envs` and `--steps`) are turned into bytes and compared with the memory available
now. The estimate is a lower bound, never a guess high:

  * the training state is exact: parameters, target parameters, optimizer state and the replay buffer are
    allocated whole at the start, and `jax.eval_shape` sizes them without allocating anything;
  * each env stepped together (num_envs acting, eval_episodes evaluating, or --episodes / --envs) holds at
    least its observation stack and one latent per node of its search tree (num_simulations + 1);
  * a learner batch holds at least batch_size x (unroll_steps + 1) observation stacks and latents;
  * a recording (`dreamer play`) holds at least every recorded step: a frame, the action, reward, episode
    ends, value and the search policy.

The memory available is the host's MemAvailable (/proc/meminfo: what can be allocated without swapping; a
checkpoint copies the whole state to the host, so it must fit there whatever the accelerator), or the
accelerator's own limit when that is smaller. A run refused here would have run out of memory, or swapped
for hours, once started.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import jax
import numpy as np

import worlds
from dreamer import checkpoint as ckpt_lib
from dreamer import config as config_lib
from dreamer.agent import Agent, spec_from_dict
from dreamer.config import Config

Part = tuple[str, str, float]  # (the setting to lower, what it sizes, bytes)


def available() -> tuple[float, str]:
  """(bytes, where) of the memory available now: the host's, or the accelerator's limit when smaller."""
  host = math.inf
  try:
    with open("/proc/meminfo") as f:
      host = next(int(line.split()[1]) * 1024 for line in f if line.startswith("MemAvailable:"))
  except (OSError, StopIteration, ValueError, IndexError):
    try:
      host = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError):
      pass
  try:
    stats = jax.devices()[0].memory_stats() or {}  # None on CPU: the host's memory is the device's
  except (AttributeError, NotImplementedError, RuntimeError):
    stats = {}
  device = stats.get("bytes_limit", math.inf)
  return (device, f"the {jax.devices()[0].platform} device") if device < host else (host, "this machine")


def _nbytes(tree: Any) -> float:
  return float(sum(math.prod(x.shape) * np.dtype(x.dtype).itemsize for x in jax.tree.leaves(tree)))


def _sizes(config: Config, spec: worlds.Spec) -> tuple[Any, Any, float, float]:
  """(abstract learner state, abstract replay, bytes of one observation stack, bytes of one latent)."""
  agent = Agent(config, spec)
  state, rb = jax.eval_shape(agent.init, jax.random.PRNGKey(0))
  obs = jax.ShapeDtypeStruct((1, *agent.obs_shape), spec.obs_dtype)
  latent = jax.eval_shape(agent.model.represent, state.params, obs)
  return state, rb, _nbytes(obs), _nbytes(latent)


def _per_env(config: Config, obs: float, latent: float) -> float:
  """Bytes one env stepped together needs at least: its observation stack and its search tree's latents."""
  nodes = config.num_simulations + 1 if config.search != "none" else 1
  return obs + nodes * latent


def training(config: Config, spec: worlds.Spec) -> list[Part]:
  """What a training run of `config` on a world of `spec` allocates at least, by the setting that sizes it."""
  state, rb, obs, latent = _sizes(config, spec)
  envs = config.num_envs + config.eval_episodes
  return [
    ("replay_capacity", f"replay_capacity {config.replay_capacity} rows", _nbytes(rb)),
    ("the network's widths or supports", "parameters, target and optimizer state", _nbytes(state)),
    ("num_envs or eval_episodes", f"{envs} envs stepped together", envs * _per_env(config, obs, latent)),
    (
      "batch_size",
      f"batch_size {config.batch_size} samples",
      config.batch_size * (config.unroll_steps + 1) * (obs + latent),
    ),
  ]


def acting(config: Config, spec: worlds.Spec, *, envs: int, envs_flag: str, steps: int = 0) -> list[Part]:
  """What acting (and recording `steps` env steps in all) with `envs` envs allocates at least."""
  state, _, obs, latent = _sizes(config, spec)
  frame = math.prod(spec.obs_shape) * np.dtype(spec.obs_dtype).itemsize
  row = frame + 4 * spec.num_actions + 4 + 4 + 4 + 2  # frame, policy, action, reward, value, ends
  parts = [
    ("the checkpoint's network", "parameters", _nbytes(state.params)),
    (envs_flag, f"{envs} envs stepped together", envs * _per_env(config, obs, latent)),
  ]
  return parts + ([("--steps", f"a recording of {steps} env steps", steps * row)] if steps else [])


def check(parts: list[Part]) -> None:
  """ConfigError (one line) when `parts` together need more than the memory available now."""
  total = sum(b for _, _, b in parts)
  limit, where = available()
  if total <= limit:
    return
  largest = max(parts, key=lambda p: p[2])[0]
  detail = "; ".join(f"{what}: {_size(b)}" for _, what, b in parts)
  raise config_lib.ConfigError(
    f"not enough memory: this needs at least {_size(total)} ({detail}), but {where} has {_size(limit)} "
    f"available; lower {largest}"
  )


def _size(b: float) -> str:
  for unit, scale in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6)):
    if b >= scale:
      return f"{b / scale:.1f} {unit}"
  return f"{b / 1e3:.1f} kB"


def checkpoint_config(path: str | Path) -> tuple[Config, worlds.Spec] | None:
  """The config and world spec of the checkpoint `path` names (a run directory: its newest checkpoint whose
  metadata reads), without loading any array; None when none reads (loading it then reports why)."""
  try:
    run_dir, step = ckpt_lib.locate(path)
    ckpts = ckpt_lib.Checkpoints(run_dir, writable=False)
  except (ckpt_lib.CheckpointError, config_lib.ConfigError, OSError):
    return None
  try:
    for candidate in [step] if step is not None else reversed(ckpts.steps()):
      try:
        meta = ckpts.read_meta(candidate)
        config = config_lib.from_dict(meta["config"], "a checkpoint")
        return config, spec_from_dict(meta["spec"])
      except (ckpt_lib.CheckpointError, config_lib.ConfigError, KeyError, TypeError, ValueError):
        continue
    return None
  finally:
    ckpts.close()
