"""One writer per run directory: an advisory lock held for as long as a process trains in it.

The lock is `fcntl.flock` on `RUN_DIR/.lock`, whose text names the holder (pid, host, start time). The kernel
releases a flock when its process ends, however it ends, so a lock left by a killed run never blocks a resume:
the file stays, the lock does not. (On network file systems flock may not be shared between hosts.)
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import time
from pathlib import Path

from dreamer.config import ConfigError

LOCK_NAME = ".lock"


class RunInUse(ConfigError):
  """Another process trains in this run directory: the message names it."""


class RunLock:
  """`with RunLock(run_dir):` holds the run directory's lock, or raises RunInUse at once."""

  def __init__(self, run_dir: str | Path):
    self.path = Path(run_dir) / LOCK_NAME
    self.fd: int | None = None

  def __enter__(self) -> RunLock:
    try:  # never through a link: a planted `.lock` symlink must not make us truncate what it points to
      fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
    except OSError as e:
      raise ConfigError(
        f"cannot lock run directory {str(self.path.parent)!r}: {self.path.name} is a link or "
        f"cannot be opened ({e.strerror or e})"
      ) from None
    try:
      fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      holder = _describe(os.read(fd, 4096))
      os.close(fd)
      raise RunInUse(
        f"run directory {str(self.path.parent)!r} is in use by {holder}; wait for that run to end or stop it "
        f"(a resume after it ends continues the run)"
      ) from None
    me = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.strftime("%Y-%m-%d %H:%M:%S %Z")}
    os.ftruncate(fd, 0)
    os.pwrite(fd, (json.dumps(me) + "\n").encode(), 0)
    self.fd = fd
    return self

  def __exit__(self, *exc) -> None:
    if self.fd is not None:
      fd, self.fd = self.fd, None
      if not (self.path.parent / "config.json").exists():  # no run was started: leave the directory as found
        self.path.unlink(missing_ok=True)
      os.close(fd)  # closing releases the flock


def holder(run_dir: str | Path) -> str | None:
  """'pid P on host H since T' while a live process holds the run directory's lock, else None. Only looks:
  the lock file is opened read-only (never created, truncated or followed through a link) and probed with a
  shared flock, which a holder's exclusive one refuses."""
  try:
    fd = os.open(Path(run_dir) / LOCK_NAME, os.O_RDONLY | os.O_NOFOLLOW)
  except OSError:  # no lock file (no trainer ever held one here), a link (RunLock refuses those too), or unreadable
    return None
  try:
    # The probe holds the lock for an instant: a trainer starting in that instant is refused as if the run were
    # in use (it says so, and a retry works); reading /proc/locks instead would tie this to Linux.
    fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
  except BlockingIOError:
    return _describe(os.pread(fd, 4096, 0))
  finally:
    os.close(fd)  # closing releases the probe's lock
  return None


def _describe(text: bytes) -> str:
  """'pid P on host H since T' from a lock file's text, or what can be said of a damaged one."""
  try:
    holder = json.loads(text.decode())
    return f"pid {int(holder['pid'])} on host {str(holder['host'])[:100]} since {str(holder['started'])[:40]}"
  except (ValueError, KeyError, TypeError, UnicodeDecodeError):
    return "another process (its lock file does not say which)"
