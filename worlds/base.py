"""The batched-environment interface every world implements.

A `World` holds B = `num_envs` independent environments and steps them together.
Everything here is host-side numpy (no jax): worlds feed replay buffers and
actors, and the learner moves data to the device itself.

Conventions (shapes use B = num_envs):
  * Observations are `[B, *spec.obs_shape]` of `spec.obs_dtype`.
  * Actions are integer arrays `[B]` with values in `[0, spec.num_actions)`.
  * Auto-reset: when env i ends an episode, `Step.obs[i]` is already the first
    observation of its next episode and `Step.final_obs[i]` is the last
    observation of the episode that ended (needed to bootstrap truncations).
  * Episodes vs games: an episode is what the agent's returns and bootstraps
    see (`terminated | truncated` ends it; the world auto-resets it). A game is
    what the world scores: usually the same thing, but a world may end several
    episodes within one game (Atari in train mode ends an episode at every lost
    life and continues the same game). `_step_all` returns either
    `(obs, reward, terminated, truncated)`, where every episode end is a game
    end and the score is the reward, or
    `(obs, reward, terminated, truncated, score, game_over)`, with the true
    (e.g. unclipped) score f32[B] of the step and game_over bool[B] marking
    envs whose game ended (only where the episode ended too).
  * Game statistics are tracked here, once, so every world reports them the same
    way: `Step.episode_return` / `Step.episode_length` give the summed score and
    the number of steps of each GAME that ended on this step.

Subclasses implement three hooks (`_reset_all`, `_step_all`, `_reset_done`);
validation, auto-reset and bookkeeping live in `World.reset`/`World.step`.
`get_state`/`set_state` capture and restore everything needed to continue the
episodes in progress exactly (checkpoints use them for bit-identical resume), as
plain data that cannot run code when read back (`worlds.plain`); subclasses
provide `_get_state`/`_set_state` for their own part.
"""

from __future__ import annotations

import abc
from typing import Any, NamedTuple

import numpy as np

from worlds import plain

STATE_FORMAT = "dreamer.world_state"
STATE_VERSION = 1
_STATE_KEYS = {"format", "version", "world", "num_envs", "ep_return", "ep_length", "needs_reset", "own"}


def check_num_envs(num_envs: Any) -> None:
  """Raise a clear ValueError unless num_envs is an integer >= 1."""
  ok = isinstance(num_envs, (int, np.integer)) and not isinstance(num_envs, bool)
  if not ok or num_envs < 1:
    raise ValueError(f"num_envs must be an integer >= 1, got {num_envs!r}")


class RenderError(RuntimeError):
  """A world that cannot draw its frames (for videos): one line saying why."""


class WorldStateError(RuntimeError):
  """This world cannot describe its state as plain data, or a saved state cannot be restored: one line."""


def state_checksum(data: Any) -> int:
  """CRC32 of what `World.get_state` returned, the same after a JSON round trip; WorldStateError if `data`
  is not JSON data."""
  try:
    return plain.checksum(data)
  except plain.PlainDataError as e:
    raise WorldStateError(f"saved world state is malformed: {e}") from None


def check_array(x: Any, what: str, dtype: Any, shape: tuple[int, ...]) -> np.ndarray:
  """`x` if it is an array of exactly `dtype` and `shape`, else WorldStateError (for `_set_state` hooks)."""
  if not isinstance(x, np.ndarray) or x.dtype != np.dtype(dtype) or x.shape != tuple(shape):
    got = f"{x.dtype}{list(x.shape)}" if isinstance(x, np.ndarray) else type(x).__name__
    raise WorldStateError(f"saved world state's {what} is {got}, expected {np.dtype(dtype)}{list(shape)}")
  return x


