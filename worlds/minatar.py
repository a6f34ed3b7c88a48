"""MinAtar (Young & Tian, 2019) through the reference `minatar` package: `minatar:<Game>`.

The protocol of the MinAtar paper: sticky actions with probability 0.1, the full set of 6 actions, difficulty
ramping on, an episode per game (no life-loss tricks: MinAtar games have one life). Observations are the
game's bool[10, 10, C] channels (C = 4 Breakout, 4 Asterix, 7 Freeway, 6 SpaceInvaders, 10 Seaquest).

Env i is seeded from `seed + i`. The package keeps ONE numpy RandomState per env for both the sticky-action
draw and the game's own randomness (`Environment.seed` shares it), so every env is reproducible from its
seed and its actions; a game reset does not reseed (the stream continues, like gymnasium's envs).
Games are cut off (truncated) at `max_steps` agent steps.

Variants `minatar:<Game>-<name>` (`MINATAR_VARIANTS`) start every game of one kind at a later point of its own
difficulty ramp, for related tasks (e.g. /dream on a harder game than the checkpoint learned): the game's
starting attributes are set after each reset; the rules, the ramping and the observations are unchanged.

The package is an optional extra (`pip install "dreamer[minatar]"`): it is imported only when a world is built,
so `import worlds` works without it, and a world asked for without it is a one-line `MissingPackageError`.
"""

from __future__ import annotations

import difflib
from typing import Any, NamedTuple

import numpy as np

from worlds import plain
from worlds.base import Spec, World, WorldStateError, check_array

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


class MinAtarVariant(NamedTuple):
  game: str  # the MinAtar game it changes
  start: dict[str, int]  # attributes of the package's game object set after every reset
  about: str


# Append only: `task_input` numbers each game's variants in this order (worlds/task.py), and checkpoints keep it.
MINATAR_VARIANTS: dict[str, MinAtarVariant] = {
  "SpaceInvaders-fast": MinAtarVariant(
    "SpaceInvaders",
    {"enemy_move_interval": 9, "alien_move_timer": 9},
    "aliens start at the fourth wave's speed: a move every 9 frames, not 12 (ramping still speeds them up to 6)",
  ),
  "Asterix-fast": MinAtarVariant(
    "Asterix",
    {"spawn_speed": 6, "spawn_timer": 6, "move_speed": 3, "move_timer": 3},
    "enemies and gold spawn every 6 frames (not 10) and move every 3 (not 5) from the start, as after several"
    " of the ramp's steps",
  ),
}


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
  names = [*MINATAR_GAMES, *MINATAR_VARIANTS]
  by_lower = {g.lower(): g for g in names}
  if name.lower() in by_lower:
    return [by_lower[name.lower()]]
  return difflib.get_close_matches(name, names, n=2, cutoff=0.5)


CELL_PIXELS = 16


def palette(n: int) -> np.ndarray:
  """u8[n, 3]: n bright colours of evenly spaced hue, one per observation channel."""
  hue = np.arange(n) / n
  k = (np.array([5.0, 3.0, 1.0]) + hue[:, None] * 6.0) % 6.0  # HSV -> RGB with saturation 0.75, value 1
  rgb = 1.0 - 0.75 * np.clip(np.minimum(k, 4.0 - k), 0.0, 1.0)
  return np.round(255 * rgb).astype(np.uint8)


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
    variant = MINATAR_VARIANTS.get(game)
    self.name = game  # the game, or the variant's name
    game, self._start = (variant.game, variant.start) if variant else (game, {})
    if game not in MINATAR_GAMES:
      raise ValueError(
        f"unknown MinAtar game {game!r}; the games are {', '.join(MINATAR_GAMES)}, the variants"
        f" {', '.join(MINATAR_VARIANTS)}"
      )
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
    for k in self._start:  # a typo or a renamed attribute of the package
      if not isinstance(getattr(first.env, k, None), int):
        raise AttributeError(f"MinAtar's {game} has no integer attribute {k!r}")
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
      self._reset_game(e)
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

  def render(self, env: int) -> np.ndarray:
    """u8[160, 160, 3]: each cell drawn in the colour of its last lit channel (black: none), 16 pixels a cell."""
    channels = self._envs[env].state().astype(bool)
    colours = palette(channels.shape[-1])
    lit = channels.any(-1)
    top = channels.shape[-1] - 1 - np.argmax(channels[..., ::-1], axis=-1)
    image = np.where(lit[..., None], colours[top], 0).astype(np.uint8)
    return np.repeat(np.repeat(image, CELL_PIXELS, axis=0), CELL_PIXELS, axis=1)

  def _reset_done(self, done: np.ndarray) -> np.ndarray:
    idx = np.flatnonzero(done)
    for i in idx:  # as the package: the sticky draw may repeat the last game's final action
      self._reset_game(self._envs[i])
    self._steps[idx] = 0
    return self._obs([self._envs[i] for i in idx])

  def _reset_game(self, env: Any) -> None:
    env.reset()
    for k, v in self._start.items():
      setattr(env.env, k, v)

  def _get_state(self) -> dict[str, Any]:
    return {"game": self.name, "envs": [_env_state(e) for e in self._envs], "steps": self._steps.copy()}

  def _set_state(self, state: dict[str, Any]) -> None:
    if state["game"] != self.name:  # a variant's state would carry on with the other's ramp
      raise WorldStateError(
        f"saved state is of minatar:{plain.short(state['game'])}, this world is minatar:{self.name}"
      )
    envs = state["envs"]
    if not isinstance(envs, list) or len(envs) != self.num_envs:
      raise WorldStateError(f"saved minatar state is malformed: {self.num_envs} envs expected")
    steps = check_array(state["steps"], "steps", np.int64, (self.num_envs,))
    if (steps < 0).any():
      raise WorldStateError(f"saved minatar step counts are negative: {steps.tolist()}")
    for e, saved in zip(self._envs, envs):
      _set_env_state(e, saved)
    self._steps = steps.copy()


