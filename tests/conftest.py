"""Test-wide setup: one persistent XLA compilation cache, so the many short runs (and their subprocesses)
compile each program once; one debug-preset run shared by the tests that need a trained agent; fresh agent
programs for a test that patches code."""

import functools
import inspect
import os
import tempfile

import jax
import pytest

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
