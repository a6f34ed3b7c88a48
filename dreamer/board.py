"""TensorBoard event files that mirror `metrics.jsonl` (still the source of truth), under `RUN_DIR/tensorboard`.

Every numeric value of a record that has `env_steps` becomes a scalar at step `env_steps`: keys with a '/' keep
their name as the tag ('loss/total', 'eval/search_return'), plain keys go under 'run/' ('run/updates'). Left
out: event records (markers such as 'resume', not measurements), booleans, and the closing summary's copy of
the last evaluation (it repeats an evaluation at a later step). A tag gets one point per step: the first value
written at that step wins, as a reader of metrics.jsonl would see first.

A resumed run replays from its checkpoint's env step S: its resume marker opens a new event file whose first
event purges every point at steps > S (TensorBoard's purge, a SessionLog.START at step S + 1), so the curves
continue without duplicated or out-of-order points. Events are flushed with every record, so a killed run's
event files hold what its metrics.jsonl holds. A run whose event files are missing (TensorBoard was off, or
they were deleted) gets them rebuilt from metrics.jsonl when it resumes.

Writers and protocol buffers are TensorBoard's own (`tensorboard.summary.writer`, the writer PyTorch uses).
"""

from __future__ import annotations

import io
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

DIR_NAME = "tensorboard"


def tag(key: str) -> str:
  return key if "/" in key else f"run/{key}"


def scalars(record: dict[str, Any]) -> dict[str, float]:
  """The TensorBoard scalars {tag: value} of one metrics.jsonl record (see the module's rules)."""
  if "event" in record or type(record.get("env_steps")) is not int:
    return {}
  summary = bool(record.get("summary"))
  return {
    tag(k): float(v)
    for k, v in record.items()
    if k != "env_steps"
    and type(v) in (int, float)
    and not (summary and k.startswith("eval/"))
  }  # fmt: skip


def gif(frames: np.ndarray, *, fps: float) -> bytes:
  """frames u8[T, H, W, 3] -> an animated GIF (TensorBoard's images tab plays it)."""
  from PIL import Image

  images = [Image.fromarray(f) for f in frames]
  out = io.BytesIO()
  images[0].save(out, format="GIF", save_all=True, append_images=images[1:], duration=int(1000 / fps), loop=0)
  return out.getvalue()


class Board:
  """Writes metrics.jsonl's records to TensorBoard event files in `run_dir/tensorboard` (see the module)."""

  def __init__(self, run_dir: Path, *, history: Callable[[], list[dict[str, Any]]]) -> None:
    """`history()` returns metrics.jsonl's records as they stand (to rebuild missing event files from)."""
    self.dir = Path(run_dir) / DIR_NAME
    self.history = history
    self.writer = None
    self.last: dict[str, int] = {}  # tag -> newest step written by this process
    self.floor = -1  # steps at or below this were written before a resume

  def _open(self, purge_from: int | None = None) -> None:
    from tensorboard.compat.proto import event_pb2
    from tensorboard.summary.writer.event_file_writer import EventFileWriter

    if self.writer is not None:
      self.writer.close()
    self.writer = EventFileWriter(str(self.dir))
    if purge_from is not None:
      start = event_pb2.SessionLog(status=event_pb2.SessionLog.START)
      self.writer.add_event(event_pb2.Event(wall_time=time.time(), step=purge_from, session_log=start))

  def write(self, record: dict[str, Any]) -> None:
    if record.get("event") == "resume" and type(record.get("env_steps")) is int:
      self.resume(record["env_steps"])
      return
    step = record.get("env_steps")
    values = {k: v for k, v in scalars(record).items() if step > max(self.floor, self.last.get(k, -1))}
    if not values:
      return
    from tensorboard.compat.proto import summary_pb2

    summary = summary_pb2.Summary(value=[summary_pb2.Summary.Value(tag=k, simple_value=v) for k, v in values.items()])
    self._add(summary, step)
    self.last.update(dict.fromkeys(values, step))

  def resume(self, step: int) -> None:
    """Continue at env step `step`: purge later points, or rebuild the files from metrics.jsonl if there are none."""
    had_files = self.dir.is_dir() and any(self.dir.glob("events.out.tfevents.*"))
    self.last.clear()
    self.floor = -1
    self._open(purge_from=step + 1 if had_files else None)
    if not had_files:  # metrics.jsonl as it stands (its resume marker is already written) rebuilds the curves
      for record in self.history():
        if "event" not in record:
          self.write(record)
    self.floor = step

  def video(self, name: str, frames: np.ndarray, step: int, *, fps: float) -> None:
    """An episode's frames u8[T, H, W, 3] as an animated image at `step` under tag `name`."""
    from tensorboard.compat.proto import summary_pb2

    t, h, w, _ = frames.shape
    image = summary_pb2.Summary.Image(height=h, width=w, colorspace=3, encoded_image_string=gif(frames, fps=fps))
    self._add(summary_pb2.Summary(value=[summary_pb2.Summary.Value(tag=name, image=image)]), step)

  def _add(self, summary, step: int) -> None:
    from tensorboard.compat.proto import event_pb2

    if self.writer is None:
      self._open()
    self.writer.add_event(event_pb2.Event(wall_time=time.time(), step=step, summary=summary))
    self.writer.flush()

  def close(self) -> None:
    if self.writer is not None:
      self.writer.close()
      self.writer = None
