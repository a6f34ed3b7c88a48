"""Atari 2600 games through ale-py, under the Atari 100k protocol of EfficientZero.

Each env is its own `ale_py.ALEInterface`, stepped in a Python loop. Not gymnasium's
wrappers and not `AtariVectorEnv`: we need each env's emulator state (RNG included)
saved and restored for bit-identical resume, and both the clipped training reward
and the true game score of every step, which AtariVectorEnv cannot give together.

What one env does (baselines' wrappers as EfficientZero stacks them: NoopResetEnv
under MaxAndSkipEnv under TimeLimit under EpisodicLifeEnv, then WarpFrame):
  * Seeds: env i uses s_i = (seed + i) mod 2**31. ALE's `random_seed` is set to s_i
    before `loadROM` on every `reset(seed)`, `np.random.default_rng(s_i)` draws the
    env's no-op counts and `np.random.default_rng([s_i, 1])` its sticky actions.
  * Sticky actions follow ALE's rule (each frame, with probability `sticky_actions`,
    the previous frame's action is repeated instead of the new one; a new game starts
    from NOOP) but are drawn here, with ALE's own repeat_action_probability at 0:
    ale-py 0.12 leaves its last-action memory out of the saved emulator state, so a
    restored emulator would repeat a different action.
  * New game: `reset_game()`, then n ~ U{1..noop_max} single NOOP FRAMES (NoopResetEnv
    sits below frame skipping); a game that ends during them is reset and the no-ops
    go on. The first observation is the screen after the last of them (not max-pooled).
  * Agent step: the action is repeated for `frame_skip` frames, rewards summed,
    stopping early if the game ends; the observation is the pixel-wise max of the RGB
    screens of the two most recent emulated frames (the last two of the step unless
    the game ended on its first frame; baselines would keep stale frames then).
  * Train mode: losing a life (lives decreased and still > 0) terminates the episode,
    not the game; the next episode starts with one NOOP agent step, as
    EpisodicLifeEnv.reset. We take it right at the life loss, so that a game ending
    within it is reported on this step; its reward is withheld from the agent (as
    baselines) but counted in the score. Rewards are clipped to sign(r).
    Eval mode: episodes are whole games and rewards are the true score.
  * A game is truncated after `max_steps` agent steps, the train-mode no-op steps
    included (TimeLimit sits below EpisodicLifeEnv); Step.episode_length counts only
    the agent's steps.
  * Observation: uint8[frame_size, frame_size, C], ONE frame (agents stack frames
    themselves), C=3 RGB or C=1 grey (cv2's COLOR_RGB2GRAY fixed point, below),
    resized by area averaging as cv2.INTER_AREA (exact integer arithmetic; equal to
    cv2's at sizes such as 96 and 64, where no average is a rounding tie, and within
    one grey level at sizes such as 84, where cv2's float32 sums break ties).
"""

from __future__ import annotations

import difflib
import math
from typing import Any, NamedTuple

import numpy as np

from worlds import plain
from worlds.base import Spec, World, WorldStateError, check_array, generator_of

# The 26 games of the Atari 100k benchmark (Kaiser et al. 2020), as ids `atari:<name>`.
ATARI100K_GAMES: tuple[str, ...] = (
    "Alien", "Amidar", "Assault", "Asterix", "BankHeist", "BattleZone", "Boxing",
    "Breakout", "ChopperCommand", "CrazyClimber", "DemonAttack", "Freeway", "Frostbite",
    "Gopher", "Hero", "Jamesbond", "Kangaroo", "Krull", "KungFuMaster", "MsPacman",
    "Pong", "PrivateEye", "Qbert", "RoadRunner", "Seaquest", "UpNDown",
)  # fmt: skip

