"""Stopping a run from outside: SIGINT/SIGTERM ask the training loop to checkpoint and stop; a second one
stops the process at once.

Python runs signal handlers only between bytecodes, so a handler alone cannot answer while XLA compiles or a
long jitted call runs (a first compile can take many seconds). The signal's number is therefore also written
to a wakeup socket at the C level, where a watcher thread reads it at once: it says at the first signal that
the run will stop after the current step, and at the second ends the process with 128 + the signal's number
(130 for SIGINT) without unwinding through XLA's threads. Nothing is lost by stopping at once: checkpoints
are written atomically, the run resumes from its last complete one.
"""

from __future__ import annotations

import os
import signal
import socket
import sys
import threading
from typing import Any

STOPS = (signal.SIGINT, signal.SIGTERM)


class StopSignals:
  """`with StopSignals() as signals:` ... `signals.received` is the first stop signal's name, or None."""

  def __init__(self, *, note: str = "the run stops after the current step and writes a checkpoint"):
    self.received: str | None = None
    self.note = note
    self.previous: dict[int, Any] = {}
    self.wakeup: tuple[socket.socket, socket.socket] | None = None
    self.previous_fd = -1
    self.watcher: threading.Thread | None = None

  def __enter__(self) -> StopSignals:
    if threading.current_thread() is not threading.main_thread():
      return self  # signals reach the main thread only: nothing to install from elsewhere
    for sig in STOPS:
      self.previous[sig] = signal.signal(sig, self._handle)
    reader, writer = socket.socketpair()
    writer.setblocking(False)
    self.wakeup = (reader, writer)
    self.previous_fd = signal.set_wakeup_fd(writer.fileno(), warn_on_full_buffer=False)
    self.watcher = threading.Thread(target=self._watch, args=(reader,), daemon=True, name="dreamer-signals")
    self.watcher.start()
    return self

  def _handle(self, signum, frame) -> None:
    if self.received is None:
      self.received = signal.Signals(signum).name

  def _watch(self, reader: socket.socket) -> None:
    count = 0
    while True:
      try:
        data = reader.recv(64)
      except OSError:
        return
      if not data:
        return
      for signum in data:
        if signum not in STOPS:
          continue
        count += 1
        name = signal.Signals(signum).name
        if count == 1:
          _say(f"{name} received: {self.note}; send it again to stop at once (the last checkpoint is kept)")
        else:
          _say(f"second {name}: stopping at once; resume from the last checkpoint with dreamer train --logdir DIR")
          os._exit(128 + signum)

  def __exit__(self, *exc) -> None:
    if self.wakeup is not None:
      signal.set_wakeup_fd(self.previous_fd)
      reader, writer = self.wakeup
      writer.close()  # the watcher reads the end of the stream and returns
      self.watcher.join(timeout=1.0)
      reader.close()
      self.wakeup = None
    for sig, handler in self.previous.items():
      signal.signal(sig, handler)


def _say(text: str) -> None:
  try:
    print(f"dreamer: {text}", file=sys.stderr, flush=True)
  except (OSError, ValueError):
    pass  # stderr closed: the exit code still tells
