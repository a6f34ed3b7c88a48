"""One run over many processes (hosts): joining them with `jax.distributed`, and what each process does.

Every process of a run starts the same `dreamer train` command with its own process id. They join through a
coordinator (process 0's address), after which `jax.devices()` lists every process's devices and one `Mesh`
spans them all (dreamer/devices.py): the learner's jitted chunk runs as one program on all of them, XLA (gloo
on CPUs, NCCL on GPUs) moving the gradients and sampled windows between hosts. Each process steps its own
share of the environments (a contiguous block of env rows, the rows its devices hold in the replay) and feeds
its rows to the global arrays. Process 0 alone writes metrics.jsonl and TensorBoard; checkpoints are written
by orbax in multi-process mode (every process gathers the arrays, the primary writes them), so a checkpoint is
the same whatever the process count and resumes on any count that divides the batch and the environments.

Where the settings come from: options (`--coordinator`, `--num-processes`, `--process-id`) or, when absent,
the environment (JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES, JAX_PROCESS_ID), e.g. set from SLURM_PROCID in a
job script.
"""

from __future__ import annotations

import dataclasses
import os
import socket
import sys
import threading
from typing import Any

import jax
import numpy as np

from dreamer.config import ConfigError

ENV = {"coordinator": "JAX_COORDINATOR_ADDRESS", "num_processes": "JAX_NUM_PROCESSES", "process_id": "JAX_PROCESS_ID"}
# How long a process waits for a silent peer before JAX's coordination service declares it dead. A dead
# peer's closed sockets end the collectives at once on CPUs; this bounds a hung one (or NCCL's wait).
HEARTBEAT_S = 30


@dataclasses.dataclass(frozen=True)
class Join:
  """How this process joins its run: the coordinator's host:port, the number of processes, this one's id, and
  how long to wait for the others to join."""

  coordinator: str
  num_processes: int
  process_id: int
  timeout_s: int = 300


def settings(
  *, coordinator: str | None, num_processes: int | None, process_id: int | None, timeout_s: int = 300
) -> Join | None:
  """The Join of the options, completed from the environment; None when neither names a coordinator (one
  process). ConfigError (one line) when the settings are partial or out of range."""
  given = {"coordinator": coordinator, "num_processes": num_processes, "process_id": process_id}
  for key, var in ENV.items():
    if given[key] is None and os.environ.get(var):
      given[key] = os.environ[var]
  if all(v is None for v in given.values()):
    return None
  missing = [f"--{k.replace('_', '-')} (or {ENV[k]})" for k, v in given.items() if v is None]
  if missing:
    raise ConfigError(f"a run over several processes needs {', '.join(missing)} too")
  try:
    count, pid = int(given["num_processes"]), int(given["process_id"])
  except ValueError:
    raise ConfigError(
      f"--num-processes and --process-id must be integers, got {given['num_processes']!r} and {given['process_id']!r}"
    ) from None
  host, _, port = str(given["coordinator"]).rpartition(":")
  if not host or not port.isdigit():
    raise ConfigError(f"--coordinator must be HOST:PORT (process 0's address), got {given['coordinator']!r}")
  if count < 1 or not 0 <= pid < count:
    raise ConfigError(f"--process-id must be in 0..{count - 1} for --num-processes {count}, got {pid}")
  if timeout_s < 1:
    raise ConfigError(f"--join-timeout must be a whole number of seconds >= 1, got {timeout_s}")
  return Join(str(given["coordinator"]), count, pid, timeout_s)


def initialize(join: Join) -> None:
  """Joins the run's processes (before anything else touches JAX's devices). When they have not all joined
  within the timeout this process ends with one line (exit code 2) naming the coordinator: JAX's client would
  abort with a core dump instead, so a watchdog speaks first."""
  joined = threading.Event()

  def give_up() -> None:
    if not joined.is_set():
      print(f"dreamer: error: {_not_joined(join)}", file=sys.stderr, flush=True)
      os._exit(2)

  watchdog = threading.Timer(join.timeout_s, give_up)
  watchdog.daemon = True
  watchdog.start()
  try:
    jax.distributed.initialize(
      join.coordinator,
      join.num_processes,
      join.process_id,
      initialization_timeout=join.timeout_s + 60,  # the watchdog's timeout is the one that counts
      heartbeat_timeout_seconds=HEARTBEAT_S,
    )
  except Exception as e:  # XlaRuntimeError or RuntimeError, by version
    raise ConfigError(f"{_not_joined(join)} ({' '.join(str(e).split())[:160]})") from None
  finally:
    joined.set()
    watchdog.cancel()


def _not_joined(join: Join) -> str:
  host, _, port = join.coordinator.rpartition(":")
  if join.process_id == 0:
    why = f"not all {join.num_processes} processes joined"
  else:
    try:
      socket.create_connection((host, int(port)), timeout=2).close()
      why = f"not all {join.num_processes} processes joined"
    except OSError:
      why = "nothing answers at that address"
  return (
    f"process {join.process_id} of {join.num_processes} could not join the run at coordinator {join.coordinator} "
    f"within {join.timeout_s} s: {why}; start every process with the same --coordinator (process 0's host) and "
    f"--num-processes, or raise --join-timeout"
  )


def count() -> int:
  return jax.process_count()


def primary() -> bool:
  """Whether this process writes the run's logs (process 0)."""
  return jax.process_index() == 0


def joined() -> bool:
  """Whether this process is one of several joined with jax.distributed (never starts JAX's backend)."""
  return jax.distributed.is_initialized() and count() > 1


def is_lost_peer(error: BaseException) -> bool:
  """Whether `error` says a collective failed because another process of the run went away."""
  text = str(error)
  return joined() and any(
    mark in text for mark in ("Connection closed by peer", "Connection reset", "heartbeat", "Gloo", "UNAVAILABLE")
  )


def agree(flag: bool) -> bool:
  """Whether any process says `flag` (every process must call this at the same point of the loop)."""
  if count() == 1:
    return flag
  from jax.experimental import multihost_utils

  return bool(np.any(multihost_utils.process_allgather(np.array([flag]))))


def gather(local: Any) -> np.ndarray:
  """Every process's `local` rows [n, ...] concatenated in process order [n * processes, ...]."""
  if count() == 1:
    return np.asarray(local)
  from jax.experimental import multihost_utils

  return np.asarray(multihost_utils.process_allgather(np.asarray(local), tiled=True))


def gather_json(value: Any) -> list[Any]:
  """Every process's `value` (plain JSON data), in process order."""
  import json

  data = np.frombuffer(json.dumps(value).encode(), np.uint8)
  sizes = gather(np.array([len(data)]))
  padded = np.zeros(int(sizes.max()), np.uint8)
  padded[: len(data)] = data
  every = gather(padded[None]).reshape(len(sizes), -1)
  return [json.loads(row[:n].tobytes()) for row, n in zip(every, sizes, strict=True)]


class Start:
  """Process 0 prepares the run directory while the others wait: one agreement, made once, that says whether
  it succeeded (so a process 0 that fails lets the others stop with one line instead of waiting forever)."""

  def __init__(self) -> None:
    self.made = False

  def agree(self, *, failed: bool = False) -> bool:
    """Whether process 0 failed to prepare the run (every process calls this once, process 0 the first time)."""
    if self.made:
      return False
    self.made = True
    return agree(failed)


def barrier(name: str) -> None:
  """Waits until every process reaches the barrier `name`."""
  if count() > 1:
    from jax.experimental import multihost_utils

    multihost_utils.sync_global_devices(name)