# ROMs that need a second player: ALE exits the process (uncatchably) on loading them.
_TWO_PLAYER_ROMS = frozenset({"combat", "joust", "maze_craze", "warlords"})
_NOOP = 0  # ale_py.Action.NOOP
_NUM_ALE_ACTIONS = 18  # ALE action ids are 0..17 (the full action set)
_MODES = ("train", "eval")
# cv2's COLOR_RGB2GRAY on uint8 (OpenCV 4 and 5): 0.299 R + 0.587 G + 0.114 B in 15-bit
# fixed point, rounded; rounding the float sum instead differs on ~0.2% of RGB triples.
_LUMA = np.array([9798, 19235, 3735], np.uint32)


def _import_ale():
  try:
    import ale_py
  except ImportError:
    raise ImportError("atari worlds need ale-py: pip install ale-py") from None
  return ale_py


def game_roms() -> dict[str, str]:
  """CamelCase game name -> ale-py ROM id, for every single-player ROM ale-py ships
  (e.g. 'MsPacman' -> 'ms_pacman', 'UpNDown' -> 'up_n_down')."""
  roms = _import_ale().roms
  # ale-py's own naming (ale_py.registration.rom_id_to_name), so names match gymnasium's ALE ids.
  ids = [r for r in roms.get_all_rom_ids() if r not in _TWO_PLAYER_ROMS]
  return {r.title().replace("_", ""): r for r in ids}


def close_games(name: str, names: Any) -> list[str]:
  """Up to 3 of `names` like `name`, ignoring case ('pong' finds 'Pong')."""
  by_lower = {n.lower(): n for n in names}
  return [by_lower[c] for c in difflib.get_close_matches(name.lower(), by_lower, n=3, cutoff=0.7)]


# ---------------------------------------------------------------- frames


def area_matrix(n_out: int, n_in: int) -> np.ndarray:
  """f64[n_out, n_in]: how much of output cell j each input pixel covers, rows summing
  to 1. Shrinking n_in -> n_out pixels by area averaging is `out = R @ in`."""
  lo = np.arange(n_out)[:, None] * (n_in / n_out)  # output cell j spans [lo_j, lo_j + n_in/n_out)
  hi = lo + n_in / n_out
  p = np.arange(n_in)[None, :]  # input pixel p spans [p, p+1)
  return np.clip(np.minimum(hi, p + 1) - np.maximum(lo, p), 0.0, None) * (n_out / n_in)


class AreaResize(NamedTuple):
  """Separable area resize (cv2.INTER_AREA when shrinking) of uint8[H, W, C] to [S, S, C],
  in exact integer arithmetic.

  Area matrices are block diagonal (every H/g input rows map to S/g output rows,
  g = gcd(H, S)) and their weights in a block are multiples of g/H, so one integer
  block per axis holds them. Applied tap by tap with numpy ufuncs, not matmul: BLAS
  threads stall 10-300x when other processes hold the cores, and integers make the
  result exact and machine independent.
  """

  ry: np.ndarray  # i64[S/gy, H/gy]  a diagonal block of area_matrix(S, H) * (H/gy)
  rx: np.ndarray  # i64[S/gx, W/gx]  a diagonal block of area_matrix(S, W) * (W/gx)
  size: int  # S