def generator_of(state: Any) -> np.random.Generator | None:
  """A PCG64 Generator in `state` (its bit generator's `.state`, as saved), None for None; WorldStateError
  if `state` is not a PCG64 state."""
  if state is None:
    return None
  if not isinstance(state, dict) or state.get("bit_generator") != "PCG64":
    raise WorldStateError(f"saved random generator is not a PCG64 state: {plain.short(state)}")
  rng = np.random.Generator(np.random.PCG64())
  try:
    rng.bit_generator.state = state
  except (KeyError, TypeError, ValueError, OverflowError) as e:
    raise WorldStateError(f"saved random generator state is malformed: {plain.short(str(e), 200)}") from None
  return rng


def _check_header(state: Any, name: str, num_envs: int) -> None:
  """WorldStateError unless `state` is a decoded world state of a `name` world with `num_envs` envs."""
  if not isinstance(state, dict) or set(state) != _STATE_KEYS:
    keys = sorted(state) if isinstance(state, dict) else type(state).__name__
    raise WorldStateError(
      f"saved world state is malformed: expected the keys {sorted(_STATE_KEYS)}, got {plain.short(keys)}"
    )
  if state["format"] != STATE_FORMAT or state["version"] != STATE_VERSION:
    raise WorldStateError(
      f"saved world state is format {plain.short(state['format'])} version {plain.short(state['version'])}; "
      f"this dreamer reads {STATE_FORMAT!r} version {STATE_VERSION}"
    )
  if state["world"] != name:
    raise WorldStateError(f"saved world state is of a {plain.short(state['world'])} world, this world is a {name}")
  n = state["num_envs"]
  if type(n) is not int or n < 1:
    raise WorldStateError(f"saved world state is malformed: num_envs {plain.short(n)}")
  if n != num_envs:
    raise WorldStateError(f"saved world state holds {n} envs, this world has {num_envs}")
  check_array(state["ep_return"], "ep_return", np.float64, (n,))
  check_array(state["ep_length"], "ep_length", np.int32, (n,))
  if type(state["needs_reset"]) is not bool:
    raise WorldStateError(f"saved world state is malformed: needs_reset {plain.short(state['needs_reset'])}")


class Spec(NamedTuple):
  """Static description of a world's observations and actions."""

  obs_shape: tuple[int, ...]  # shape of ONE env's observation
  obs_dtype: np.dtype  # e.g. np.float32 (vectors) or np.uint8 (pixels)
  num_actions: int  # actions are 0 .. num_actions-1


class Step(NamedTuple):
  """Result of `World.step` for all B envs."""

  obs: np.ndarray  # [B, *obs_shape]  obs to act on next (post auto-reset)
  reward: np.ndarray  # f32[B]
  terminated: np.ndarray  # bool[B]  the MDP reached a terminal state
  truncated: np.ndarray  # bool[B]  cut off (time limit); do bootstrap
  final_obs: np.ndarray  # [B, *obs_shape]  last obs of the ended episode; == obs where none ended
  # Per GAME (see module docstring), not per episode: equal unless the world
  # reports game_over separately (Atari train mode: lives are episodes).
  episode_return: np.ndarray  # f32[B]  summed score of the game that ended, NaN where none ended
  episode_length: np.ndarray  # i32[B]  agent steps of the game that ended, 0 where none ended


