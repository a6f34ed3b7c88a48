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
  # (move and spawn timers > 0), so only stepping left into the enemy ends the game; the copies leave it running.
  asterix = pytest.importorskip("minatar.environments.asterix")
  game = asterix.Env(ramping=True)
  game.reset()
  game.player_x, game.player_y = 5, 5
  game.entities = [None] * 8
  game.entities[4] = [4, 5, True, False]  # slot 4 is row 5: [x, y, moving right, gold]
  game.entities[5] = [6, 6, False, True]
  game.move_timer, game.spawn_timer = 3, 4
  assert probe.fatal_actions(game, 6) == [False, True, False, False, False, False]  # n l u r d f
  assert not game.terminal and (game.player_x, game.player_y) == (5, 5)
  game.move_timer = 0  # now the enemy steps right this frame: staying, or firing, meets it too
  assert probe.fatal_actions(game, 6) == [True, True, False, False, False, True]


def test_auc_counts_pairs_and_ties():
  assert probe.auc([2.0, 3.0], [1.0]) == 1.0
  assert probe.auc([1.0], [1.0, 2.0]) == 0.25  # one tie (1/2) and one loss over two pairs
  assert probe.auc([], [1.0]) is None
