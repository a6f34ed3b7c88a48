"""`pytest --suite-log=FILE` (one token: an xdist worker reads its arguments before the conftest registers the option,
and would take a separate FILE for a test path): one JSON line per test, written by the process that collects the
reports (xdist's controller, or pytest itself with `-n 0`): the test's id, the worker that ran it, its seconds
(setup, call and teardown), the seconds jax spent in that worker since the report before (jax.monitoring's events:
top-level jit traces, lowering, and compiling including the persistent cache's reads and writes; a test's
subprocesses are not counted), how many programs it asked the persistent cache or XLA for (`compiles`) and how many
of those the cache served (`cache_hits`), its outcome (passed, failed, skipped, xfailed, xpassed; crashed when its
worker died; incomplete when the session stopped first) and when it ended (seconds from the session's start). The
first line names the session: the commit and the number of workers. `scripts/suite_time.py` runs the suite with it
and sums the lines by file; `tests/conftest.py`'s FILE_SECONDS come from there."""

from __future__ import annotations

import json
import time

import pytest

# jax.monitoring's duration events, by the name a line gives their seconds.
EVENTS = {
  "trace_s": "/jax/core/compile/jaxpr_trace_duration",
  "lower_s": "/jax/core/compile/jaxpr_to_mlir_module_duration",
  "compile_s": "/jax/core/compile/backend_compile_duration",
}
_spent = {**dict.fromkeys(EVENTS, 0.0), "compiles": 0, "cache_hits": 0}  # this process's totals so far
_seen = dict(_spent)  # the totals when the last report was made
_lines: dict[str, dict] = {}  # per test id, summed over its phases (the collecting process)
_out: dict = {}  # the collecting process's open file and the session's start
_listening: list[bool] = []  # whether this process registered the listeners (so unconfigure removes exactly them)


def file_of(test_id: str) -> str:
  """'tests/test_x.py::test_y[a]' -> 'test_x.py': how the log's lines are summed and FILE_SECONDS is keyed."""
  return test_id.split("::")[0].rsplit("/", 1)[-1]


def _listen(event: str, seconds: float, **_) -> None:
  for name, key in EVENTS.items():
    if event == key:
      _spent[name] += seconds
      _spent["compiles"] += name == "compile_s"


def _count(event: str, **_) -> None:
  _spent["cache_hits"] += event == "/jax/compilation_cache/cache_hits"


def pytest_addoption(parser) -> None:
  parser.addoption("--suite-log", metavar="FILE", help="write one JSON line per test: worker, seconds, jax compiles")


def pytest_configure(config) -> None:
  if not config.getoption("suite_log"):
    return
  import jax.monitoring

  from dreamer.suites import commit

  jax.monitoring.register_event_duration_secs_listener(_listen)
  jax.monitoring.register_event_listener(_count)
  _listening.append(True)
  if not hasattr(config, "workerinput"):  # the collecting process owns the file; its first line: the session
    _out.update(file=open(config.getoption("suite_log"), "w"), start=time.monotonic())  # noqa: SIM115 (unconfigure)
    _write({"session": {"commit": commit(), "workers": _workers(config)}})


def _workers(config) -> int:
  """How many xdist workers the session starts (0: none, pytest in one process, `-n 0` or no xdist); xdist has
  already turned -n and --maxprocesses into one execution spec per worker."""
  return len(config.getoption("tx", None) or [])


def pytest_unconfigure(config) -> None:
  if _listening:  # jax asserts that a listener it removes was registered
    import jax.monitoring

    jax.monitoring.unregister_event_duration_listener(_listen)
    jax.monitoring.unregister_event_listener(_count)
    _listening.clear()
  if _out:
    for line in list(_lines.values()):  # tests that never ended (-x, maxfail, an interrupt)
      _end(line, outcome="incomplete")
    _out["file"].close()
    _out.clear()


def _write(record: dict) -> None:
  _out["file"].write(json.dumps(record) + "\n")
  _out["file"].flush()


def _end(line: dict, *, outcome: str | None) -> None:
  line["end_s"] = time.monotonic() - _out["start"]
  line["outcome"] = outcome or line.get("outcome", "passed")
  _write(_lines.pop(line["test"]))


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
  """Every phase's report carries what jax spent since the last report in this process (so a module fixture's
  compile counts for the test whose setup built it; the first test of a worker also carries its collection's)."""
  report = (yield).get_result()
  if item.config.getoption("suite_log"):
    report.jax_spent = {k: _spent[k] - _seen[k] for k in _spent}  # an extra attribute: xdist sends it on
    _seen.update(_spent)


def pytest_runtest_logreport(report) -> None:
  if not _out:
    return
  line = _lines.setdefault(report.nodeid, {"test": report.nodeid, "seconds": 0.0, **dict.fromkeys(_spent, 0)})
  line["seconds"] += report.duration
  for key, spent in getattr(report, "jax_spent", {}).items():
    line[key] += spent
  if line.get("outcome") != "failed" and (report.when == "call" or not report.passed):
    line["outcome"] = report.outcome  # a skip at setup stays a skip, a failure in any phase a failure
    if hasattr(report, "wasxfail"):
      line["outcome"] = "xfailed" if report.skipped else "xpassed"
  node = getattr(report, "node", None)  # xdist's controller: the worker that sent the report
  line["worker"] = node.gateway.id if node is not None else "main"
  if report.when == "teardown":
    _end(line, outcome=None)
  elif report.when not in ("setup", "call"):  # xdist's report of a test whose worker crashed: no teardown follows
    _end(line, outcome="crashed")
