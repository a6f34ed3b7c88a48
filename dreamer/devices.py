"""Which devices a run uses and how its arrays lie on them: data parallelism with `jax.sharding`.

A run spreads over D devices as one `Mesh` with a single axis, "data":
  - parameters, target parameters and optimizer state are replicated (at ~8M parameters a copy per device is
    32 MB; sharding them would trade that memory for an all-gather per forward pass, not worth it);
  - the replay is split by environment rows: env e's ring lives on device e // (E / D), with its priorities;
  - each update's batch of B samples is split B / D per device, so every device runs the networks on its own
    share and XLA inserts the all-reduce of the gradients;
  - acting splits the E environments' observations the same way, so the batched search runs on all devices.
Sampling stays exactly global: priority-proportional over every row of every device, the same draws as on one
device. XLA lowers the sample's cumulative sum over the split priorities (E x T floats, 400 KB for 100k rows)
and gathers each sampled window where its rows live, then sums the windows over devices (B x W rows move per
update, never the replay). So D devices compute the same updates as one, up to the order of floating-point
sums (the gradient all-reduce), and a checkpoint (host arrays) resumes on any device count that divides the
batch and the environments.

Over several processes (dreamer/distributed.py) the mesh spans every process's devices in process order, so a
process's devices hold a contiguous block of env rows: the envs that process steps. `to_global` makes a global
array of each process's rows, `to_local` hands a process back its rows.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from dreamer import replay as replay_lib
from dreamer.config import Config, ConfigError

AXIS = "data"


@dataclasses.dataclass(frozen=True)
class Layout:
  """A run's devices (a one-axis mesh) and the shardings of its arrays."""

  mesh: Mesh

  @property
  def count(self) -> int:
    return self.mesh.size

  @property
  def replicated(self) -> NamedSharding:
    return NamedSharding(self.mesh, P())

  @property
  def split(self) -> NamedSharding:
    """Leading axis divided over the devices (replay rows by env, batches, acting observations)."""
    return NamedSharding(self.mesh, P(AXIS))

  @property
  def replay(self) -> replay_lib.ReplayState:
    """Shardings of a replay state (a pytree prefix): rows, priorities and heads split by env, the scalar
    max_priority replicated."""
    return replay_lib.ReplayState(rows=self.split, priority=self.split, head=self.split, max_priority=self.replicated)

  def place(self, state: Any, rb: replay_lib.ReplayState) -> tuple[Any, replay_lib.ReplayState]:
    """The learner state replicated and the replay split over the devices (host or device arrays in). On one
    device: plain device arrays, as a run had before devices were a setting."""
    if self.count == 1:
      return jax.device_put(state), jax.device_put(rb)
    return jax.device_put(state, self.replicated), jax.device_put(rb, self.replay)

  def rows(self, x: Any) -> Any:
    """A batch of per-env arrays [N, ...] split over the devices when N divides evenly (else replicated: an
    evaluation world's episode count need not be a multiple of the device count)."""
    return jax.device_put(x, self.split if np.shape(x)[0] % self.count == 0 else self.replicated)

  @property
  def processes(self) -> int:
    return len({d.process_index for d in self.mesh.devices.flat})

  def local_rows(self, n: int) -> slice:
    """The rows of a per-env array [n, ...] that this process's devices hold (all of them in one process)."""
    if self.processes == 1:
      return slice(0, n)
    mine = [i for i, d in enumerate(self.mesh.devices.flat) if d.process_index == jax.process_index()]
    per = n // self.count
    return slice(mine[0] * per, (mine[-1] + 1) * per)

  def to_global(self, x: Any) -> Any:
    """Per-env arrays of this process's rows (a pytree of [n_local, ...]) as global arrays split over the
    devices; in one process, `rows`."""
    if self.processes == 1:
      return jax.tree.map(self.rows, x)
    return jax.tree.map(lambda a: jax.make_array_from_process_local_data(self.split, np.asarray(a)), x)

  def to_local(self, x: Any) -> Any:
    """Host copies of this process's rows of global per-env arrays (a pytree); all rows in one process."""

    def local(a: jax.Array) -> np.ndarray:
      if a.is_fully_addressable or a.is_fully_replicated:
        return np.asarray(a)[self.local_rows(a.shape[0])] if self.processes > 1 else np.asarray(a)
      shards = sorted(a.addressable_shards, key=lambda s: s.index[0].start or 0)
      return np.concatenate([np.asarray(s.data) for s in shards])

    return jax.tree.map(local, x)

  def replicate(self, x: Any) -> Any:
    """The same host array on every process (a pytree) as a global array replicated on every device."""
    return jax.tree.map(lambda a: jax.device_put(np.asarray(a), self.replicated), x)

  def constrain(self, tree: Any) -> Any:
    """Inside jit: the leading (batch) axis of every leaf split over the devices."""
    return jax.tree.map(lambda x: jax.lax.with_sharding_constraint(x, self.split), tree)


