"""TensorBoard event files that mirror `metrics.jsonl` (still the source of truth), under `RUN_DIR/tensorboard`.

Every numeric value of a record that has `env_steps` becomes a scalar at step `env_steps`: keys with a '/' keep
their name as the tag ('loss/total', 'eval/search_return'), plain keys go under 'run/' ('run/updates'). Left
out: event records (markers such as 'resume', not measurements), booleans, and the closing summary's copy of
the last evaluation (it repeats an evaluation at a later step). A tag gets one point per step: the first value
written at that step wins, as a reader of metrics.jsonl sees first.

A resumed run replays from its checkpoint's env step, and metrics.jsonl's reader drops what the replay
supersedes. So that TensorBoard shows the same, every resume rebuilds the scalar files from metrics.jsonl as it
stands (into a new folder swapped in whole); no reader has to honour a purge. Evaluation videos are animated
images in `tensorboard/videos/`, kept across resumes (a replayed evaluation's video moves its step back, which
TensorBoard's loaders take as a restart of that tag). Events are written synchronously and flushed with every
record, so a killed run's event files hold what its metrics.jsonl holds. Any failure to write (a full disk)
turns TensorBoard off for the rest of the process with one warning; training goes on.
"""

from __future__ import annotations

import io
import os
import shutil
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from tensorboard.compat.proto import event_pb2, summary_pb2
from tensorboard.summary.writer.record_writer import RecordWriter

DIR_NAME = "tensorboard"
VIDEO_DIR = "videos"
PREVIEW_PIXELS = 160  # TensorBoard's copy of a video is strided down to at most this many pixels a side


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
    if k != "env_steps" and type(v) in (int, float) and not (summary and k.startswith("eval/"))
  }


def gif(frames: np.ndarray, *, fps: float) -> bytes:
  """frames u8[T, H, W, 3] -> an animated GIF (TensorBoard's images tab plays it)."""
  from PIL import Image

  images = [Image.fromarray(f) for f in frames]
  out = io.BytesIO()
  images[0].save(out, format="GIF", save_all=True, append_images=images[1:], duration=int(1000 / fps), loop=0)
  return out.getvalue()


class EventFile:
  """One new event file in `folder`, written synchronously (no thread, no TensorFlow)."""

  def __init__(self, folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    name = f"events.out.tfevents.{time.time():.6f}.{socket.gethostname()}.{os.getpid()}"
    self.records = RecordWriter(open(folder / name, "ab"))
    self.add(event_pb2.Event(wall_time=time.time(), file_version="brain.Event:2"))

  def add(self, event: event_pb2.Event) -> None:
    self.records.write(event.SerializeToString())
    self.records.flush()

  def summary(self, values: list[summary_pb2.Summary.Value], step: int) -> None:
    self.add(event_pb2.Event(wall_time=time.time(), step=step, summary=summary_pb2.Summary(value=values)))

  def close(self) -> None:
    self.records.close()


class Board:
  """Writes metrics.jsonl's records to TensorBoard event files in `run_dir/tensorboard` (see the module)."""

  def __init__(
    self, run_dir: Path, *, history: Callable[[], list[dict[str, Any]]], warn: Callable[[str], None]
  ) -> None:
    """`history()`: metrics.jsonl's records as they stand (to rebuild from); `warn(text)`: says once that
    TensorBoard stopped, and why."""
    self.dir = Path(run_dir) / DIR_NAME
    self.history, self.warn = history, warn
    self.file: EventFile | None = None
    self.videos: EventFile | None = None
    self.last: dict[str, int] = {}  # tag -> newest step written
    self.on = True

  def write(self, record: dict[str, Any]) -> None:
    if self.on:
      self._guarded(self._write, record)

  def video(self, name: str, frames: np.ndarray, step: int, *, fps: float) -> None:
    """An episode's frames u8[T, H, W, 3] as an animated image at `step` under tag `name`, strided down to at
    most PREVIEW_PIXELS a side."""
    if self.on and len(frames):
      self._guarded(self._video, name, frames, step, fps)

  def close(self) -> None:
    for f in (self.file, self.videos):
      if f is not None:
        self._guarded(f.close)
    self.file = self.videos = None

  def _guarded(self, fn: Callable[..., None], *args: Any) -> None:
    try:
      fn(*args)
    except Exception as e:  # a full disk, a removed folder: the run goes on without TensorBoard
      self.on = False
      self.warn(f"TensorBoard files in {str(self.dir)!r} are no longer written: {e}")

  def _write(self, record: dict[str, Any]) -> None:
    if record.get("event") == "resume":
      self._rebuild()
      return
    step = record.get("env_steps")
    values = {k: v for k, v in scalars(record).items() if step > self.last.get(k, -1)}
    if values:
      if self.file is None:
        self.file = EventFile(self.dir)
      self.file.summary([summary_pb2.Summary.Value(tag=k, simple_value=v) for k, v in values.items()], step)
      self.last.update(dict.fromkeys(values, step))

  def _rebuild(self) -> None:
    """The scalar files rewritten from metrics.jsonl as it stands, swapped in whole; videos carried over."""
    if self.file is not None:
      self.file.close()
      self.file = None
    fresh = self.dir.with_name(f"{DIR_NAME}.rebuild-{os.getpid()}")
    shutil.rmtree(fresh, ignore_errors=True)
    self.last.clear()
    self.file = EventFile(fresh)
    for record in self.history():
      if "event" not in record:
        self._write(record)
    if (self.dir / VIDEO_DIR).is_dir():
      (self.dir / VIDEO_DIR).rename(fresh / VIDEO_DIR)
    old = self.dir.with_name(f"{DIR_NAME}.old-{os.getpid()}")
    if self.dir.exists():
      self.dir.rename(old)
    fresh.rename(self.dir)  # the open file moves with its folder: writing goes on in it
    shutil.rmtree(old, ignore_errors=True)

  def _video(self, name: str, frames: np.ndarray, step: int, fps: float) -> None:
    stride = -(-max(frames.shape[1:3]) // PREVIEW_PIXELS)
    small = np.ascontiguousarray(frames[:, ::stride, ::stride])
    _, h, w, _ = small.shape
    image = summary_pb2.Summary.Image(height=h, width=w, colorspace=3, encoded_image_string=gif(small, fps=fps))
    if self.videos is None:
      self.videos = EventFile(self.dir / VIDEO_DIR)
    self.videos.summary([summary_pb2.Summary.Value(tag=name, image=image)], step)