def make_area_resize(height: int, width: int, size: int) -> AreaResize:
  def block(n_in: int) -> np.ndarray:
    b_in = n_in // math.gcd(n_in, size)
    r = area_matrix(size, n_in)[: size * b_in // n_in, :b_in] * b_in
    return np.rint(r).astype(np.int64)  # exact: overlaps are multiples of 1/b_out

  return AreaResize(block(height), block(width), size)


def area_resize(frames: np.ndarray, r: AreaResize) -> np.ndarray:
  """uint8[N, H, W, C] -> uint8[N, S, S, C], the exact area average rounded to nearest,
  ties to even (as cv2's cvRound; at 210x160 -> 96 or 64 there are no ties)."""
  n, h, w, c = frames.shape
  (_, by), (_, bx), s = r.ry.shape, r.rx.shape, r.size
  d = by * bx  # outputs are (sum of integer-weighted pixels) / d; d = 175 at 96
  dtype = np.uint16 if 255 * d + d // 2 < 2**16 else np.uint32
  rows = _taps(frames.reshape(n, h // by, by, w * c), r.ry, dtype)  # [N, H/by, sy, W*C]
  out = _taps(rows.reshape(n, s, w // bx, bx, c), r.rx, dtype)  # [N, S, W/bx, sx, C]
  if d % 2:  # odd d: no ties
    out += d // 2
    out //= d
  else:
    q = out // d
    twice_rem = 2 * (out - q * d)
    q += (twice_rem > d) | ((twice_rem == d) & (q % 2 == 1))
    out = q
  return out.reshape(n, s, s, c).astype(np.uint8)


def _taps(x: np.ndarray, m: np.ndarray, dtype: type) -> np.ndarray:
  """x[..., b_in, K], m int[b_out, b_in] -> dtype[..., b_out, K], sum_i m[j, i] * x[..., i, :]."""
  out = np.empty((*x.shape[:-2], m.shape[0], x.shape[-1]), dtype)
  tmp = np.empty((*x.shape[:-2], x.shape[-1]), dtype)
  for j, row in enumerate(m):
    first, *rest = np.flatnonzero(row)
    np.multiply(x[..., first, :], dtype(row[first]), out=out[..., j, :])
    for i in rest:
      np.multiply(x[..., i, :], dtype(row[i]), out=tmp)
      out[..., j, :] += tmp
  return out


def luma(frames: np.ndarray) -> np.ndarray:
  """uint8[..., 3] RGB -> uint8[..., 1] grey, exactly as cv2.cvtColor(COLOR_RGB2GRAY)."""
  y = (frames.astype(np.uint32) @ _LUMA + (1 << 14)) >> 15
  return y.astype(np.uint8)[..., None]


# ---------------------------------------------------------------- world


class AtariWorld(World):
  """B Atari games, one `ale_py.ALEInterface` each; see the module docstring.

  Observations uint8[B, frame_size, frame_size, C]; actions index the minimal
  action set (or all 18 with `full_action_set`). `_step_all` reports the true
  score and game ends, so Step.episode_return is the game score in both modes.
  """

  def __init__(
    self,
    game: str,
    num_envs: int,
    seed: int = 0,
    *,
    frame_skip: int = 4,
    noop_max: int = 30,
    sticky_actions: float = 0.0,
    full_action_set: bool = False,
    mode: str = "train",
    max_steps: int = 27_000,
    frame_size: int = 96,
    grayscale: bool = False,
  ) -> None:
    super().__init__(num_envs, seed)
    _check_settings(
      frame_skip=frame_skip,
      noop_max=noop_max,
      max_steps=max_steps,
      frame_size=frame_size,
      sticky_actions=sticky_actions,
      mode=mode,
      full_action_set=full_action_set,
      grayscale=grayscale,
    )
    self.game, self.rom = game, _rom_id(game)
    self.frame_skip, self.noop_max = int(frame_skip), int(noop_max)
    self.sticky_actions, self.full_action_set = float(sticky_actions), bool(full_action_set)
    self.mode, self.max_steps = mode, int(max_steps)
    self.frame_size, self.grayscale = int(frame_size), bool(grayscale)
    h, w = self._open_emulators()
    self._init_buffers(h, w)

  def _open_emulators(self) -> tuple[int, int]:
    """One ALEInterface per env, the first loaded to tell the action set, spec and resize: its screen (h, w)."""
    B, ale_py = self.num_envs, _import_ale()
    # Process-wide; set before the first ALEInterface, which would print a banner.
    ale_py.ALEInterface.setLoggerMode(ale_py.LoggerMode.Error)
    self._rom_path = str(ale_py.roms.get_rom_path(self.rom))
    self._ales = [ale_py.ALEInterface() for _ in range(B)]
    self._loaded = [False] * B  # ROMs load on reset/set_state (~0.1 s each)
    self._load(0, self.seed)  # the first env tells the action set and screen size
    first = self._ales[0]
    acts = first.getLegalActionSet() if self.full_action_set else first.getMinimalActionSet()
    self._actions = [a.value for a in acts]  # agent action k -> ALE action id
    h, w = first.getScreenDims()
    shape = (self.frame_size, self.frame_size, 1 if self.grayscale else 3)
    self._resize = make_area_resize(h, w, self.frame_size)
    self._spec = Spec(shape, np.dtype(np.uint8), len(acts))
    return h, w

  def _init_buffers(self, h: int, w: int) -> None:
    """Each env's random streams and the per-env arrays the steps keep, for screens of h x w."""
    B = self.num_envs
    self._rngs = [np.random.default_rng(_env_seed(self.seed, i)) for i in range(B)]  # no-ops
    self._sticky_rngs = [np.random.default_rng([_env_seed(self.seed, i), 1]) for i in range(B)]
    self._last_action = np.zeros(B, np.int64)  # [B] ALE action id of the last frame
    self._frames = np.zeros((B, 2, h, w, 3), np.uint8)  # [B, 2, H, W, 3] two latest RGB screens
    self._newest = np.zeros(B, np.int64)  # [B] which of the two is the latest
    self._lives = np.zeros(B, np.int64)  # [B] lives at the last step (train mode)
    self._t = np.zeros(B, np.int64)  # [B] steps into the current game
    self._game_over = np.zeros(B, bool)  # [B] set by _step_all for _reset_done

  @property
  def spec(self) -> Spec:
    return self._spec

  def __repr__(self) -> str:
    return f"AtariWorld({self.game!r}, num_envs={self.num_envs}, mode={self.mode!r}, spec={self.spec})"

  # ------------------------------------------------------------ emulator

  def _load(self, i: int, seed: int) -> None:
    ale = self._ales[i]
    ale.setInt("random_seed", _env_seed(seed, i))  # settings are read by loadROM
    ale.setFloat("repeat_action_probability", 0.0)  # we make actions sticky ourselves
    ale.loadROM(self._rom_path)
    self._loaded[i] = True

  def _emulate(self, i: int, action: int) -> tuple[float, bool]:
    """`frame_skip` frames of ALE action id `action` in env i -> (summed reward, game over)."""
    ale, frames, k = self._ales[i], self._frames[i], int(self._newest[i])
    p, rng, last = self.sticky_actions, self._sticky_rngs[i], int(self._last_action[i])
    total = 0.0
    for _ in range(self.frame_skip):
      if p == 0.0 or rng.random() >= p:  # else repeat the previous frame's action
        last = action
      total += ale.act(last)
      k ^= 1
      ale.getScreenRGB(frames[k])
      if ale.game_over():
        break
    self._newest[i], self._last_action[i] = k, last
    return total, ale.game_over()

  def _new_game(self, i: int) -> None:
    ale = self._ales[i]
    ale.reset_game()
    self._last_action[i] = _NOOP  # also the no-ops' effective action, sticky or not
    n = int(self._rngs[i].integers(1, self.noop_max + 1)) if self.noop_max > 0 else 0
    for _ in range(n):
      ale.act(_NOOP)
      if ale.game_over():
        ale.reset_game()
    ale.getScreenRGB(self._frames[i, 0])
    self._frames[i, 1] = self._frames[i, 0]  # so the max-pooled obs is this screen
    self._lives[i] = ale.lives()
    self._t[i] = 0

  def _observe(self, envs: np.ndarray | slice) -> np.ndarray:
    """uint8[N, S, S, C] observations of `envs` from their two latest screens."""
    frames = np.maximum(self._frames[envs, 0], self._frames[envs, 1])  # [N, H, W, 3]
    if self.grayscale:
      frames = luma(frames)
    return area_resize(frames, self._resize)

  # ------------------------------------------------------------ hooks

  def _reset_all(self, seed: int) -> np.ndarray:
    for i in range(self.num_envs):
      self._load(i, seed)
      self._rngs[i] = np.random.default_rng(_env_seed(seed, i))
      self._sticky_rngs[i] = np.random.default_rng([_env_seed(seed, i), 1])
      self._new_game(i)
    return self._observe(slice(None))

  def _step_all(self, action: np.ndarray):
    B, train = self.num_envs, self.mode == "train"
    raw = np.zeros(B, np.float64)  # [B] summed reward of the agent's action
    over = np.zeros(B, bool)  # [B] ALE says the game is over
    for i in range(B):
      raw[i], over[i] = self._emulate(i, self._actions[action[i]])
    self._t += 1
    obs = self._observe(slice(None))

    lives = np.array([ale.lives() for ale in self._ales], np.int64)
    life_lost = train & (lives < self._lives) & (lives > 0)  # EpisodicLifeEnv's test
    self._lives = lives
    score = raw.copy()
    for i in np.flatnonzero(life_lost & ~over & (self._t < self.max_steps)):
      # The next episode's first step (EpisodicLifeEnv.reset's step(0)); see the docstring.
      r, over[i] = self._emulate(i, _NOOP)
      score[i] += r
      self._t[i] += 1
      self._lives[i] = self._ales[i].lives()
    out_of_time = self._t >= self.max_steps
    terminated = over | life_lost
    truncated = out_of_time & ~terminated
    self._game_over = over | out_of_time
    reward = np.sign(raw) if train else raw
    reward, score = reward.astype(np.float32), score.astype(np.float32)
    return obs, reward, terminated, truncated, score, self._game_over.copy()

  def render(self, env: int) -> np.ndarray:
    """The emulator's screen u8[210, 160, 3] (RGB, before any resizing or grey conversion)."""
    return self._ales[env].getScreenRGB()

  def _reset_done(self, done: np.ndarray) -> np.ndarray:
    envs = np.flatnonzero(done)
    for i in envs:
      if self._game_over[i]:
        self._new_game(i)
      # else: a lost life; its no-op step already ran and its screens are the latest
    return self._observe(envs)

  # ------------------------------------------------------------ state

  def _get_state(self) -> dict[str, Any]:
    for i in range(self.num_envs):
      if not self._loaded[i]:
        self._load(i, self.seed)  # cloneState of an emulator without a ROM crashes the process
    return {
      "game": self.game,
      "ale": [ale.cloneState(include_rng=True).serialize() for ale in self._ales],
      "rng": [g.bit_generator.state for g in self._rngs],
      "sticky_rng": [g.bit_generator.state for g in self._sticky_rngs],
      "last_action": self._last_action.copy(),
      "frames": self._frames.copy(),
      "newest": self._newest.copy(),
      "lives": self._lives.copy(),
      "t": self._t.copy(),
    }

  def _set_state(self, state: dict[str, Any]) -> None:
    if state["game"] != self.game:
      raise WorldStateError(
        f"saved world state is for atari:{plain.short(state['game'])}, this world is atari:{self.game}"
      )
    B, blobs = self.num_envs, state["ale"]
    lists = (blobs, state["rng"], state["sticky_rng"])
    if not all(isinstance(x, list) and len(x) == B for x in lists) or not all(type(b) is bytes for b in blobs):
      raise WorldStateError(f"saved atari state is malformed: {B} emulator states and random generators expected")
    rngs = [generator_of(s) for s in state["rng"]]
    sticky = [generator_of(s) for s in state["sticky_rng"]]
    if any(g is None for g in rngs + sticky):
      raise WorldStateError("saved atari state is malformed: a random generator is missing")
    arrays = {k: check_array(state[k], k, np.int64, (B,)) for k in ("last_action", "newest", "lives", "t")}
    frames = check_array(state["frames"], "frames", np.uint8, self._frames.shape)
    bad = (arrays["newest"] < 0) | (arrays["newest"] > 1) | (arrays["t"] < 0) | (arrays["lives"] < 0)
    bad |= (arrays["last_action"] < 0) | (arrays["last_action"] >= _NUM_ALE_ACTIONS)
    if bad.any():
      raise WorldStateError(f"saved atari state is out of range in env {int(np.argmax(bad))}")
    self._restore_emulators(blobs)
    self._rngs, self._sticky_rngs = rngs, sticky
    self._last_action[:], self._frames[:] = arrays["last_action"], frames
    self._newest[:], self._lives[:], self._t[:] = arrays["newest"], arrays["lives"], arrays["t"]

  def _restore_emulators(self, blobs: list[bytes]) -> None:
    """Each emulator from its own serialized state; WorldStateError if ale-py cannot read one."""
    ale_py = _import_ale()
    for i, (ale, blob) in enumerate(zip(self._ales, blobs)):
      if not self._loaded[i]:
        self._load(i, self.seed)  # restoreState needs the ROM; the RNG comes from the state
      try:
        ale.restoreState(ale_py.ALEState(blob))  # ALEState(bytes) inverts .serialize()
      except Exception as e:  # noqa: BLE001 - ale-py raises SystemError, ValueError, RuntimeError for bad bytes
        raise WorldStateError(f"saved emulator state of env {i} is unreadable: {plain.short(str(e), 200)}") from None

  def close(self) -> None:
    self._ales = []  # ALEInterface frees its emulator when collected


def _env_seed(seed: int, i: int) -> int:
  return (seed + i) % 2**31  # ALE's random_seed is a C int


def _check_settings(
  *,
  frame_skip: Any,
  noop_max: Any,
  max_steps: Any,
  frame_size: Any,
  sticky_actions: Any,
  mode: Any,
  full_action_set: Any,
  grayscale: Any,
) -> None:
  """ValueError (one line) naming the first AtariWorld setting that is out of range or of the wrong type."""
  _check_int("frame_skip", frame_skip, 1)
  _check_int("noop_max", noop_max, 0)
  _check_int("max_steps", max_steps, 1)
  shrink = " (area resizing only shrinks the 210x160 screen)"
  _check_int("frame_size", frame_size, 8, 160, shrink)
  p = sticky_actions
  if isinstance(p, bool) or not isinstance(p, (int, float, np.number)) or not 0.0 <= p <= 1.0:
    raise ValueError(f"sticky_actions must be a probability in [0, 1], got {p!r}")
  if mode not in _MODES:
    raise ValueError(f"mode must be 'train' or 'eval', got {mode!r}")
  for name, v in (("full_action_set", full_action_set), ("grayscale", grayscale)):
    if not isinstance(v, (bool, np.bool_)):
      raise ValueError(f"{name} must be True or False, got {v!r}")


def _rom_id(game: str) -> str:
  """ale-py's ROM id of CamelCase `game`, or ValueError suggesting the closest names."""
  roms = game_roms()
  if game not in roms:
    close = close_games(game, roms)
    hint = f"did you mean {' or '.join(map(repr, close))}?" if close else "e.g. 'Pong'"
    raise ValueError(f"unknown Atari game {game!r} (CamelCase ale-py ROM names): {hint}")
  return roms[game]


def _check_int(name: str, v: Any, lo: int, hi: int | None = None, why: str = "") -> None:
  is_int = isinstance(v, (int, np.integer)) and not isinstance(v, bool)
  if not is_int or v < lo or (hi is not None and v > hi):
    allowed = f"an integer >= {lo}" if hi is None else f"an integer in [{lo}, {hi}]"
    raise ValueError(f"{name} must be {allowed}{why}, got {v!r}")
