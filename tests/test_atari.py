"""AtariWorld against a slow reference that drives ale_py.ALEInterface directly.

The reference is written from the protocol (see worlds/atari.py's docstring), not from
the world's code: its resize is an explicit per-output-pixel loop over exact 2-D
coverage, its frames a plain list, its bookkeeping one env at a time.
"""

import math
from functools import cache
from pathlib import Path

import numpy as np
import pytest

ale_py = pytest.importorskip("ale_py")
from ale_py import roms  # noqa: E402

import worlds  # noqa: E402
from worlds import ATARI100K_GAMES, AtariWorld  # noqa: E402
from worlds.atari import area_matrix, game_roms, luma  # noqa: E402

NOOP = 0
ale_py.ALEInterface.setLoggerMode(ale_py.LoggerMode.Error)


# ------------------------------------------------------------------ reference


@cache
def coverage(size: int, h: int = 210, w: int = 160):
  """For every (output pixel, source pixel) pair that overlaps: the share of the output
  pixel's area the source pixel covers. Coordinates are scaled by `size` so that all
  boundaries are integers: output pixel y spans [y*h, (y+1)*h), source row r spans
  [r*size, (r+1)*size)."""
  out, src, wt = [], [], []
  for y in range(size):
    for x in range(size):
      for r in range(y * h // size, math.ceil((y + 1) * h / size)):
        dy = min((y + 1) * h, (r + 1) * size) - max(y * h, r * size)
        for c in range(x * w // size, math.ceil((x + 1) * w / size)):
          dx = min((x + 1) * w, (c + 1) * size) - max(x * w, c * size)
          if dy > 0 and dx > 0:
            out.append(y * size + x)
            src.append(r * w + c)
            wt.append(dy * dx / (h * w))
  return np.array(out), np.array(src), np.array(wt)


def ref_warp(rgb: np.ndarray, size: int, gray: bool) -> np.ndarray:
  """210x160x3 -> size x size x C. Grey is cv2's fixed-point luma (OpenCV 4/5:
  coefficients 0.299, 0.587, 0.114 scaled by 2**15). Exact 2-D area average, rounded
  half up: at sizes 96 and 64 an average is never within 1/350 of a tie (its weights'
  common denominator, 175 or 525, is odd), so any correct rounding agrees."""
  img = rgb.astype(np.int64)
  if gray:
    r, g, b = img[..., 0], img[..., 1], img[..., 2]
    img = ((9798 * r + 19235 * g + 3735 * b + 2**14) >> 15)[..., None]
  out_idx, src_idx, wt = coverage(size)
  flat = img.reshape(-1, img.shape[-1]).astype(np.float64)
  chans = [np.bincount(out_idx, weights=wt * flat[src_idx, ch], minlength=size * size) for ch in range(flat.shape[1])]
  return np.floor(np.stack(chans, -1) + 0.5).reshape(size, size, -1).astype(np.uint8)


class RefEnv:
  """One Atari env under the protocol, one emulator call at a time."""

  def __init__(self, rom, seed, *, mode, max_steps, size, gray, sticky=0.0):
    self.ale = ale_py.ALEInterface()
    self.ale.setInt("random_seed", seed)
    self.ale.setFloat("repeat_action_probability", 0.0)  # ALE's default is 0.25
    self.ale.loadROM(roms.get_rom_path(rom))
    self.rng = np.random.default_rng(seed)  # no-op counts
    self.sticky, self.sticky_rng = sticky, np.random.default_rng([seed, 1])
    self.actions = [a.value for a in self.ale.getMinimalActionSet()]
    self.train, self.max_steps, self.size, self.gray = mode == "train", max_steps, size, gray
    self.score, self.length = 0.0, 0  # of the current game

  def new_game(self) -> np.ndarray:
    self.ale.reset_game()
    self.prev = NOOP  # the action a sticky frame repeats
    for _ in range(self.rng.integers(1, 31)):  # noop_max=30
      self.ale.act(NOOP)
      if self.ale.game_over():
        self.ale.reset_game()
    self.screens = [self.ale.getScreenRGB()]
    self.lives, self.t = self.ale.lives(), 0
    return self.obs()

  def obs(self) -> np.ndarray:  # max of the two latest screens (just one after a new game)
    return ref_warp(np.max(self.screens[-2:], axis=0), self.size, self.gray)

  def skip4(self, a: int) -> float:
    total = 0.0
    for _ in range(4):
      # ALE's rule for repeat_action_probability, with our own generator
      if not (self.sticky > 0 and self.sticky_rng.random() < self.sticky):
        self.prev = a
      total += self.ale.act(self.prev)
      self.screens = self.screens[-1:] + [self.ale.getScreenRGB()]
      if self.ale.game_over():
        break
    return total

  def step(self, k: int) -> dict:
    raw = self.skip4(self.actions[k])
    self.t += 1
    final = self.obs()
    over = self.ale.game_over()
    lives = self.ale.lives()
    lost = self.train and 0 < lives < self.lives
    self.lives = lives
    score = raw
    if lost and not over and self.t < self.max_steps:  # next episode's no-op step, taken now
      score += self.skip4(NOOP)
      self.t += 1
      over = self.ale.game_over()
      self.lives = self.ale.lives()
    game_over = over or self.t >= self.max_steps
    terminated = over or lost
    self.score += score
    self.length += 1
    out = dict(
      final_obs=final,
      raw=raw,
      reward=np.sign(raw) if self.train else raw,
      terminated=terminated,
      truncated=self.t >= self.max_steps and not terminated,
      episode_return=self.score if game_over else np.nan,
      episode_length=self.length if game_over else 0,
      game_over=game_over,
    )
    if game_over:
      self.score, self.length = 0.0, 0
      out["obs"] = self.new_game()
    else:
      out["obs"] = self.obs() if terminated else final
    return out


def scripted(num_actions: int, T: int, env: int) -> np.ndarray:
  """Deterministic actions: FIRE (1) every 16 steps, else blocks of 5 of each other action."""
  t = np.arange(T) + 7 * env
  return np.where(t % 16 == 0, 1, (t // 5) % num_actions)


# ------------------------------------------------------------------ world == reference


CASES = [
  # game, mode, max_steps, frame_size, grayscale, sticky, steps
  ("Breakout", "train", 27_000, 96, False, 0.0, 450),  # 5 lives: life losses, then game overs
  ("Breakout", "eval", 70, 64, True, 0.0, 160),  # whole games; truncations at 70 steps
  ("Breakout", "train", 27_000, 64, True, 0.25, 450),  # sticky actions
  ("Pong", "train", 130, 96, True, 0.0, 280),  # no lives: clipped points, truncations
  ("Pong", "eval", 27_000, 64, False, 0.0, 200),  # true points
  ("MsPacman", "train", 27_000, 64, False, 0.0, 150),  # 10-point pellets: clipped to 1
]
NUM_ACTIONS = {"Breakout": 4, "Pong": 6, "MsPacman": 9}


@pytest.mark.parametrize("game, mode, max_steps, size, gray, sticky, T", CASES)
def test_world_matches_reference(game, mode, max_steps, size, gray, sticky, T):
  B, seed = 2, 11
  kw = dict(mode=mode, max_steps=max_steps)
  kw = dict(kw, frame_size=size, grayscale=gray, sticky_actions=sticky)
  world = worlds.make(f"atari:{game}", num_envs=B, seed=seed, **kw)
  assert world.spec == ((size, size, 1 if gray else 3), np.uint8, NUM_ACTIONS[game])
  rom = game_roms()[game]
  refs = [RefEnv(rom, seed + i, mode=mode, max_steps=max_steps, size=size, gray=gray, sticky=sticky) for i in range(B)]
  obs = world.reset()
  np.testing.assert_array_equal(obs, np.stack([r.new_game() for r in refs]))
  acts = np.stack([scripted(world.spec.num_actions, T, i) for i in range(B)], 1)  # [T, B]
  seen = dict(life_lost=0, game_over=0, truncated=0, multi_life_game=0, reward=0, clipped=0)
  episodes = np.zeros(B, int)  # episodes in the current game
  for t in range(T):
    s = world.step(acts[t])
    for i, ref in enumerate(refs):
      want = ref.step(int(acts[t, i]))
      where = f"t={t} env={i}"
      np.testing.assert_array_equal(s.final_obs[i], want["final_obs"], err_msg=where)
      np.testing.assert_array_equal(s.obs[i], want["obs"], err_msg=where)
      assert s.reward[i] == want["reward"], where
      assert s.terminated[i] == want["terminated"], where
      assert s.truncated[i] == want["truncated"], where
      want_return = np.float32(want["episode_return"])
      np.testing.assert_array_equal(s.episode_return[i], want_return, err_msg=where)
      assert s.episode_length[i] == want["episode_length"], where
      episodes[i] += s.terminated[i] or s.truncated[i]
      seen["life_lost"] += s.terminated[i] and not want["game_over"]
      seen["game_over"] += want["game_over"]
      seen["truncated"] += s.truncated[i]
      seen["reward"] += s.reward[i] != 0
      seen["clipped"] += abs(want["raw"]) > 1
      if want["game_over"]:
        seen["multi_life_game"] += episodes[i] > 1 and s.episode_return[i] > 0
        episodes[i] = 0
  assert s.obs.dtype == np.uint8 and s.reward.dtype == np.float32
  # The scripted runs reach the cases they are meant to check.
  assert seen["reward"] > 0, seen
  if game == "Breakout":
    assert seen["game_over"] > 0, seen
  if game == "Breakout" and mode == "train":
    assert seen["life_lost"] >= 4 and seen["multi_life_game"] > 0, seen
  if game == "MsPacman":
    assert seen["clipped"] > 0, seen
  if mode == "eval":
    assert seen["life_lost"] == 0, seen
  if max_steps < 1000:
    assert seen["truncated"] > 0, seen


def test_breakout_train_life_loss_continues_the_game():
  """A lost life ends the episode (terminated) but not the game: no game stats, and the
  points of every life add up to the game's score."""
  w = worlds.make("atari:Breakout", num_envs=1, seed=3)
  w.reset()
  acts = scripted(4, 400, 0)
  ends, returns, points = [], [], [0.0]  # points: clipped rewards per life
  for t in range(400):
    s = w.step(acts[t : t + 1])
    points[-1] += s.reward[0]
    if s.terminated[0]:
      ends.append(t)
      returns.append(float(s.episode_return[0]))
      points.append(0.0)
    if returns and not np.isnan(returns[-1]):
      break
  assert len(ends) == 5  # Breakout has 5 lives: 4 episodes end without the game, then the game
  assert all(np.isnan(returns[:4])) and not np.isnan(returns[4])
  assert sum(p > 0 for p in points) >= 2  # scored in several lives ...
  assert returns[4] >= sum(points) > max(points)  # ... and the game's score holds them all
  assert s.episode_length[0] == ends[-1] + 1  # agent steps of all five lives


def test_life_lost_on_the_last_allowed_step_terminates_and_ends_the_game():
  acts = scripted(4, 200, 0)
  w = worlds.make("atari:Breakout", num_envs=1, seed=3)
  w.reset()
  first = next(t for t in range(200) if w.step(acts[t : t + 1]).terminated[0])
  w = worlds.make("atari:Breakout", num_envs=1, seed=3, max_steps=first + 1)
  w.reset()
  for t in range(first + 1):
    s = w.step(acts[t : t + 1])
  assert s.terminated[0] and not s.truncated[0]  # termination takes precedence
  # ... and the game ends too: its stats are reported
  assert not np.isnan(s.episode_return[0]) and s.episode_length[0] == first + 1


# ------------------------------------------------------------------ saved state


def _ended(s) -> bool:
  return bool((s.terminated | s.truncated).any())


@pytest.mark.parametrize("sticky, frame_skip", [(0.0, 4), (0.25, 4), (0.0, 1)])
def test_state_round_trip_is_bit_identical(sticky, frame_skip):
  """Worlds rebuilt from get_state() step exactly as the original would have. Handed over
  just before episode ends (lives, step counters and no-op draws matter there) and
  mid-episode; frame_skip=1 makes every obs depend on the previous step's screen."""
  kw = dict(num_envs=2, sticky_actions=sticky, frame_skip=frame_skip, max_steps=150)
  acts = np.stack([scripted(4, 400, i) for i in range(2)], 1)
  first = worlds.make("atari:Breakout", seed=5, **kw)
  first.reset()
  ends = [t for t, x in enumerate(acts) if _ended(first.step(x))]
  assert len(ends) >= (8 if frame_skip == 4 else 2)
  handovers = set(ends[:8]) | {20}

  a = worlds.make("atari:Breakout", seed=5, **kw)
  a.reset()
  b = None
  for t, x in enumerate(acts):
    if t in handovers:  # another seed: all must come from the state
      b = worlds.make("atari:Breakout", seed=100 + t, **kw)
      b.set_state(a.get_state())
    sa = a.step(x)
    if b is not None:
      sb = b.step(x)
      for f, y, z in zip(sa._fields, sa, sb):
        np.testing.assert_array_equal(y, z, err_msg=f"t={t} {f}")


def test_state_of_another_game_is_refused():
  a = worlds.make("atari:Pong", num_envs=1)
  a.reset()
  msg = "for atari:Pong, this world is atari:Breakout"
  with pytest.raises(worlds.WorldStateError, match=msg):
    worlds.make("atari:Breakout", num_envs=1).set_state(a.get_state())


def test_luma_is_cv2_fixed_point():
  # Expected values from cv2.cvtColor(COLOR_RGB2GRAY) (OpenCV 5.0); 14-bit fixed point
  # would give 192 211 104 61 169, rounding the float sum 192 212 104 61 170.
  rgb = np.array([[228, 205, 35], [232, 240, 11], [167, 46, 233], [41, 48, 176], [91, 236, 33]], np.uint8)
  np.testing.assert_array_equal(luma(rgb)[:, 0], [193, 212, 103, 60, 170])


def test_area_matrix_exact_small_case():
  # 3 pixels -> 2: each output cell is 1.5 pixels wide: all of one pixel, half of the middle.
  np.testing.assert_allclose(area_matrix(2, 3), [[2 / 3, 1 / 3, 0], [0, 1 / 3, 2 / 3]])
  r = area_matrix(96, 210)
  np.testing.assert_allclose(r.sum(1), 1.0)
  assert r.shape == (96, 210) and (r > 0).sum(1).max() == 4


# ------------------------------------------------------------------ options


def test_sticky_actions_deterministic_given_seed_and_differ_from_none():
  acts = np.stack([scripted(6, 150, i) for i in range(2)], 1)

  def run(sticky, seed=0):
    w = worlds.make("atari:Pong", num_envs=2, seed=seed, sticky_actions=sticky, mode="eval")
    return np.stack([w.reset()] + [w.step(x).obs for x in acts])

  sticky = run(0.25)
  np.testing.assert_array_equal(sticky, run(0.25))
  assert not np.array_equal(sticky, run(0.0))
  assert not np.array_equal(sticky, run(0.25, seed=1))


def test_action_sets():
  assert worlds.make("atari:Pong", num_envs=1).spec.num_actions == 6
  assert worlds.make("atari:Pong", num_envs=1, full_action_set=True).spec.num_actions == 18


def test_atari100k_games_have_roms():
  assert len(ATARI100K_GAMES) == len(set(ATARI100K_GAMES)) == 26
  names = game_roms()
  for g in ATARI100K_GAMES:
    assert Path(roms.get_rom_path(names[g])).is_file(), g
  assert names["MsPacman"] == "ms_pacman" and names["UpNDown"] == "up_n_down"
  assert names["TicTacToe3D"] == "tic_tac_toe_3d"  # beyond the 26: any ale-py ROM
  assert "Combat" not in names  # two-player ROMs would kill the process on load


def test_default_protocol():
  w = worlds.make("atari:MsPacman", num_envs=1)
  assert isinstance(w, AtariWorld)
  assert (w.frame_skip, w.noop_max, w.sticky_actions, w.full_action_set) == (4, 30, 0.0, False)
  assert (w.mode, w.max_steps, w.frame_size, w.grayscale) == ("train", 27_000, 96, False)
  assert w.spec == ((96, 96, 3), np.uint8, 9)
  w.close()
  w.close()  # idempotent


# ------------------------------------------------------------------ bad input


def test_unknown_game_one_line_with_close_matches():
  with pytest.raises(ValueError) as e:
    worlds.make("atari:Pongg", num_envs=1)
  msg = str(e.value)
  assert "\n" not in msg and msg.startswith("unknown world 'atari:Pongg': no such Atari game")
  assert "did you mean 'atari:Pong'" in msg
  with pytest.raises(ValueError, match="did you mean 'atari:MsPacman'"):
    worlds.make("atari:mspacman", num_envs=1)


@pytest.mark.parametrize(
  "kwargs, pattern",
  [
    (dict(frame_size=7), r"frame_size must be an integer in \[8, 160\].*got 7"),
    (dict(frame_size=200), r"frame_size must be an integer in \[8, 160\].*got 200"),
    (dict(frame_size=96.0), r"frame_size must be an integer in \[8, 160\]"),
    (dict(mode="test"), r"mode must be 'train' or 'eval', got 'test'"),
    (dict(noop_max=-1), r"noop_max must be an integer >= 0, got -1"),
    (dict(sticky_actions=1.5), r"sticky_actions must be a probability in \[0, 1\], got 1.5"),
    (dict(sticky_actions=-0.1), r"sticky_actions must be a probability in \[0, 1\], got -0.1"),
    (dict(frame_skip=0), r"frame_skip must be an integer >= 1, got 0"),
    (dict(max_steps=0), r"max_steps must be an integer >= 1, got 0"),
    (dict(grayscale="yes"), r"grayscale must be True or False, got 'yes'"),
  ],
)
def test_bad_options_one_line(kwargs, pattern):
  with pytest.raises(ValueError, match=pattern) as e:
    worlds.make("atari:Pong", num_envs=1, **kwargs)
  assert "\n" not in str(e.value)
