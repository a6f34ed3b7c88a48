"""TensorBoard mirrors metrics.jsonl: every scalar at the same step, read back with TensorBoard's own reader;
after a resume from an older checkpoint (as after a kill) no step is duplicated or out of order."""

import shutil

from helpers import assert_mirrors, board_points

from dreamer import board
from dreamer import config as config_lib
from dreamer.train import train

OVERRIDES = ["stop_return=inf", "total_env_steps=800", "checkpoint_every_updates=16", "checkpoints_kept=5"]


def test_scalars_follow_the_rules():
  assert board.scalars({"env_steps": 5, "updates": 2, "loss/total": 0.5, "solved": True, "error": "x"}) == {
    "run/updates": 2.0,
    "loss/total": 0.5,
  }
  assert board.scalars({"event": "resume", "env_steps": 5, "updates": 2}) == {}
  assert board.scalars({"updates": 2}) == {}  # no step
  assert board.scalars({"summary": True, "env_steps": 9, "eval/search_return": 3.0, "wall_s": 1.5}) == {
    "run/wall_s": 1.5
  }


def test_a_run_and_its_resume_from_an_older_checkpoint_mirror_metrics(tmp_path):
  config = config_lib.load("debug", OVERRIDES)
  first = train(config, tmp_path, console=False, stop_after_updates=70)
  assert_mirrors(tmp_path)
  assert {"loss/total", "eval/search_return", "run/updates", "dream/ratio"} <= set(board_points(tmp_path))
  # As after a kill: the newest checkpoint is gone, so the run resumes from an older one while metrics.jsonl
  # and the event files already hold points past it.
  steps = sorted(int(p.name) for p in (tmp_path / "checkpoints").iterdir() if p.name.isdigit())
  shutil.rmtree(tmp_path / "checkpoints" / str(steps[-1]))
  second = train(config, tmp_path, console=False)
  assert second["resumed_from"] == steps[-2] < first["env_steps"]
  assert_mirrors(tmp_path)
  losses = board_points(tmp_path)["loss/total"]
  assert any(s > first["env_steps"] for s, _ in losses)


def test_missing_event_files_are_rebuilt_on_resume(tmp_path):
  config = config_lib.load("debug", OVERRIDES + ["tensorboard=false"])
  train(config, tmp_path, console=False, stop_after_updates=40)
  assert not (tmp_path / board.DIR_NAME).exists()
  train(config_lib.load("debug", OVERRIDES), tmp_path, console=False)
  assert_mirrors(tmp_path)
