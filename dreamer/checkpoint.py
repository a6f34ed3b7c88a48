"""Full-state checkpoints of a run: `run_dir/checkpoints/<env_steps>/`, written with orbax.

Each checkpoint holds three items:
  params/  the online parameters (all that `dreamer eval` restores);
  state/   every other array of the run: target parameters, optimizer state, learner rng key and update
           count, the replay buffer (rows, priorities, heads) and the host loop's rng key and observations;
  meta/    JSON: format version, resolved config, world spec, host counters, the world's own state, the envs'
           exploratory repeats (`explore_epsilon`) and held Gumbel noise (`noise_hold`), and a CRC32 of every
           saved array (orbax keeps no checksums, so a flipped byte would load silently).
orbax's CheckpointManager writes each checkpoint into a temporary directory and renames it when complete, so
a killed process leaves whole checkpoints plus at most one temporary directory, which the next run deletes.
Saving is asynchronous: arrays are copied to host memory before `save` returns, then written in a thread.
"""

from __future__ import annotations

import ctypes
import re
import shutil
import time
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import jax
import numpy as np
import orbax.checkpoint as ocp

from dreamer import distributed

FORMAT_VERSION = 2
ITEMS = ("params", "state", "meta")
_TMP_MARK = ".orbax-checkpoint-tmp"


class CheckpointError(ValueError):
  """A checkpoint that cannot be used: the message is one line meant for the user."""


class StorageError(OSError):
  """The run directory cannot be written (full disk, no permission): one line meant for the user."""


class Saved(NamedTuple):
  step: int  # env steps at which it was written
  params: Any  # numpy pytree
  state: Any  # numpy pytree, or None when only the parameters were restored
  meta: dict[str, Any]


def host_copy(tree: Any) -> Any:
  """Numpy copies of every leaf (the device buffers may be donated right after). Over several processes,
  arrays split over them are gathered whole on every process (each calls this at the same point): the
  primary writes them, and a checkpoint is the same whatever the process count."""

  def copy(x: Any) -> np.ndarray:
    if isinstance(x, jax.Array) and not (x.is_fully_addressable or x.is_fully_replicated):
      from jax.experimental import multihost_utils

      return np.asarray(multihost_utils.process_allgather(x, tiled=True))
    return np.array(x, copy=True)

  return jax.tree.map(copy, tree)


def checksums(tree: Any) -> list[int]:
  """CRC32 of each leaf's bytes, in tree-flatten order."""
  return [zlib.crc32(np.ascontiguousarray(x).reshape(-1).view(np.uint8)) for x in jax.tree.leaves(tree)]


def flatten(tree: Any) -> dict[str, Any]:
  """{readable path name: leaf}, e.g. 'replay_rows_obs'. Saved flat so that orbax never sees NamedTuples or
  empty optimizer states; `unflatten` rebuilds the tree from an abstract twin."""
  flat = {
    re.sub(r"[^A-Za-z0-9]+", "_", jax.tree_util.keystr(path)).strip("_") or "leaf": leaf
    for path, leaf in jax.tree_util.tree_leaves_with_path(tree)
  }
  if len(flat) != len(jax.tree.leaves(tree)):
    raise ValueError("two leaves of the saved tree have the same flattened name")
  return flat


def unflatten(abstract: Any, flat: dict[str, Any]) -> Any:
  return jax.tree.unflatten(jax.tree.structure(abstract), [flat[k] for k in flatten(abstract)])


def _abstract(tree: Any) -> Any:
  return {k: jax.ShapeDtypeStruct(x.shape, x.dtype) for k, x in flatten(tree).items()}


