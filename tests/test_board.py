"""TensorBoard mirrors metrics.jsonl: every scalar at the same step, read back with TensorBoard's own reader;
after a resume from an older checkpoint (as after a kill) no step is duplicated or out of order."""

import errno
import shutil

from helpers import assert_mirrors, board_points

from dreamer import board
from dreamer import config as config_lib
from dreamer.logger import read_metrics
from dreamer.train import train

OVERRIDES = ["stop_return=inf", "total_env_steps=800", "checkpoint_every_updates=16", "checkpoints_kept=5"]
# One tag of every kind of record: losses, training, evaluations, counters, speeds, memory, timers, dreaming.
EVERY_KIND = {
  "loss/total", "loss/value", "train/grad_norm", "eval/search_return", "eval/policy_return", "run/updates",
  "run/wall_s", "speed/updates_per_s", "sys/rss_bytes", "replay/bytes", "time/learn_s", "dream/ratio",
}  # fmt: skip


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
  assert EVERY_KIND <= set(board_points(tmp_path))
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


def test_a_stopped_run_resumed_to_its_end_and_run_again_mirrors_metrics(tmp_path):
  """The common resume: a clean stop (its summary at step S), a resume to the end, then the same command on
  the finished run; the stop's summary must leave TensorBoard as it leaves metrics.jsonl."""
  config = config_lib.load("debug", OVERRIDES)
  first = train(config, tmp_path, console=False, stop_after_updates=40)
  second = train(config, tmp_path, console=False)
  assert second["resumed_from"] == first["env_steps"] and second["env_steps"] == 800
  assert_mirrors(tmp_path)
  train(config, tmp_path, console=False)
  assert_mirrors(tmp_path)
  assert [s for s, _ in board_points(tmp_path)["time/learn_s"]] == [800]


def test_a_board_that_cannot_be_written_is_reported_once_and_training_goes_on(tmp_path, capsys, monkeypatch):
  """A full disk under the event files (the 10th write fails): one warning, one event, the run finishes."""
  add, calls = board.EventFile.add, []

  def failing_add(self, event):
    calls.append(1)
    if len(calls) >= 10:
      raise OSError(errno.ENOSPC, "No space left on device")
    add(self, event)

  monkeypatch.setattr(board.EventFile, "add", failing_add)
  summary = train(config_lib.load("debug", OVERRIDES), tmp_path, console=False)
  assert summary["env_steps"] == 800 and len(calls) == 10  # nothing more was tried once it failed
  failed = [r for r in read_metrics(tmp_path) if r.get("event") == "tensorboard_failed"]
  assert len(failed) == 1 and "No space left on device" in failed[0]["error"]
  assert capsys.readouterr().err.count("are no longer written") == 1