def layout(config: Config) -> Layout:
  """The devices of `config.devices` from `config.first_device` on, as a Layout: N > 0 the next N devices JAX
  sees; 0 as many of them as divide the batch and the environments evenly (all of them when they do, so one
  device is one device). ConfigError (one line) when there are not that many, or when the batch or the
  environments do not divide over N."""
  seen = jax.devices()
  if jax.process_count() > 1:
    return _every_process(config, seen)
  available = seen[config.first_device :]
  if not available:
    raise ConfigError(
      f"invalid config: first_device {config.first_device} is out of range: JAX sees {len(seen)} device(s); "
      f"allowed: 0..{len(seen) - 1}"
    )
  if config.devices == 0:
    count = max(n for n in range(1, len(available) + 1) if config.batch_size % n == 0 and config.num_envs % n == 0)
    return Layout(Mesh(np.array(available[:count]), (AXIS,)))
  count = config.devices
  if count > len(available):
    kinds = "/".join(sorted({d.platform for d in available}))
    after = f" from first_device {config.first_device} on" if config.first_device else ""
    raise ConfigError(
      f"invalid config: devices {count} is more than the {len(available)} {kinds} device(s) JAX sees{after}; "
      f"allowed: 0 (automatic) or 1..{len(available)}"
    )
  for key in ("batch_size", "num_envs"):
    if getattr(config, key) % count:
      raise ConfigError(
        f"invalid config: {key} {getattr(config, key)} does not divide over devices {count}; choose a multiple "
        f"of {count}, or devices dividing it (0 chooses one)"
      )
  return Layout(Mesh(np.array(available[:count]), (AXIS,)))


def _every_process(config: Config, seen: list[jax.Device]) -> Layout:
  """A run over several processes uses every device of every process (each process steps envs of its own);
  ConfigError when the config asks for fewer, or its batch or environments do not divide over them."""
  processes = jax.process_count()
  if len(seen) != processes * jax.local_device_count():
    raise ConfigError(
      f"invalid config: a run over {processes} processes needs the same number of devices in each; this one has "
      f"{jax.local_device_count()} of {len(seen)}"
    )
  if config.first_device or config.devices not in (0, len(seen)):
    raise ConfigError(
      f"invalid config: a run over {processes} processes uses all {len(seen)} of their devices; allowed: "
      f"devices 0 or {len(seen)} and first_device 0, got devices {config.devices}, first_device {config.first_device}"
    )
  for key in ("batch_size", "num_envs"):
    if getattr(config, key) % len(seen):
      raise ConfigError(
        f"invalid config: {key} {getattr(config, key)} does not divide over the {len(seen)} devices of "
        f"{processes} processes; choose a multiple of {len(seen)}"
      )
  ordered = sorted(seen, key=lambda d: (d.process_index, d.id))  # a process's rows are one contiguous block
  return Layout(Mesh(np.array(ordered), (AXIS,)))