class Checkpoints:
  """The checkpoints of one run directory. `keep`: how many to keep (None: all; read-only when `writable`
  is False, for evaluation)."""

  def __init__(self, run_dir: str | Path, *, keep: int | None = None, writable: bool = True):
    self.run_dir = Path(run_dir).resolve()
    self.dir = self.run_dir / "checkpoints"
    self.writable = writable
    options = ocp.CheckpointManagerOptions(
      max_to_keep=keep,
      create=writable,
      read_only=not writable,
      cleanup_tmp_directories=writable,
      enable_async_checkpointing=True,
    )
    try:
      self.manager = ocp.CheckpointManager(self.dir, options=options, item_names=ITEMS)
    except OSError as e:
      raise StorageError(f"cannot use checkpoint directory {str(self.dir)!r}: {e}") from None
    self.pending: int | None = None  # step of a save that may still be writing

  # ------------------------------------------------------------------ reading

  def steps(self) -> list[int]:
    return sorted(self.manager.all_steps()) if self.dir.is_dir() else []

  def read_meta(self, step: int) -> dict[str, Any]:
    """The JSON item of checkpoint `step`; CheckpointError if missing, unreadable or of another format."""
    try:
      meta = self.manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]
    except Exception as e:  # orbax raises many types for damaged files
      raise CheckpointError(f"checkpoint {self.path(step)!r} cannot be read: {_one_line(e)}") from None
    if not isinstance(meta, dict) or meta.get("format_version") != FORMAT_VERSION:
      version = meta.get("format_version") if isinstance(meta, dict) else None
      raise CheckpointError(
        f"checkpoint {self.path(step)!r} has format version {version}; this dreamer reads version {FORMAT_VERSION}"
      )
    problem = meta_problem(meta)
    if problem:
      raise CheckpointError(f"checkpoint {self.path(step)!r} has damaged metadata: {problem}")
    return meta

  def restore(self, step: int, abstract_params: Any, abstract_state: Any = None) -> Saved:
    """Restores checkpoint `step` (the state too when `abstract_state` is given) and verifies its checksums."""
    meta = self.read_meta(step)
    items = {"params": ocp.args.StandardRestore(_abstract(abstract_params))}
    if abstract_state is not None:
      items["state"] = ocp.args.StandardRestore(_abstract(abstract_state))
    try:
      out = self.manager.restore(step, args=ocp.args.Composite(**items))
    except Exception as e:
      raise CheckpointError(f"checkpoint {self.path(step)!r} cannot be read: {_one_line(e)}") from None
    for name in items:
      if checksums(out[name]) != meta["checksums"][name]:
        raise CheckpointError(
          f"checkpoint {self.path(step)!r} is corrupt: its {name} arrays do not match the checksums written with them"
        )
    state = unflatten(abstract_state, out["state"]) if abstract_state is not None else None
    return Saved(step, unflatten(abstract_params, out["params"]), state, meta)

  def first_readable(self, read: Callable[[int], Any]) -> tuple[Any, list[tuple[int, CheckpointError]]]:
    """read(step) of the newest checkpoint for which it raises no CheckpointError (None when none reads),
    and the (step, error) of each newer one that failed, newest first."""
    failed: list[tuple[int, CheckpointError]] = []
    for step in reversed(self.steps()):
      try:
        return read(step), failed
      except CheckpointError as e:
        failed.append((step, e))
    return None, failed

  def restore_latest(
    self, abstract_params: Any, abstract_state: Any = None, *, on_unreadable: Callable[[int, CheckpointError], None]
  ) -> Saved | None:
    """The newest checkpoint that restores cleanly; None when the run has no checkpoint. Each unreadable
    newer one is reported through `on_unreadable(step, error)` and, once an older one has restored and when
    writable, moved to `run_dir/corrupt_checkpoints/` (kept for inspection, out of the way of later saves).
    CheckpointError when checkpoints exist and none restores: nothing is moved then (a read error that comes
    and goes must never restart a long run, nor cost it its checkpoints)."""
    saved, failed = self.first_readable(lambda step: self.restore(step, abstract_params, abstract_state))
    for step, e in failed:
      on_unreadable(step, e)
    if saved is not None:
      if self.writable:
        for bad, _ in failed:
          self._quarantine(bad)
      return saved
    if failed:
      steps = ", ".join(str(step) for step, _ in failed)
      raise CheckpointError(
        f"no checkpoint of {str(self.run_dir)!r} can be read (steps {steps}, left in place; the newest: "
        f"{failed[0][1]}); the run was not restarted: fix or remove them, or start over with --fresh"
      )
    return None

  def path(self, step: int) -> str:
    return str(self.dir / str(step))

  # ------------------------------------------------------------------ writing

  def save(self, step: int, params: Any, state: Any, meta: dict[str, Any]) -> None:
    """Starts writing checkpoint `step` (skipped if it exists); copies to host memory before returning."""
    if step in self.steps() or step == self.pending:
      return
    self.wait()  # a failure of the previous write is reported as that step's
    _trim_heap()
    params, state = host_copy(flatten(params)), host_copy(flatten(state))
    meta = {
      "format_version": FORMAT_VERSION,
      "step": step,
      **meta,
      "checksums": {"params": checksums(params), "state": checksums(state)},
    }
    self._guard(
      lambda: self.manager.save(
        step,
        args=ocp.args.Composite(
          params=ocp.args.StandardSave(params), state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)
        ),
      ),
      step,
    )
    self.pending = step

  def wait(self) -> None:
    """Blocks until the pending save is complete on disk; StorageError if it failed."""
    if self.pending is not None:
      step, self.pending = self.pending, None
      self._guard(self.manager.wait_until_finished, step)

  def close(self) -> None:
    try:
      self.wait()
    finally:
      self.manager.close()

  def _guard(self, fn: Callable[[], Any], step: int) -> None:
    try:
      fn()
    except Exception as e:  # orbax re-raises the writer thread's error here, wrapped in its own types
      self.pending = None
      self._remove_partial()
      raise StorageError(
        f"could not write checkpoint {self.path(step)!r}: {_one_line(e)}; {self.last_complete()}"
      ) from None

  def last_complete(self) -> str:
    # Not the pending step: orbax lists a step once its save starts, and a failing write removes it again.
    # A finished step is a directory of its own name (orbax renames the temporary one when done).
    done = [s for s in self.steps() if s != self.pending and Path(self.path(s)).is_dir()]
    return f"the last complete checkpoint is {self.path(done[-1])!r}" if done else "no checkpoint is complete"

  def _remove_partial(self) -> None:
    if jax.process_index():  # the primary process owns the files
      return
    for p in self.dir.glob(f"*{_TMP_MARK}*") if self.dir.is_dir() else []:
      shutil.rmtree(p, ignore_errors=True)

  def _quarantine(self, step: int) -> None:
    if not jax.process_index():  # the primary process moves it; every process then reloads the list
      target = self.run_dir / "corrupt_checkpoints" / f"{step}-{time.strftime('%Y%m%d-%H%M%S')}"
      target.parent.mkdir(parents=True, exist_ok=True)
      shutil.move(self.path(step), target)
    distributed.barrier(f"quarantine-{step}")
    self.manager.reload()


