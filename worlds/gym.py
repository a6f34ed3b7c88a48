"""Adapter from any discrete-action gymnasium environment to `World`."""

from __future__ import annotations

from typing import Any

import gymnasium
import numpy as np
from gymnasium import spaces

from worlds.base import Spec, World


def _one_line(space: spaces.Space) -> str:
  # Box reprs print bound arrays and can wrap; keep error messages to one line.
  return " ".join(str(space).split())


class GymWorld(World):
  """B copies of `gymnasium.make(env_id, **kwargs)` stepped in a Python loop.

  We auto-reset ourselves (rather than gymnasium's vector envs) so that
  `Step.final_obs` is the exact last observation of each episode.
  Requires a `Discrete` action space and a `Box` observation space; observations
  are cast to the Box dtype, rewards to float32. Env i is reset with seed `seed + i`.
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

  def _reset_done(self, done: np.ndarray) -> np.ndarray:
    # No seed: each env's RNG continues from its initial `reset(seed=...)`.
    return np.stack([self._obs(self._envs[i].reset()[0]) for i in np.flatnonzero(done)])

  def _get_state(self):
    # Whole env objects (wrappers, physics state, RNG): gymnasium's classic envs pickle.
    return self._envs

  def _set_state(self, envs) -> None:
    if len(envs) != self.num_envs:
      raise ValueError(f"saved state holds {len(envs)} envs, this world has {self.num_envs}")
    self.close()
    self._envs = list(envs)

  def close(self) -> None:
    envs, self._envs = self._envs, []
    for e in envs:
      e.close()
