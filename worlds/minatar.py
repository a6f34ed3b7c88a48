"""MinAtar (Young & Tian, 2019) through the reference `minatar` package: `minatar:<Game>`.

The protocol of the MinAtar paper: sticky actions with probability 0.1, the full set of 6 actions, difficulty
ramping on, an episode per game (no life-loss tricks: MinAtar games have one life). Observations are the
game's bool[10, 10, C] channels (C = 4 Breakout, 4 Asterix, 7 Freeway, 6 SpaceInvaders, 10 Seaquest).

Env i is seeded from `seed + i`. The package keeps ONE numpy RandomState per env for both the sticky-action
draw and the game's own randomness (`Environment.seed` shares it), so every env is reproducible from its
seed and its actions; a game reset does not reseed (the stream continues, like gymnasium's envs).
Games are cut off (truncated) at `max_steps` agent steps.

The package is an optional extra (`pip install "dreamer[minatar]"`): it is imported only when a world is built,
so `import worlds` works without it, and a world asked for without it is a one-line `MissingPackageError`.
"""

from __future__ import annotations

import difflib
from typing import Any

import numpy as np

from worlds.base import Spec, World

# id -> the package's module name; the five games of the MinAtar paper.
MINATAR_GAMES = {
  "Breakout": "breakout",
  "Asterix": "asterix",
  "Freeway": "freeway",
  "SpaceInvaders": "space_invaders",
  "Seaquest": "seaquest",
}


class MissingPackageError(ImportError, ValueError):
  """A world needs an optional package that is not installed. An ImportError, and a ValueError too, so that
  callers reporting worlds that cannot be built (`dreamer.agent.check_world`) show its one line as it is."""


def environment_class(game: str) -> type:
  """The package's `Environment`; MissingPackageError naming the extra when the package is not installed."""
  try:
    from minatar import Environment  # the package's environment module imports matplotlib and seaborn
  except ImportError as e:
    if e.name != "minatar" and not (e.name or "").startswith("minatar."):
      raise  # the package is there but something it imports is not: that error says more
    raise MissingPackageError(
      f'minatar:{game} needs the optional package minatar: pip install "dreamer[minatar]"', name="minatar"
    ) from None
  return Environment


def close_games(name: str) -> list[str]:
  by_lower = {g.lower(): g for g in MINATAR_GAMES}
  if name.lower() in by_lower:
    return [by_lower[name.lower()]]
  return difflib.get_close_matches(name, list(MINATAR_GAMES), n=2, cutoff=0.5)


class MinAtarWorld(World):
  """B MinAtar games of one kind, stepped in a Python loop (a step is microseconds)."""

  def __init__(
    self,
    game: str,
    num_envs: int,
    seed: int = 0,
    *,
    sticky_actions: float = 0.1,
    full_action_set: bool = True,
    ramping: bool = True,
    max_steps: int = 100_000,
  ) -> None:
    super().__init__(num_envs, seed)
    if game not in MINATAR_GAMES:
      raise ValueError(f"unknown MinAtar game {game!r}; the games are {', '.join(MINATAR_GAMES)}")
    if not 0.0 <= sticky_actions <= 1.0:
      raise ValueError(f"sticky_actions must be in [0, 1], got {sticky_actions!r}")
    if max_steps < 1:
      raise ValueError(f"max_steps must be >= 1, got {max_steps!r}")
    environment = environment_class(game)
    self.game, self.max_steps = game, int(max_steps)
    self._envs = [
      environment(MINATAR_GAMES[game], sticky_action_prob=sticky_actions, difficulty_ramping=ramping)
      for _ in range(self.num_envs)
    ]
    first = self._envs[0]
    self._actions = np.asarray(
      list(range(first.num_actions())) if full_action_set else first.minimal_action_set(), np.int64
    )
    self._spec = Spec(tuple(first.state_shape()), np.dtype(bool), len(self._actions))
    self._steps = np.zeros(self.num_envs, np.int64)  # agent steps into each env's game

  @property
  def spec(self) -> Spec:
    return self._spec

  def _obs(self, envs) -> np.ndarray:
    return np.stack([e.state() for e in envs]).astype(bool, copy=False)

  def _reset_all(self, seed: int) -> np.ndarray:
    for i, e in enumerate(self._envs):
      e.seed(seed + i)
      e.reset()
      e.last_action = 0  # a reseeded env starts as a new one (the package keeps it across its resets)
    self._steps[:] = 0
    return self._obs(self._envs)

  def _step_all(self, action: np.ndarray):
    reward = np.zeros(self.num_envs, np.float32)
    terminated = np.zeros(self.num_envs, bool)
    for i, (e, a) in enumerate(zip(self._envs, self._actions[action])):
      r, done = e.act(int(a))
      reward[i], terminated[i] = r, done
    self._steps += 1
    truncated = ~terminated & (self._steps >= self.max_steps)
    return self._obs(self._envs), reward, terminated, truncated

  def _reset_done(self, done: np.ndarray) -> np.ndarray:
    idx = np.flatnonzero(done)
    for i in idx:  # as the package: the sticky draw may repeat the last game's final action
      self._envs[i].reset()
    self._steps[idx] = 0
    return self._obs([self._envs[i] for i in idx])

  def _get_state(self) -> Any:
    return self._envs, self._steps

  def _set_state(self, state: Any) -> None:
    envs, steps = state
    if len(envs) != self.num_envs:
      raise ValueError(f"saved state holds {len(envs)} envs, this world has {self.num_envs}")
    self._envs, self._steps = list(envs), np.asarray(steps).copy()
