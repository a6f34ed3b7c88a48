"""scripts/death_probe.py: which actions end a MinAtar game at once, on a hand-set Asterix state, and its AUC."""

import importlib.util
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "death_probe.py"
spec = importlib.util.spec_from_file_location("death_probe", SCRIPT)
probe = importlib.util.module_from_spec(spec)
spec.loader.exec_module(probe)


def test_fatal_actions_on_a_hand_set_asterix_state():
  # The player at (5, 5); an enemy on its left at (4, 5) moving right, gold below-right. Nothing moves this frame
  # (move and spawn timers > 0), so only stepping left into the enemy ends the game; the copies leave it running,
  # sticky actions included (every copy acts as asked).
  minatar = pytest.importorskip("minatar")
  env = minatar.Environment("asterix", sticky_action_prob=1.0)
  env.last_action = 0
  game = env.env
  game.player_x, game.player_y = 5, 5
  game.entities = [None] * 8
  game.entities[4] = [4, 5, True, False]  # slot 4 is row 5: [x, y, moving right, gold]
  game.entities[5] = [6, 6, False, True]
  game.move_timer, game.spawn_timer = 3, 4
  assert probe.fatal_actions(env, range(6)) == [False, True, False, False, False, False]  # n l u r d f
  assert not game.terminal and (game.player_x, game.player_y) == (5, 5) and env.sticky_action_prob == 1.0
  game.move_timer = 0  # now the enemy steps right this frame: staying, or firing, meets it too
  assert probe.fatal_actions(env, range(6)) == [True, True, False, False, False, True]
  assert probe.fatal_actions(env, [3, 1]) == [False, True]  # the world's action ids, in its order


def test_auc_pairs_only_within_a_step_and_counts_ties():
  assert probe.auc([([2.0, 3.0], [1.0])]) == 1.0
  assert probe.auc([([1.0], [1.0, 2.0])]) == 0.25  # one tie (1/2) and one loss over two pairs
  # Pooled over steps these would rank 9 and 8 above 2 and 1; within each step the fatal move wins both times.
  assert probe.auc([([1.0], [2.0]), ([8.0], [9.0])]) == 0.0
  assert probe.auc([([], [1.0])]) is None


def _freeway(row: int, cars: dict[int, tuple[int, int, int]]):
  """A Freeway game with the chicken on `row`, free to move, and cars {row: (x, timer, speed)}; the other rows'
  cars parked at x 0, not moving this frame."""
  minatar = pytest.importorskip("minatar")
  env = minatar.Environment("freeway", sticky_action_prob=1.0)
  env.last_action = 0
  game = env.env
  game.pos, game.move_timer = row, 0
  game.cars = [[*cars.get(r, (0, 3, 3))[:1], r, *cars.get(r, (0, 3, 3))[1:]] for r in range(1, 9)]
  return env


def test_freeway_collisions_are_fatal_and_a_step_down_or_a_crossing_is_not():
  # Row 5: a car standing on column 4 of row 4 (UP walks into it) and one on row 5 stepping onto column 4 this
  # frame (staying is hit); DOWN to row 6 is safe. Freeway's only moves are n, u, d; l, r, f are no-ops.
  env = _freeway(5, {4: (4, 3, 3), 5: (3, 0, 1)})
  assert probe.fatal_actions(env, range(6)) == [True, True, True, True, False, True]  # n l u r d f
  assert env.env.pos == 5 and env.env.cars[4][0] == 3  # the copies leave the game as it was
  # Row 8: staying is hit by a car stepping left onto column 4; DOWN lands on row 9 by itself: not a hit.
  env = _freeway(8, {8: (5, 0, -1)})
  assert probe.fatal_actions(env, range(6)) == [True, True, False, True, False, True]
  # Row 1: UP crosses (reward 1, back to row 9): not a hit; nothing else is near.
  assert probe.fatal_actions(_freeway(1, {}), range(6)) == [False] * 6
