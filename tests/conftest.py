"""Test-wide setup: one persistent XLA compilation cache, so the many short runs (and their subprocesses)
compile each program once; one debug-preset run shared by the tests that need a trained agent; fresh agent
programs for a test that patches code."""

import functools
import inspect
import os
import tempfile

import jax
import pytest

pytest_plugins = ("suite_log",)  # `--suite-log=FILE`: per-test seconds and jax compiles (tests/suite_log.py)

_CACHE = os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", tempfile.mkdtemp(prefix="dreamer-xla-cache-"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")
jax.config.update("jax_compilation_cache_dir", _CACHE)
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)


@pytest.fixture(scope="session")
def debug_run(tmp_path_factory):
  """(config, run directory, summary) of the debug preset trained until it solves the toy chain."""
  from dreamer import config as config_lib
  from dreamer.train import train

  run_dir = tmp_path_factory.mktemp("debug")
  config = config_lib.load("debug")
  return config, run_dir, train(config, run_dir, console=False)


# Modules whose attributes no jitted program reads: a monkeypatch of one keeps the process's programs (a patch of
# anything else drops them). Test modules (test_*) and the scripts tests import count as host-only too.
_HOST_ONLY_MODULES = ("sys", "os", "pathlib", "builtins", "gpu_check")


def _module_of(target) -> str:
  """The dotted module name a monkeypatch target lives in: 'pkg.mod.attr' strings, modules, classes, instances
  and functions (their class's or their own __module__)."""
  if isinstance(target, str):
    return target
  return getattr(target, "__name__", "") if inspect.ismodule(target) else getattr(target, "__module__", "") or ""


def _may_reach_a_trace(target) -> bool:
  top = _module_of(target).split(".")[0]
  return not (top in _HOST_ONLY_MODULES or top.startswith("test_"))


def _drop_programs() -> None:
  from dreamer.agent import build_programs

  build_programs.cache_clear()


def _marking(patch):
  """MonkeyPatch's `patch` (setattr or delattr) that, when its target may reach a traced program, drops the
  process-wide programs (`agent.build_programs`) at once, so agents built after it trace the patch, and marks the
  MonkeyPatch so that its undo drops them again."""

  @functools.wraps(patch)
  def wrapped(self, target, *args, **kwargs):
    out = patch(self, target, *args, **kwargs)
    if _may_reach_a_trace(target):
      _drop_programs()
      self._drops_programs = True
    return out

  return wrapped


def _undo_dropping_programs(undo):
  """MonkeyPatch.undo that drops the programs traced through a marked MonkeyPatch's patches once they are undone
  (the monkeypatch fixture's end, a `context()`'s exit, an explicit undo)."""

  @functools.wraps(undo)
  def wrapped(self):
    undo(self)
    if getattr(self, "_drops_programs", False):
      _drop_programs()
      self._drops_programs = False

  return wrapped


# Patched on the class, so every MonkeyPatch (the fixture's, `monkeypatch.context()`'s, MonkeyPatch.context()'s)
# behaves alike; setenv, chdir and setitem never drop the programs.
pytest.MonkeyPatch.setattr = _marking(pytest.MonkeyPatch.setattr)
pytest.MonkeyPatch.delattr = _marking(pytest.MonkeyPatch.delattr)
pytest.MonkeyPatch.undo = _undo_dropping_programs(pytest.MonkeyPatch.undo)


# Seconds each of the heaviest files took (one worker's share of `pytest -q` on the quiet 2-core machine, commit
# cad1627; docs/benchmarks.md). Whole files go to the two workers in the order collected, each worker taking the
# next file as it runs low, so the heaviest go first: the last files handed out are then short ones and both
# workers end together. xdist's own order (most tests first) left the one-test files, the longest of all, to
# the end. A file missing here, or a stale figure, only costs balance, never a result. To weigh them again:
# `python scripts/suite_time.py` on a quiet machine prints `file_seconds`.
FILE_SECONDS = {
  "test_resume.py": 613, "test_learner.py": 602, "test_dream.py": 375, "test_distributed.py": 348,
  "test_dream_search.py": 335, "test_precision.py": 329, "test_task_input.py": 263, "test_gpu_check.py": 244,
  "test_devices.py": 223, "test_dream_memory.py": 172, "test_search.py": 142, "test_kill.py": 128,
  "test_networks.py": 126, "test_atari_bench.py": 123, "test_dream_ratio.py": 119, "test_video.py": 80,
  "test_memory.py": 80, "test_bad_input.py": 79, "test_atari.py": 76, "test_compare.py": 67, "test_train.py": 61,
  "test_board.py": 52, "test_explore.py": 51, "test_cost.py": 51, "test_collision_probe.py": 48,
  "test_untrusted.py": 47, "test_learner_probe.py": 46, "test_scripts.py": 41, "test_target_probe.py": 36,
}  # fmt: skip


def heaviest_files_first(nodeids: list[str], seconds: dict[str, float]) -> list[int]:
  """Indices that order test ids by their file's `seconds` (largest first; unlisted files 0), keeping the
  collected order within a file and between files of equal weight."""
  from suite_log import file_of  # here, not at the top: pytest_plugins imports it first (so asserts are rewritten)

  weight = [seconds.get(file_of(n), 0.0) for n in nodeids]
  return sorted(range(len(nodeids)), key=lambda i: -weight[i])


def pytest_collection_modifyitems(items):
  order = heaviest_files_first([item.nodeid for item in items], FILE_SECONDS)
  items[:] = [items[i] for i in order]
