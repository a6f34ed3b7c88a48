"""Adapter from any discrete-action gymnasium environment to `World`."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import gymnasium
import numpy as np
from gymnasium import spaces
from gymnasium.envs.classic_control import AcrobotEnv, CartPoleEnv, MountainCarEnv
from gymnasium.wrappers import OrderEnforcing, PassiveEnvChecker, TimeLimit

from worlds import plain
from worlds.base import RenderError, Spec, World, WorldStateError, generator_of


def _count(v: Any) -> bool:
  return v is None or (type(v) is int and v >= 0)


def _flag(v: Any) -> bool:
  return type(v) is bool


def _vector(n: int) -> Callable[[Any], bool]:
  """None, or n finite floats: a float32/float64 array [n], or a tuple/list of floats (MountainCar's)."""

  def ok(v: Any) -> bool:
    if isinstance(v, np.ndarray):
      return v.dtype in (np.float32, np.float64) and v.shape == (n,) and bool(np.isfinite(v).all())
    floats = isinstance(v, (tuple, list)) and all(type(x) in (float, np.float64, np.float32) for x in v)
    return v is None or (floats and len(v) == n and all(math.isfinite(x) for x in v))

  return ok


# What a gymnasium env's state is, for the envs and wrappers whose state is plain data: for each class, the
# attributes that change while it runs and a check of a saved value. The classic-control envs also keep their
# `np_random` (a PCG64 Generator, saved as its bit generator's state); PassiveEnvChecker keeps only flags of
# the checks it has run (which warn and change nothing), set as done on restore. Any other class: `env_state`
# refuses (a resumed run starts new episodes).
_STATE_OF: dict[type, dict[str, Callable[[Any], bool]]] = {
  TimeLimit: {"_elapsed_steps": _count},
  OrderEnforcing: {"_has_reset": _flag},
  PassiveEnvChecker: {},
  CartPoleEnv: {"state": _vector(4), "steps_beyond_terminated": _count},
  AcrobotEnv: {"state": _vector(4)},
  MountainCarEnv: {"state": _vector(2)},
}


def _layers(env: gymnasium.Env) -> list[Any]:
  """The wrappers of `env`, outermost first, then the unwrapped env."""
  out = [env]
  while isinstance(out[-1], gymnasium.Wrapper):
    out.append(out[-1].env)
  return out


def env_state(env: gymnasium.Env, env_id: str) -> dict[str, Any]:
  """A gymnasium env's state as plain data; WorldStateError for envs and wrappers not in `_STATE_OF`."""
  layers = _layers(env)
  unknown = [type(x).__name__ for x in layers if type(x) not in _STATE_OF]
  rng = layers[-1]._np_random  # not .np_random: reading it would seed a fresh one
  if unknown or (rng is not None and type(rng.bit_generator) is not np.random.PCG64):
    what = ", ".join(unknown) or "a random generator other than PCG64"
    raise WorldStateError(
      f"gym:{env_id} cannot describe its state as plain data ({what}; only gymnasium's CartPole, Acrobot and "
      f"MountainCar envs can)"
    )
  return {
    # getattr with a default: MountainCar has no `state` before its first reset.
    "layers": [[type(x).__name__, {k: getattr(x, k, None) for k in _STATE_OF[type(x)]}] for x in layers],
    "np_random": None if rng is None else rng.bit_generator.state,
    "np_random_seed": layers[-1]._np_random_seed,
  }


def set_env_state(env: gymnasium.Env, saved: dict[str, Any]) -> None:
  """Restores what `env_state` returned into `env` (built the same way), checking every value."""
  layers = _layers(env)
  names = [type(x).__name__ for x in layers]
  got = [layer[0] for layer in saved["layers"]]
  if got != names:
    raise WorldStateError(f"saved gymnasium env is {plain.short(got)}, this one is {names}")
  for x, (_, values) in zip(layers, saved["layers"]):
    checks = _STATE_OF[type(x)]
    if not isinstance(values, dict) or set(values) != set(checks) or not all(checks[k](v) for k, v in values.items()):
      raise WorldStateError(f"saved {type(x).__name__} state is malformed: {plain.short(values, 200)}")
  seed, rng = saved["np_random_seed"], generator_of(saved["np_random"])
  if seed is not None and type(seed) is not int:
    raise WorldStateError(f"saved np_random_seed is malformed: {plain.short(seed)}")
  for x, (_, values) in zip(layers, saved["layers"]):
    for k, v in values.items():
      setattr(x, k, v)
    if isinstance(x, PassiveEnvChecker):  # its checks ran when the env was first reset and stepped
      x.checked_reset = x.checked_step = x.checked_render = x.checked_data_reuse = True
      x._previous_data = None
  layers[-1]._np_random, layers[-1]._np_random_seed = rng, seed


def _one_line(space: spaces.Space) -> str:
  # Box reprs print bound arrays and can wrap; keep error messages to one line.
  return " ".join(str(space).split())


class GymWorld(World):
  """B copies of `gymnasium.make(env_id, **kwargs)` stepped in a Python loop.

  We auto-reset ourselves (rather than gymnasium's vector envs) so that
  `Step.final_obs` is the exact last observation of each episode.
  Requires a `Discrete` action space and a `Box` observation space; observations
  are cast to the Box dtype, rewards to float32. Env i is reset with seed `seed + i`.
  `get_state` describes gymnasium's CartPole, Acrobot and MountainCar envs (with the wrappers `gymnasium.make`
  adds) as plain data; for other envs it raises WorldStateError (a resumed run then starts new episodes).
  """

  def __init__(self, env_id: str, num_envs: int, seed: int = 0, **kwargs: Any) -> None:
    super().__init__(num_envs, seed)
    self.env_id = env_id
    self._envs: list[gymnasium.Env] = []
    try:
      # Check spaces on the first env before paying for the other B-1.
      first = gymnasium.make(env_id, **kwargs)
      self._envs.append(first)
      act, obs = first.action_space, first.observation_space
      if not isinstance(act, spaces.Discrete):
        raise ValueError(f"GymWorld({env_id!r}) needs a Discrete action space, got {_one_line(act)}")
      if not isinstance(obs, spaces.Box):
        raise ValueError(f"GymWorld({env_id!r}) needs a Box observation space, got {_one_line(obs)}")
      self._envs += [gymnasium.make(env_id, **kwargs) for _ in range(self.num_envs - 1)]
    except BaseException:
      self.close()
      raise
    self._action_start = int(act.start)  # Discrete(n, start=s) takes actions s..s+n-1
    self._spec = Spec(tuple(obs.shape), np.dtype(obs.dtype), int(act.n))

  @property
  def spec(self) -> Spec:
    return self._spec

  def _obs(self, obs: Any) -> np.ndarray:
    return np.asarray(obs, dtype=self._spec.obs_dtype)

  def _reset_all(self, seed: int) -> np.ndarray:
    return np.stack([self._obs(e.reset(seed=seed + i)[0]) for i, e in enumerate(self._envs)])

  def _step_all(self, action: np.ndarray):
    out = [e.step(int(a) + self._action_start) for e, a in zip(self._envs, action)]
    obs = np.stack([self._obs(o[0]) for o in out])
    reward = np.array([o[1] for o in out], np.float32)
    terminated = np.array([o[2] for o in out], bool)
    truncated = np.array([o[3] for o in out], bool)
    return obs, reward, terminated, truncated

  def render(self, env: int) -> np.ndarray:
    e = self._envs[env]
    if e.render_mode != "rgb_array":
      raise RenderError(f"gym:{self.env_id} was made without render_mode='rgb_array', so it cannot draw frames")
    try:
      frame = e.render()
    except Exception as error:  # e.g. gymnasium's DependencyNotInstalled when pygame is missing
      raise RenderError(f"gym:{self.env_id} cannot draw frames: {error}") from None
    frame = np.asarray(frame)
    if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[-1] != 3:
      raise RenderError(f"gym:{self.env_id} renders {frame.dtype}{list(frame.shape)}, not RGB frames u8[H, W, 3]")
    return frame

  def _reset_done(self, done: np.ndarray) -> np.ndarray:
    # No seed: each env's RNG continues from its initial `reset(seed=...)`.
    return np.stack([self._obs(self._envs[i].reset()[0]) for i in np.flatnonzero(done)])

  def _get_state(self) -> dict[str, Any]:
    # Each env's physics state, step counters and random generator; envs whose state we cannot name refuse.
    return {"env_id": self.env_id, "envs": [env_state(e, self.env_id) for e in self._envs]}

  def _set_state(self, state: dict[str, Any]) -> None:
    if state["env_id"] != self.env_id:
      raise WorldStateError(f"saved state is of gym:{plain.short(state['env_id'])}, this world is gym:{self.env_id}")
    envs = state["envs"]
    if not isinstance(envs, list) or len(envs) != self.num_envs:
      raise WorldStateError(f"saved gym state is malformed: {self.num_envs} envs expected")
    for e, saved in zip(self._envs, envs):
      set_env_state(e, saved)

  def close(self) -> None:
    envs, self._envs = self._envs, []
    for e in envs:
      e.close()
