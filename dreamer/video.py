"""Episode videos: frames u8[T, H, W, 3] -> an mp4 file (imageio's ffmpeg plugin, the optional 'video' extra).

Every way a video can fail (the extra missing, an unwritable path, a world that cannot draw) is a VideoError
with one line saying why, so a training run can report it once and go on without videos.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import numpy as np

from worlds import RenderError


class VideoError(RuntimeError):
  """A video that cannot be made: one line saying why."""


def check_frames(frames: np.ndarray) -> np.ndarray:
  frames = np.asarray(frames)
  if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8 or len(frames) == 0:
    raise VideoError(f"video frames must be u8[T, H, W, 3] with T >= 1, got {frames.dtype}{list(frames.shape)}")
  return frames


def even(frames: np.ndarray) -> np.ndarray:
  """Frames padded (black) to even height and width: H.264 in yuv420p needs both even."""
  _, h, w, _ = frames.shape
  return np.pad(frames, ((0, 0), (0, h % 2), (0, w % 2), (0, 0)))


def open_writer(path: Path, *, fps: float):
  """An imageio ffmpeg writer of H.264 at `fps` to `path` (its folder is made); VideoError on failure."""
  try:
    import imageio.v2 as imageio
    import imageio_ffmpeg  # noqa: F401 - imageio finds its ffmpeg binary through it
  except ImportError as e:
    raise VideoError(f"videos need the 'video' extra (pip install '.[video]'): {e}") from None
  try:
    path.parent.mkdir(parents=True, exist_ok=True)
    return imageio.get_writer(path, format="FFMPEG", fps=fps, codec="libx264", macro_block_size=1)
  except OSError as e:
    raise VideoError(f"cannot write video {str(path)!r}: {e.strerror or e}") from None
  except Exception as e:  # ffmpeg failing to start
    raise VideoError(f"cannot write video {str(path)!r}: {_first_line(e)}") from None


def _first_line(e: BaseException) -> str:
  return str(e).splitlines()[0] if str(e).strip() else type(e).__name__


class Recorder:
  """Streams the frames of env `env` of `world` into an mp4 at `path` while an episode is played (the
  `record` hook of `actor.run_episodes`), keeping the first `preview` frames (for TensorBoard). A failure
  stops the recording, never the episode: `finish()` then raises it as a VideoError."""

  def __init__(self, world, path: str | Path, *, fps: float, env: int = 0, preview: int = 300) -> None:
    self.world, self.path, self.fps, self.env, self.preview = world, Path(path), fps, env, preview
    self.writer = None
    self.frames: list[np.ndarray] = []
    self.count = 0
    self.error: str | None = None

  def __call__(self) -> None:
    if self.error is not None:
      return
    try:
      frame = check_frames(np.asarray(self.world.render(self.env))[None])[0]
      if self.writer is None:
        self.writer = open_writer(self.path, fps=self.fps)
      self.writer.append_data(even(frame[None])[0])
    except (RenderError, VideoError) as e:
      self.error = str(e)
      return
    except Exception as e:  # the encoder dying mid-episode (a full disk, a killed ffmpeg)
      self.error = f"cannot write video {str(self.path)!r}: {_first_line(e)}"
      return
    self.count += 1
    if len(self.frames) < self.preview:
      self.frames.append(frame)

  def finish(self) -> np.ndarray:
    """Closes the file; returns the preview frames u8[P, H, W, 3], or raises VideoError if recording failed
    (and deletes what it wrote)."""
    writer, self.writer = self.writer, None
    if writer is not None:
      try:
        writer.close()
      except Exception as e:
        self.error = self.error or f"cannot write video {str(self.path)!r}: {_first_line(e)}"
    if self.error is not None:
      self._delete(writer)
      raise VideoError(self.error)
    return check_frames(np.stack(self.frames) if self.frames else np.zeros((0, 0, 0, 3), np.uint8))

  def abandon(self) -> None:
    """Stops ffmpeg and deletes the half-written file (the episode did not finish: an error, a signal)."""
    writer, self.writer = self.writer, None
    if writer is not None:
      with contextlib.suppress(Exception):
        writer.close()
    self._delete(writer)

  def _delete(self, writer) -> None:
    if writer is not None:  # only a file this recorder opened
      with contextlib.suppress(OSError):
        self.path.unlink(missing_ok=True)