class World(abc.ABC):
  """B environments stepped in lockstep with auto-reset.

  `seed` given to the constructor is only the default for `reset()`; nothing
  is random before `reset` is called.
  """

  num_envs: int
  # Best achievable undiscounted episode return when known (toy worlds), else
  # None, so `getattr(world, "optimal_return", None)` works for any world.
  optimal_return: float | None = None

  def __init__(self, num_envs: int, seed: int = 0) -> None:
    check_num_envs(num_envs)
    self.num_envs = int(num_envs)
    self.seed = int(seed)
    self._ep_return = np.zeros(self.num_envs, np.float64)  # f64 so long sums don't drift
    self._ep_length = np.zeros(self.num_envs, np.int32)
    self._needs_reset = True

  # ------------------------------------------------------------------ API

  @property
  @abc.abstractmethod
  def spec(self) -> Spec:
    """Observation shape/dtype and number of actions."""

  def reset(self, seed: int | None = None) -> np.ndarray:
    """Start fresh episodes in all envs; returns obs [B, *obs_shape].

    Env i is seeded from `seed + i` (defaults to the constructor's seed), so
    the same seed and the same actions reproduce the same trajectories.
    """
    seed = self.seed if seed is None else int(seed)
    obs = self._check_obs(self._reset_all(seed), "_reset_all")
    self._ep_return[:] = 0.0
    self._ep_length[:] = 0
    self._needs_reset = False
    return obs.copy()  # callers may keep it; never alias internal buffers

  def step(self, action: np.ndarray) -> Step:
    """Advance every env by one step with `action` int[B]; auto-resets ended envs."""
    if self._needs_reset:
      raise RuntimeError(f"{type(self).__name__}.step() called before reset()")
    action = self._check_action(action)
    out = self._step_all(action)
    name = type(self).__name__
    if len(out) not in (4, 6):
      raise TypeError(f"{name}._step_all returned {len(out)} values, expected 4 or 6")
    B = self.num_envs
    next_obs = self._check_obs(out[0], "_step_all")
    reward = np.asarray(out[1], np.float32).reshape(B)
    terminated = np.asarray(out[2], bool).reshape(B)
    truncated = np.asarray(out[3], bool).reshape(B)
    done = terminated | truncated
    if len(out) == 6:
      score = np.asarray(out[4], np.float32).reshape(B)
      game_over = np.asarray(out[5], bool).reshape(B)
      if (game_over & ~done).any():  # a game can only end where its episode ends
        i = int(np.argmax(game_over & ~done))
        raise TypeError(f"{name}._step_all ended env {i}'s game but not its episode")
    else:
      score, game_over = reward, done

    self._ep_return += score
    self._ep_length += 1
    episode_return = np.where(game_over, self._ep_return, np.nan).astype(np.float32)
    episode_length = np.where(game_over, self._ep_length, 0).astype(np.int32)
    self._ep_return[game_over] = 0.0
    self._ep_length[game_over] = 0

    final_obs = next_obs.copy()
    obs = next_obs.copy()
    if done.any():
      obs[done] = self._check_obs(self._reset_done(done), "_reset_done", int(done.sum()))
    return Step(obs, reward, terminated, truncated, final_obs, episode_return, episode_length)

  def get_state(self) -> dict[str, Any]:
    """Everything needed to continue the current episodes exactly, as JSON-able plain data (`worlds.plain`):
    numbers, strings, arrays, the emulators' own state bytes, RNG states as integers. Never code or objects.

    Raises WorldStateError if this world cannot describe its state that way.
    """
    state = {
      "format": STATE_FORMAT,
      "version": STATE_VERSION,
      "world": type(self).__name__,
      "num_envs": self.num_envs,
      "ep_return": self._ep_return.copy(),
      "ep_length": self._ep_length.copy(),
      "needs_reset": bool(self._needs_reset),
      "own": self._get_state(),
    }
    try:
      return plain.encode(state)
    except plain.PlainDataError as e:
      raise WorldStateError(f"{type(self).__name__} cannot describe its state as plain data: {e}") from None

  def set_state(self, data: Any) -> None:
    """Restore what `get_state` returned (into a world built with the same arguments). Data read from a file is
    untrusted: anything malformed, of another world or of another batch size is a WorldStateError (one line),
    and nothing in it is run. After an error the world may be partly restored: reset it."""
    name = type(self).__name__
    try:
      state = plain.decode(data)
    except plain.PlainDataError as e:
      raise WorldStateError(f"saved world state is malformed: {e}") from None
    _check_header(state, name, self.num_envs)
    try:
      self._set_state(state["own"])
    except WorldStateError:
      raise
    except (AttributeError, KeyError, IndexError, TypeError, ValueError) as e:  # hooks index what they are given
      raise WorldStateError(
        f"saved {name} state is malformed: {type(e).__name__}: {plain.short(str(e), 200)}"
      ) from None
    self._ep_return[:], self._ep_length[:] = state["ep_return"], state["ep_length"]
    self._needs_reset = state["needs_reset"]

  def render(self, env: int) -> np.ndarray:
    """The current frame of env `env` as u8[H, W, 3], for videos; RenderError where the world cannot draw."""
    raise RenderError(f"{type(self).__name__} cannot draw frames, so it has no video")

  def close(self) -> None:  # noqa: B027 - an optional hook: most worlds hold nothing to release
    """Release resources (subprocesses, emulators, windows). Idempotent."""

  def __enter__(self) -> World:
    return self

  def __exit__(self, *exc: Any) -> None:
    self.close()

  def __repr__(self) -> str:
    return f"{type(self).__name__}(num_envs={self.num_envs}, spec={self.spec})"

  # ---------------------------------------------------------- subclass hooks

  @abc.abstractmethod
  def _reset_all(self, seed: int) -> np.ndarray:
    """Reset all envs, env i seeded from `seed + i`; returns obs [B, *obs_shape]."""

  @abc.abstractmethod
  def _step_all(self, action: np.ndarray) -> tuple[np.ndarray, ...]:
    """Step all envs WITHOUT resetting; action is a validated int64[B].

    Returns (obs [B, *obs_shape], reward [B], terminated bool[B], truncated bool[B])
    or those plus (score f32[B], game_over bool[B]) for worlds whose games
    outlast episodes (see the module docstring); obs[i] is the last
    observation of env i's episode if it just ended.
    """

  @abc.abstractmethod
  def _reset_done(self, done: np.ndarray) -> np.ndarray:
    """Start new episodes in envs where `done` (bool[B]) without reseeding
    (the envs' RNG continues, keeping runs deterministic given the reset seed).
    A new episode need not be a new game (Atari after a lost life continues it).
    Returns first obs [done.sum(), *obs_shape] in env order."""

  def _get_state(self) -> Any:
    """The subclass's own state as plain data (`worlds.plain`: numbers, str, bytes, arrays, lists, tuples,
    dicts; default: none). Raise WorldStateError when it cannot be described that way."""
    return None

  def _set_state(self, state: Any) -> None:  # noqa: B027 - an optional hook, as _get_state
    """Restore what `_get_state` returned, decoded from a file: check everything (WorldStateError)."""

  # ---------------------------------------------------------------- checks

  def _check_action(self, action: Any) -> np.ndarray:
    a = np.asarray(action)
    if a.shape != (self.num_envs,):
      raise ValueError(f"action must have shape ({self.num_envs},) (one per env), got shape {a.shape}")
    if not np.issubdtype(a.dtype, np.integer):
      raise ValueError(f"action must be an integer array, got dtype {a.dtype}")
    n = self.spec.num_actions
    bad = (a < 0) | (a >= n)
    if bad.any():
      i = int(np.argmax(bad))
      raise ValueError(f"action out of range [0, {n}): env {i} got {a[i]}")
    return a.astype(np.int64)

  def _check_obs(self, obs: np.ndarray, where: str, rows: int | None = None) -> np.ndarray:
    # Catches subclass bugs (wrong batch/shape/dtype) at the boundary, not deep in a learner.
    spec = self.spec
    want = (self.num_envs if rows is None else rows, *spec.obs_shape)
    if obs.shape != want or obs.dtype != spec.obs_dtype:
      raise TypeError(
        f"{type(self).__name__}.{where} returned {obs.dtype}{list(obs.shape)}, "
        f"expected {np.dtype(spec.obs_dtype)}{list(want)}"
      )
    return obs
