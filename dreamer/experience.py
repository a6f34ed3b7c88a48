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
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import jax
import numpy as np

from dreamer import frames
from dreamer import replay as replay_lib
from dreamer.checkpoint import OBS_DTYPES
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
    if not isinstance(meta, dict):
      raise ValueError(f"experience.json holds a {type(meta).__name__}, not an object")
    if meta.get("format") != FORMAT or meta.get("version") != VERSION:
      raise ExperienceError(
        f"{what} {str(path)!r} is format {str(meta.get('format'))[:40]!r} version {str(meta.get('version'))[:20]!r}; "
        f"this dreamer reads {FORMAT!r} version {VERSION}"
      )
    with np.load(path / "experience.npz") as npz:  # allow_pickle stays False: an object array is refused
      arrays = {k: npz[k] for k in npz.files}
  except (OSError, ValueError, UnicodeDecodeError, MemoryError, EOFError, zipfile.BadZipFile) as e:
    if isinstance(e, ExperienceError):
      raise
    why = "it declares arrays larger than memory" if isinstance(e, MemoryError) else " ".join(str(e).split())[:200]
    raise ExperienceError(f"{what} {str(path)!r} cannot be read: {why}") from None
  problem = meta_problem(meta) or arrays_problem(meta, arrays)
  if problem:
    raise ExperienceError(f"{what} {str(path)!r} is damaged: {problem}")
  return Experience(meta, arrays)


ARRAYS = ("obs", "action", "reward", "terminated", "truncated", "policy", "value", "end_t", "end_env", "end_obs")


def _int(x: Any, low: int) -> bool:
  return type(x) is int and x >= low


def _number(x: Any) -> bool:
  return type(x) in (int, float) and np.isfinite(x)


def meta_problem(meta: dict[str, Any]) -> str | None:
  """What is wrong with a recording's experience.json (read from a file: untrusted), or None."""
  spec = meta.get("spec") if isinstance(meta.get("spec"), dict) else {}
  shape = spec.get("obs_shape")
  checks = [
    (isinstance(meta.get("world"), str), "'world' must be a string"),
    (isinstance(shape, list) and 1 <= len(shape) <= 4 and all(_int(d, 1) for d in shape),
     "'spec.obs_shape' must be a list of 1 to 4 positive integers"),
    (spec.get("obs_dtype") in OBS_DTYPES, f"'spec.obs_dtype' must be one of {', '.join(OBS_DTYPES)}"),
    (_int(spec.get("num_actions"), 1), "'spec.num_actions' must be an integer >= 1"),
    (_int(meta.get("num_envs"), 1) and _int(meta.get("steps"), 1), "'num_envs' and 'steps' must be integers >= 1"),
    (meta.get("env_steps") == (meta.get("num_envs") or 0) * (meta.get("steps") or 0),
     "'env_steps' must be num_envs x steps"),
    (_int(meta.get("frame_stack"), 1), "'frame_stack' must be an integer >= 1"),
    (isinstance(meta.get("game_returns"), list) and all(_number(g) for g in meta["game_returns"]),
     "'game_returns' must be a list of finite numbers"),
    (isinstance(meta.get("arrays"), dict), "'arrays' must map array names to shapes"),
  ]  # fmt: skip
  return next((message for ok, message in checks if not ok), None)


def arrays_problem(meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> str | None:
  """What is wrong with a recording's arrays against its header, or None: names, shapes, dtypes, and contents
  (actions within the world's action count, finite rewards, values and policies, episode ends in range)."""
  missing = [k for k in ARRAYS if k not in arrays]
  if missing:
    return f"it lacks the arrays {missing}"
  t, b, a = meta["steps"], meta["num_envs"], meta["spec"]["num_actions"]
  frame, dtype = tuple(meta["spec"]["obs_shape"]), np.dtype(meta["spec"]["obs_dtype"])
  e = arrays["end_t"].shape[0] if arrays["end_t"].ndim == 1 else -1
  want = {"obs": ((t, b, *frame), (dtype,)), "action": ((t, b), "iu"), "reward": ((t, b), "f"),
          "terminated": ((t, b), "b"), "truncated": ((t, b), "b"), "policy": ((t, b, a), "f"), "value": ((t, b), "f"),
          "end_t": ((e,), "iu"), "end_env": ((e,), "iu"), "end_obs": ((e, *frame), (dtype,))}  # fmt: skip
  for name, (shape, kinds) in want.items():
    x = arrays[name]
    ok_dtype = x.dtype in kinds if isinstance(kinds, tuple) else x.dtype.kind in kinds
    if x.shape != shape or not ok_dtype:
      return f"array {name!r} is {x.dtype}{list(x.shape)}, the header says {list(shape)}"
    if list(x.shape) != meta["arrays"].get(name):
      return f"array {name!r} has shape {list(x.shape)}, experience.json says {meta['arrays'].get(name)}"
  ended = arrays["terminated"] | arrays["truncated"]
  contents = [
    (np.all((arrays["action"] >= 0) & (arrays["action"] < a)), f"an action is outside 0..{a - 1}"),
    (all(np.isfinite(arrays[k]).all() for k in ("reward", "policy", "value")), "a reward/policy/value is not finite"),
    (np.all(arrays["policy"] >= 0), "a policy has a negative probability"),
    (e == int(ended.sum()), f"it lists {e} episode ends, the step flags hold {int(ended.sum())}"),
    (e == 0 or bool(np.all(ended[arrays["end_t"].clip(0, t - 1), arrays["end_env"].clip(0, b - 1)])
                    and np.all((arrays["end_t"] < t) & (arrays["end_env"] < b) & (arrays["end_t"] >= 0)
                               & (arrays["end_env"] >= 0))), "an episode end is not at an ended step"),
  ]  # fmt: skip
  return next((message for ok, message in contents if not ok), None)


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
