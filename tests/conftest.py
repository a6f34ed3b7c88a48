"""Test-wide setup: one persistent XLA compilation cache, so the many short runs (and their subprocesses)
compile each program once; one debug-preset run shared by the tests that need a trained agent; fresh agent
programs for a test that patches code."""

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


@pytest.fixture(autouse=True)
def _fresh_programs_when_patched(request):
  """A test that patches code (monkeypatch) builds its agents' jitted functions afresh and leaves none behind:
  the process-wide cache of them (`agent.build_programs`) would hand it functions traced before its patch, or hand
  later tests functions traced through it."""
  if "monkeypatch" not in request.fixturenames:
    yield
    return
  from dreamer.agent import build_programs

  build_programs.cache_clear()
  yield
  build_programs.cache_clear()