def _trim_heap() -> None:
  """Hands the previous write's freed buffers back to the OS: without it glibc keeps them in the writer
  threads' arenas and resident memory creeps up with every checkpoint."""
  try:
    ctypes.CDLL("libc.so.6").malloc_trim(0)
  except (OSError, AttributeError):
    pass  # not glibc


def _one_line(e: BaseException) -> str:
  """The error in at most ~300 characters; an OS error anywhere in its chain (a full disk) comes first."""
  cause: BaseException | None = e
  while cause is not None:
    if isinstance(cause, OSError) and cause.strerror:
      return f"{cause.strerror} ({cause.filename or type(e).__name__})"
    cause = cause.__cause__ or cause.__context__
  text = " ".join(str(e).split())
  os_error = re.search(r"([^:]+) \[os_error_code='(\d+)'\]", text)  # tensorstore's form of an OS error
  if os_error:
    return f"{os_error.group(1).strip()} (errno {os_error.group(2)})"
  return (text[:300] + "...") if len(text) > 300 else text or type(e).__name__


OBS_DTYPES = ("float32", "float16", "float64", "uint8", "int8", "int16", "int32", "bool")


def _is_int(x: Any, low: int = 0) -> bool:
  return type(x) is int and x >= low


def meta_problem(meta: dict[str, Any]) -> str | None:
  """What is wrong with a checkpoint's meta item (read from a file: untrusted), or None: every key this
  module and the loaders read, with its type and range. The config is checked by config.from_dict where it
  is used, the host counters by the training loop."""
  need = {"step": int, "config": dict, "spec": dict, "progress": dict, "checksums": dict}
  for key, kind in need.items():
    if type(meta.get(key)) is not kind:
      return f"{key!r} must be a {kind.__name__}, got {type(meta.get(key)).__name__}"
  spec = meta["spec"]
  shape = spec.get("obs_shape")
  if not (isinstance(shape, list) and 1 <= len(shape) <= 4 and all(_is_int(d, 1) for d in shape)):
    return f"spec.obs_shape must be a list of 1 to 4 positive integers, got {str(shape)[:80]}"
  if spec.get("obs_dtype") not in OBS_DTYPES:
    return f"spec.obs_dtype must be one of {', '.join(OBS_DTYPES)}, got {str(spec.get('obs_dtype'))[:40]!r}"
  if not _is_int(spec.get("num_actions"), 1):
    return f"spec.num_actions must be an integer >= 1, got {str(spec.get('num_actions'))[:40]}"
  for item in ("params", "state"):
    sums = meta["checksums"].get(item)
    if not (isinstance(sums, list) and all(_is_int(x) for x in sums)):
      return f"checksums.{item} must be a list of non-negative integers"
  return None


def locate(path: str | Path) -> tuple[Path, int | None]:
  """A run directory (newest checkpoint: step None) or one of its `checkpoints/<step>` directories, as
  (run_dir, step); CheckpointError naming what is allowed otherwise."""
  path = Path(path)
  if path.is_dir() and path.name.isdigit() and path.parent.name == "checkpoints":
    return path.parent.parent, int(path.name)
  if (path / "checkpoints").is_dir():
    return path, None
  what = "does not exist" if not path.exists() else "is not a run directory (it has no checkpoints/)"
  raise CheckpointError(
    f"no checkpoint found at {str(path)!r}: it {what}; give a run directory or one of its "
    f"checkpoints/<step> directories"
  )
