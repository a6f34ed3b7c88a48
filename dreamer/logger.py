"""One logger: `metrics.jsonl` is the source of truth; the console line and TensorBoard's event files
(`dreamer/board.py`) are views of it.

A resumed run appends `{"event": "resume", "env_steps": S, ...}` and then replays from env step S, so records
written after the checkpoint it resumed from are superseded; `read_metrics` returns the run as it stands.
"""

from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path
from typing import Any, TextIO

from dreamer.board import Board


def _plain(value: Any) -> Any:
  if isinstance(value, (bool, str)) or value is None:
    return value
  try:
    value = float(value)
  except (TypeError, ValueError):
    return value
  if math.isfinite(value) and value == int(value) and abs(value) < 2**53:
    return int(value)
  return value if math.isfinite(value) else None


class Logger:
  """Appends one JSON object per record to `run_dir/metrics.jsonl` and keeps a progress line on the console."""

  def __init__(
    self,
    run_dir: Path,
    *,
    total_env_steps: int,
    console: bool = True,
    stream: TextIO = sys.stderr,
    tensorboard: bool = False,
  ):
    self.path = Path(run_dir) / "metrics.jsonl"
    self.board = Board(run_dir, history=lambda: read_metrics(run_dir), warn=self._board_failed) if tensorboard else None
    _drop_partial_line(self.path)
    self.file = open(self.path, "a", buffering=1)
    self.total = total_env_steps
    self.console = console
    self.stream = stream
    self.tty = stream.isatty()
    self.view: dict[str, Any] = {}
    self.last_print = 0.0

  def write(self, record: dict[str, Any]) -> None:
    record = {k: _plain(v) for k, v in record.items()}
    self.file.write(json.dumps(record) + "\n")
    if self.board is not None:
      self.board.write(record)
    self.view.update({k: v for k, v in record.items() if v is not None})
    self._show(force="eval/search_return" in record)

  def video(self, name: str, frames, step: int, *, fps: float) -> None:
    """An evaluation episode's first frames u8[T, H, W, 3] to TensorBoard (the mp4 is the video's record)."""
    if self.board is not None:
      self.board.video(name, frames, step, fps=fps)

  def _board_failed(self, text: str) -> None:
    print(f"dreamer: warning: {text}; training goes on", file=sys.stderr, flush=True)  # even when quiet
    self.file.write(json.dumps({"event": "tensorboard_failed", "error": text}) + "\n")

  def _show(self, force: bool) -> None:
    if not self.console:
      return
    now = time.monotonic()
    if not force and (not self.tty or now - self.last_print < 0.5):
      return
    self.last_print = now
    v = self.view
    steps = v.get("env_steps", 0)
    width = 20
    filled = int(width * min(steps / self.total, 1.0))
    parts = [f"[{'#' * filled}{'.' * (width - filled)}] {steps}/{self.total} steps"]
    for key, label, fmt in [
      ("train/episode_return", "return", ".1f"),
      ("eval/search_return", "eval search", ".1f"),
      ("eval/policy_return", "eval policy", ".1f"),
      ("loss/total", "loss", ".3f"),
      ("dream/ratio", "dream", ".0f"),
      ("speed/updates_per_s", "upd/s", ".1f"),
      ("speed/env_steps_per_s", "env/s", ".0f"),
    ]:
      if key in v:
        parts.append(f"{label} {v[key]:{fmt}}")
    line = " | ".join(parts)
    if self.tty:
      self.stream.write("\r\033[K" + line + ("\n" if force else ""))
    else:
      self.stream.write(line + "\n")
    self.stream.flush()

  def close(self) -> None:
    if self.console and self.tty:
      self.stream.write("\n")
    self.file.close()
    if self.board is not None:
      self.board.close()


def _drop_partial_line(path: Path) -> None:
  """A process killed mid-write can leave a last line without its newline: cut it so appends stay valid."""
  if not path.exists():
    return
  with open(path, "rb+") as f:
    data = f.read()
    if data and not data.endswith(b"\n"):
      f.truncate(data.rfind(b"\n") + 1)


class MetricsError(ValueError):
  """A damaged metrics.jsonl (not a torn last line): one line naming the line."""


def read_metrics(run_dir: Path, *, raw: bool = False) -> list[dict[str, Any]]:
  """The records of `run_dir/metrics.jsonl`. Unless `raw`, a resume marker drops the records it supersedes
  (those past its env step, and earlier summaries), and a torn last line is skipped."""
  records: list[dict[str, Any]] = []
  with open(Path(run_dir) / "metrics.jsonl") as f:
    lines = f.read().split("\n")
  for i, line in enumerate(lines):
    if not line.strip():
      continue
    try:
      record = json.loads(line)
    except json.JSONDecodeError:
      if i == len(lines) - 1 and not raw:
        continue  # torn by a kill
      raise MetricsError(f"{run_dir}/metrics.jsonl line {i + 1} is not JSON") from None
    if not isinstance(record, dict):
      raise MetricsError(f"{run_dir}/metrics.jsonl line {i + 1} is not a JSON object")
    if not raw and record.get("event") == "resume":
      step = record.get("env_steps")
      if type(step) is not int:
        raise MetricsError(f"{run_dir}/metrics.jsonl line {i + 1}: a resume marker without integer env_steps")
      records = [r for r in records if r.get("env_steps", 0) <= step and not r.get("summary")]
    records.append(record)
  return records