# The package's environments are plain Python objects: an `Environment` (sticky actions) holding a game `Env`.
# Their state is described generically: every attribute of both, which must be plain data (`worlds.plain`),
# except the numpy RandomStates (one per env, shared by the two once seeded), saved by index into a list of
# their states so that the sharing is restored too. Settings must match the world's.
_SETTINGS = ("env_name", "sticky_action_prob", "n_channels", "ramping", "channels", "action_map")


def _env_state(env: Any) -> dict[str, Any]:
  rngs: list[np.random.RandomState] = []

  def split(obj: Any, skip: tuple[str, ...] = ()) -> dict[str, Any]:
    attrs, refs = {}, {}
    for k, v in vars(obj).items():
      if k in skip:
        continue
      if isinstance(v, np.random.RandomState):
        if not any(r is v for r in rngs):
          rngs.append(v)
        refs[k] = next(i for i, r in enumerate(rngs) if r is v)
      else:
        attrs[k] = v
    return {"attrs": attrs, "rngs": refs}

  out = {"environment": split(env, skip=("env",)), "game": split(env.env)}
  out["random_states"] = [r.get_state(legacy=False) for r in rngs]
  return out


def _set_env_state(env: Any, saved: dict[str, Any]) -> None:
  """Restores what `_env_state` returned into `env` (built with the same settings), checking what it can: the
  same attributes of compatible kinds, the same settings, and that the restored game renders."""
  states = saved["random_states"]
  if not isinstance(states, list):
    raise WorldStateError("saved minatar random states are malformed")
  rngs = [_random_state(s) for s in states]
  targets = ((env, saved["environment"], ("env",)), (env.env, saved["game"], ()))
  for obj, part, skip in targets:  # check both parts before changing anything
    _check_attrs(obj, part, skip, len(rngs))
  for obj, part, _ in targets:
    for k, v in part["attrs"].items():
      setattr(obj, k, v)
    for k, i in part["rngs"].items():
      setattr(obj, k, rngs[i])
  try:
    env.state()  # positions index the observation's grid: a bad one fails here, not in a later step
  except (IndexError, TypeError, ValueError) as e:
    raise WorldStateError(f"saved minatar game state does not render: {plain.short(str(e), 200)}") from None


def _check_attrs(obj: Any, part: Any, skip: tuple[str, ...], num_rngs: int) -> None:
  now = {k: v for k, v in vars(obj).items() if k not in skip}
  if not isinstance(part, dict) or set(part) != {"attrs", "rngs"}:
    raise WorldStateError("saved minatar env state is malformed")
  attrs, refs = part["attrs"], part["rngs"]
  if not isinstance(attrs, dict) or not isinstance(refs, dict) or set(attrs) | set(refs) != set(now):
    raise WorldStateError(f"saved minatar env state is malformed: it names other attributes than {sorted(now)}")
  for k, i in refs.items():
    if not isinstance(now[k], np.random.RandomState) or type(i) is not int or not 0 <= i < num_rngs:
      raise WorldStateError(f"saved minatar attribute {k!r} is malformed")
  for k, v in attrs.items():
    same = v == now[k] if k in _SETTINGS else _same_kind(v, now[k])
    if not isinstance(same, (bool, np.bool_)) or not same:
      raise WorldStateError(f"saved minatar attribute {k!r} is {plain.short(v)}, which does not fit this world")


def _same_kind(saved: Any, now: Any) -> bool:
  """Whether a saved attribute can stand where `now` is: arrays of the same dtype and shape, numbers for
  numbers, bools for bools, and lists or None (the games' entity slots) for lists or None."""
  if isinstance(now, np.ndarray):
    return isinstance(saved, np.ndarray) and saved.dtype == now.dtype and saved.shape == now.shape
  if isinstance(now, (bool, np.bool_)):
    return isinstance(saved, (bool, np.bool_))
  if isinstance(now, (int, float, np.integer, np.floating)):
    return isinstance(saved, (int, float, np.integer, np.floating)) and not isinstance(saved, (bool, np.bool_))
  if now is None or isinstance(now, list):
    return saved is None or isinstance(saved, list)
  return type(saved) is type(now)


def _random_state(state: Any) -> np.random.RandomState:
  """A RandomState set to `state` (what `get_state(legacy=False)` returned); WorldStateError if malformed."""
  if not isinstance(state, dict) or state.get("bit_generator") != "MT19937":
    raise WorldStateError(f"saved minatar random state is not an MT19937 state: {plain.short(state)}")
  inner = state.get("state")
  check_array(inner.get("key") if isinstance(inner, dict) else None, "random state key", np.uint32, (624,))
  rng = np.random.RandomState()
  try:
    rng.set_state(state)
  except (KeyError, TypeError, ValueError, OverflowError) as e:
    raise WorldStateError(f"saved minatar random state is malformed: {plain.short(str(e), 200)}") from None
  return rng
