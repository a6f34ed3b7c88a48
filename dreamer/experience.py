"""Recorded real experience: what `dreamer play` writes and `dreamer dream` learns from.

An experience is a directory with two files:

  experience.json   {"format": "dreamer-experience", "version": 1, "world": id, "spec": {obs_shape, obs_dtype,
                    num_actions}, "num_envs": B, "steps": T (per env), "env_steps": B*T, "frame_stack": S,
                    "acting": "search" | "policy", "temperature": t, "seed": n, "checkpoint": path it came from,
                    "game_returns": [true score of every game that ended], "arrays": {name: shape}}
  experience.npz    time-major arrays, T steps of B envs stepped together:
                      obs       [T, B, *frame]  the newest frame the agent saw before acting at t (the agent's
                                                input is the stack of the last S frames of the episode)
                      action    i32[T, B]       the action taken
                      reward    f32[T, B]       the reward the agent trains on (Atari: clipped in train mode)
                      terminated, truncated  bool[T, B]  the episode ended after this step
                      policy    f32[T, B, A]    the search policy at acting time (softmax of the policy head
                                                when acting without search)
                      value     f32[T, B]       the search root value (the value head without search)
                      end_t, end_env  i32[E]    the E steps that ended an episode ...
                      end_obs   [E, *frame]     ... and the final frame of each (for bootstrapping truncations)

`to_replay` turns a recording into the learner's replay rows exactly as training inserts them, split in time
into a training part and a held-out tail.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import jax
import numpy as np

from dreamer import frames
from dreamer import replay as replay_lib
from dreamer.config import ConfigError

FORMAT = "dreamer-experience"
VERSION = 1


class Experience(NamedTuple):
  meta: dict[str, Any]
  arrays: dict[str, np.ndarray]  # see the module docstring

  @property
  def steps(self) -> int:
    return int(self.arrays["action"].shape[0])

  @property
  def num_envs(self) -> int:
    return int(self.arrays["action"].shape[1])


class ExperienceError(ConfigError):
  """An experience directory that cannot be used: one line meant for the user."""


def record(world, act: Callable[[np.ndarray], Any], *, steps: int, seed: int, stack: int) -> dict[str, np.ndarray]:
  """Plays `steps` steps in every env of `world` (auto-resetting), acting with `act(obs [B, *agent_obs]) ->
  (action i32[B], policy f32[B, A], value f32[B])`; returns the arrays of the format, plus game returns under
  'game_returns'."""
  obs = frames.start(world.reset(seed), stack)
  cols: dict[str, list] = {k: [] for k in ("obs", "action", "reward", "terminated", "truncated", "policy", "value")}
  ends_t, ends_env, ends_obs, games = [], [], [], []
  for t in range(steps):
    action, policy, value = (np.asarray(x) for x in act(obs))
    step = world.step(action)
    for k, v in (
      ("obs", frames.newest(obs, stack)),
      ("action", action.astype(np.int32)),
      ("reward", step.reward),
      ("terminated", step.terminated),
      ("truncated", step.truncated),
      ("policy", policy.astype(np.float32)),
      ("value", value.astype(np.float32)),
    ):
      cols[k].append(np.asarray(v))
    ended = step.terminated | step.truncated
    for i in np.flatnonzero(ended):
      ends_t.append(t)
      ends_env.append(i)
      ends_obs.append(step.final_obs[i])
    games += [float(r) for r in step.episode_return[~np.isnan(step.episode_return)]]
    obs = frames.push(obs, step.obs, ended, stack)
  arrays = {k: np.stack(v) for k, v in cols.items()}
  frame_shape = arrays["obs"].shape[2:]
  arrays["end_t"] = np.asarray(ends_t, np.int32)
  arrays["end_env"] = np.asarray(ends_env, np.int32)
  arrays["end_obs"] = np.stack(ends_obs) if ends_obs else np.zeros((0, *frame_shape), arrays["obs"].dtype)
  arrays["game_returns"] = np.asarray(games, np.float32)
  return arrays


def save(path: str | Path, arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> Path:
  """Writes an experience directory (each file atomically)."""
  out = Path(path)
  out.mkdir(parents=True, exist_ok=True)
  arrays = dict(arrays)
  games = arrays.pop("game_returns")
  meta = {
    "format": FORMAT,
    "version": VERSION,
    **meta,
    "steps": int(arrays["action"].shape[0]),
    "num_envs": int(arrays["action"].shape[1]),
    "env_steps": int(arrays["action"].size),
    "game_returns": [float(g) for g in games],
    "arrays": {k: list(v.shape) for k, v in arrays.items()},
  }
  tmp = out / "experience.npz.tmp"
  with open(tmp, "wb") as f:
    np.savez_compressed(f, **arrays)
  os.replace(tmp, out / "experience.npz")
  tmp = out / "experience.json.tmp"
  tmp.write_text(json.dumps(meta, indent=2) + "\n")
  os.replace(tmp, out / "experience.json")
  return out


def load(path: str | Path, what: str = "--experience") -> Experience:
  """Reads an experience directory; ExperienceError (one line) if it is not one."""
  path = Path(path)
  if not (path / "experience.json").is_file() or not (path / "experience.npz").is_file():
    why = "does not exist" if not path.exists() else "holds no experience.json and experience.npz"
    raise ExperienceError(f"{what} {str(path)!r} {why}; record one with dreamer play --out DIR")
  try:
    meta = json.loads((path / "experience.json").read_text())
    with np.load(path / "experience.npz") as npz:
      arrays = {k: npz[k] for k in npz.files}
  except (OSError, ValueError) as e:
    raise ExperienceError(f"{what} {str(path)!r} cannot be read: {e}") from None
  if meta.get("format") != FORMAT or meta.get("version") != VERSION:
    raise ExperienceError(
      f"{what} {str(path)!r} is format {meta.get('format')!r} version {meta.get('version')!r}; "
      f"this dreamer reads {FORMAT!r} version {VERSION}"
    )
  missing = [
    k
    for k in ("obs", "action", "reward", "terminated", "truncated", "policy", "value", "end_t", "end_env", "end_obs")
    if k not in arrays
  ]
  if missing:
    raise ExperienceError(f"{what} {str(path)!r} lacks the arrays {missing}")
  return Experience(meta, arrays)


def split_steps(steps: int, holdout: float) -> int:
  """Steps (per env) of the training part when the last `holdout` fraction is held out (at least 1 of each
  when holdout > 0 and there are 2 steps or more)."""
  if holdout <= 0.0 or steps < 2:
    return steps
  return int(min(max(round(steps * (1.0 - holdout)), 1), steps - 1))


def to_replay(
  exp: Experience, add: Callable, rb: replay_lib.ReplayState, *, start: int, stop: int, step_offset: int = 0
) -> replay_lib.ReplayState:
  """Inserts steps [start, stop) of every env into the empty buffer `rb` (one ring per recorded env) as
  training does: one `add` (the agent's jitted `replay.add`) per step, with the final-observation row after
  each episode end. A ring needs (stop - start) rows plus one per episode end."""
  a = exp.arrays
  b = exp.num_envs
  ends = {(int(t), int(e)): i for i, (t, e) in enumerate(zip(a["end_t"], a["end_env"]))}
  for t in range(start, stop):
    ended = a["terminated"][t] | a["truncated"][t]
    final = a["obs"][t].copy()
    for i in np.flatnonzero(ended):
      final[i] = a["end_obs"][ends[(t, int(i))]]
    row = replay_lib.Rows(
      obs=a["obs"][t],
      action=a["action"][t],
      reward=a["reward"][t],
      policy=a["policy"][t],
      value=a["value"][t],
      last=np.zeros(b, bool),
      terminal=np.zeros(b, bool),
      step=np.full(b, step_offset + t * b, np.int32),
    )
    rb = add(rb, row, final, ended, a["terminated"][t])
  return jax.block_until_ready(rb)
