"""`pytest --suite-log` (tests/suite_log.py) and `scripts/suite_time.py`, which sums its lines: on a tiny suite run
under xdist, each test's line names its worker, outcome and the programs jax compiled for it; the sums are exact."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))

import suite_time  # noqa: E402

TINY = """
import jax
import jax.numpy as jnp
import numpy as np
import pytest

def test_plain():
  assert 1 + 1 == 2

def test_compiles_two_programs():
  jax.jit(lambda x: x * 3.0 + 1.0)(np.ones(3, np.float32))  # numpy inputs: no eager op compiles
  jax.jit(lambda x: jnp.sin(x).sum())(np.ones(4, np.float32))

def test_fails():
  assert 1 + 1 == 3

@pytest.mark.skip(reason="skipped at setup")
def test_skipped():
  pass

@pytest.mark.xfail(reason="fails as expected")
def test_expected_to_fail():
  assert 1 + 1 == 3
"""


def test_a_tiny_suite_under_xdist_logs_each_tests_worker_outcome_and_compiles(tmp_path):
  # As the project loads it (a conftest's pytest_plugins) and as suite_time passes it (one token, the log in
  # another folder, no test path: an xdist worker parses the arguments before the conftest adds the option).
  suite = tmp_path / "suite"
  suite.mkdir()
  (suite / "conftest.py").write_text('pytest_plugins = ("suite_log",)\n')
  (suite / "test_tiny.py").write_text(TINY)
  log = tmp_path / "logs" / "log.jsonl"
  log.parent.mkdir()
  env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "tests"), str(ROOT)])}
  env["JAX_COMPILATION_CACHE_DIR"] = str(tmp_path / "cache")  # empty: every program is compiled, none read
  command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-n", "1", f"--suite-log={log}"]
  done = subprocess.run(command, cwd=suite, env=env, capture_output=True, text=True, timeout=600)
  assert done.returncode == 1 and "1 failed, 2 passed, 1 skipped, 1 xfailed" in done.stdout, (
    done.stdout[-2000:] + done.stderr
  )
  session, *records = map(json.loads, log.read_text().splitlines())
  assert session["session"]["workers"] == 1 and session["session"]["commit"]
  lines = {line["test"].split("::")[1]: line for line in records}
  names = ["test_plain", "test_compiles_two_programs", "test_fails", "test_skipped", "test_expected_to_fail"]
  assert sorted(lines) == sorted(names)
  assert {line["worker"] for line in lines.values()} == {"gw0"}
  assert [lines[t]["outcome"] for t in names] == ["passed", "passed", "failed", "skipped", "xfailed"]
  assert lines["test_plain"]["compiles"] == 0 and lines["test_plain"]["compile_s"] == 0.0
  assert lines["test_compiles_two_programs"]["compiles"] == 2 and lines["test_compiles_two_programs"]["compile_s"] > 0
  assert lines["test_compiles_two_programs"]["cache_hits"] == 0
  assert lines["test_plain"]["end_s"] < lines["test_compiles_two_programs"]["end_s"] < lines["test_fails"]["end_s"]


def _line(test: str, worker: str, seconds: float, end_s: float, compiles: int = 0, outcome: str = "passed") -> dict:
  return {
    "test": test, "worker": worker, "seconds": seconds, "end_s": end_s, "outcome": outcome, "trace_s": 0.5,
    "lower_s": 0.25, "compile_s": 2.0 * compiles, "compiles": compiles, "cache_hits": 0,
  }  # fmt: skip


def test_suite_time_sums_by_worker_and_file_exactly():
  lines = [
    _line("tests/test_a.py::test_1", "gw0", 40.0, 40.0, compiles=3),
    _line("tests/test_b.py::test_1[x]", "gw1", 10.0, 10.0),
    _line("tests/test_b.py::test_1[y]", "gw1", 25.0, 35.0, compiles=1, outcome="failed"),
    _line("tests/test_a.py::test_2", "gw0", 20.0, 60.0),
  ]
  out = suite_time.summarize(lines, workers=2, top=2, weigh_above=30.0)
  assert out["tests"] == 4 and out["failed"] == ["tests/test_b.py::test_1[y]"]
  assert out["work_s"] == 95.0 and out["tail_s"] == 25.0  # gw1 ended at 35 s, gw0 at 60 s
  assert out["workers"] == {"gw0": {"busy_s": 60.0, "last_end_s": 60.0}, "gw1": {"busy_s": 35.0, "last_end_s": 35.0}}
  # A worker that ran nothing ended at 0 s: the other ran alone throughout.
  assert suite_time.summarize(lines[:1] + lines[3:], workers=2)["tail_s"] == 60.0
  assert [(f["file"], f["tests"], f["seconds"], f["compiles"], f["compile_s"]) for f in out["by_file"]] == [
    ("test_a.py", 2, 60.0, 3, 6.0), ("test_b.py", 2, 35.0, 1, 2.0),
  ]  # fmt: skip
  assert out["totals"] == pytest.approx({"seconds": 95.0, "trace_s": 2.0, "lower_s": 1.0, "compile_s": 8.0,
                                          "compiles": 4, "cache_hits": 0})  # fmt: skip
  assert [s["test"] for s in out["slowest"]] == ["tests/test_a.py::test_1", "tests/test_b.py::test_1[y]"]
  assert out["file_seconds"] == {"test_a.py": 60, "test_b.py": 35}
