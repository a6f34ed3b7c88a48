"""Tiny deterministic worlds with known optimal returns, for fast sanity checks."""

from __future__ import annotations

import numpy as np

from worlds import plain
from worlds.base import Spec, World, WorldStateError, check_array

LEFT, RIGHT = 0, 1


class ChainWorld(World):
  """A corridor of n cells 0..n-1; every env starts in cell 1.

  Actions: 0 = left, 1 = right. Rewards:
    * "left" in cell 0: +0.1 and terminate (a small sure reward: a trap for myopic agents);
    * reaching cell n-1: +1.0 and terminate;
    * anything else: 0.
  Episodes are truncated after `max_steps` steps (default 2n); termination takes
  precedence, so `terminated & truncated` is never both true.
  Optimal undiscounted return is 1.0 (always right, n-2 steps).
  Observation: one-hot of the cell, f32[n]. Fully deterministic: the seed is unused.
  """

  optimal_return: float = 1.0
  start: int = 1

  def __init__(self, num_envs: int, n: int = 6, max_steps: int | None = None, seed: int = 0) -> None:
    super().__init__(num_envs, seed)
    if n < 3:
      raise ValueError(f"ChainWorld needs n >= 3 cells, got n={n}")
    max_steps = 2 * n if max_steps is None else max_steps
    if max_steps < 1:
      raise ValueError(f"ChainWorld needs max_steps >= 1, got {max_steps}")
    self.n, self.max_steps = int(n), int(max_steps)
    self._spec = Spec((self.n,), np.dtype(np.float32), 2)
    self._pos = np.full(self.num_envs, self.start, np.int64)  # [B]
    self._t = np.zeros(self.num_envs, np.int64)  # [B] steps taken this episode
    self._eye = np.eye(self.n, dtype=np.float32)  # row i = one-hot(i)

  @property
  def spec(self) -> Spec:
    return self._spec

  def _reset_all(self, seed: int) -> np.ndarray:
    self._pos[:] = self.start
    self._t[:] = 0
    return self._eye[self._pos]

  def _step_all(self, action: np.ndarray):
    fell_off = (self._pos == 0) & (action == LEFT)
    pos = np.clip(self._pos + np.where(action == RIGHT, 1, -1), 0, self.n - 1)
    reached_goal = pos == self.n - 1
    reward = np.where(reached_goal, 1.0, np.where(fell_off, 0.1, 0.0)).astype(np.float32)
    terminated = fell_off | reached_goal
    self._pos, self._t = pos, self._t + 1
    truncated = (self._t >= self.max_steps) & ~terminated
    return self._eye[self._pos], reward, terminated, truncated

  def _get_state(self):
    return {"n": self.n, "pos": self._pos.copy(), "t": self._t.copy()}

  def _set_state(self, state) -> None:
    if state["n"] != self.n:
      raise WorldStateError(f"saved state is of a chain of {plain.short(state['n'])} cells, this one has {self.n}")
    B = self.num_envs
    pos, t = check_array(state["pos"], "pos", np.int64, (B,)), check_array(state["t"], "t", np.int64, (B,))
    if ((pos < 0) | (pos >= self.n)).any() or (t < 0).any():
      raise WorldStateError(f"saved chain state is out of range: cells {pos.tolist()}, steps {t.tolist()}")
    self._pos, self._t = pos.copy(), t.copy()

  def _reset_done(self, done: np.ndarray) -> np.ndarray:
    self._pos[done] = self.start
    self._t[done] = 0
    return self._eye[self._pos[done]]


class MirrorChainWorld(ChainWorld):
  """ChainWorld with the actions' meanings swapped: 0 = right, 1 = left.

  Same corridor, observation (one-hot f32[n]), start cell, rewards and
  max_steps, so it is the chain's related task: a policy optimal on the chain
  (always 1) is the worst here (+0.1 in 2 steps: to cell 0, then off the left
  end), and the optimal return is still 1.0 (always 0, n-2 steps).
  """

  def _step_all(self, action: np.ndarray):
    return super()._step_all(1 - action)  # ChainWorld's LEFT/RIGHT, swapped
