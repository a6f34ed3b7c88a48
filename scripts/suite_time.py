"""Where the test suite's time goes; prints one JSON object.

Runs `pytest -q` as CI does (the project's pytest options: two workers, whole files per worker) with
`--suite-log` (`tests/suite_log.py`: a line per test), or only reads such a log (`--read`), and sums it: the
wall seconds, each worker's busy seconds and how long the last one ran alone at the end (`tail_s`), per file its
seconds, tests and jax's trace, lowering and compile seconds and programs, the slowest tests, and
`file_seconds`: the per-file weights `tests/conftest.py`'s FILE_SECONDS takes (files over --weigh-above seconds).
Records the commit the log was made at (and the one it was read at). Run it on a quiet machine: other jobs
stretch every figure.

  python scripts/suite_time.py [--log FILE] [--top 20] [-- PYTEST_ARGS...]
  python scripts/suite_time.py --read --log FILE
"""

from __future__ import annotations

import argparse
import collections
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from suite_log import file_of  # noqa: E402  (the plugin's rule, by which FILE_SECONDS is keyed)

from dreamer.suites import commit  # noqa: E402

SUMMED = ("seconds", "trace_s", "lower_s", "compile_s", "compiles", "cache_hits")


def summarize(lines: list[dict], *, workers: int = 0, top: int = 20, weigh_above: float = 30.0) -> dict:
  """The log's test lines (`tests/suite_log.py`) summed by worker and by file. `workers`: how many the session
  had (0: none, pytest in one process), so that one that ran no test counts as ending at 0 s."""
  busy, last_end = collections.Counter(), collections.defaultdict(float)
  for worker in [f"gw{i}" for i in range(workers)]:
    busy[worker], last_end[worker] = 0.0, 0.0
  files: dict[str, dict] = {}
  for line in lines:
    busy[line["worker"]] += line["seconds"]
    last_end[line["worker"]] = max(last_end[line["worker"]], line["end_s"])
    entry = files.setdefault(file_of(line["test"]), {"tests": 0, **dict.fromkeys(SUMMED, 0)})
    entry["tests"] += 1
    for key in SUMMED:
      entry[key] += line[key]
  by_file = sorted(({"file": f, **v} for f, v in files.items()), key=lambda e: -e["seconds"])
  ends = sorted(last_end.values())
  return {
    "tests": len(lines),
    "failed": sorted(line["test"] for line in lines if line["outcome"] in ("failed", "crashed", "incomplete")),
    "work_s": sum(busy.values()),
    "workers": {w: {"busy_s": busy[w], "last_end_s": last_end[w]} for w in sorted(busy)},
    "tail_s": ends[-1] - ends[-2] if len(ends) > 1 else 0.0,
    "totals": {key: sum(line[key] for line in lines) for key in SUMMED},
    "by_file": by_file,
    "slowest": sorted(lines, key=lambda line: -line["seconds"])[:top],
    "file_seconds": {e["file"]: round(e["seconds"]) for e in by_file if e["seconds"] > weigh_above},
  }


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  log = Path(tempfile.gettempdir()) / "dreamer-suite-log.jsonl"
  parser.add_argument("--log", type=Path, default=log, help=f"the per-test log to write or read (default: {log})")
  parser.add_argument("--read", action="store_true", help="only read --log, written by an earlier run")
  parser.add_argument("--top", type=int, default=20, help="how many of the slowest tests to list")
  parser.add_argument("--weigh-above", type=float, default=30.0, help="files weighed in file_seconds: over this")
  parser.add_argument("pytest_args", nargs="*", help="after --: passed to pytest")
  args = parser.parse_args()
  out: dict = {}
  if not args.read:
    args.log.unlink(missing_ok=True)  # a pytest that stops before writing must not leave an older log to read
    # One token: an xdist worker parses its arguments before the conftest registers the option, and would take
    # a separate FILE for a test path (its rootdir then FILE's folder, where no conftest is).
    command = [sys.executable, "-m", "pytest", "-q", f"--suite-log={args.log.resolve()}", *args.pytest_args]
    start = time.monotonic()
    out["returncode"] = subprocess.run(command, cwd=ROOT, stdout=sys.stderr).returncode  # the JSON alone on stdout
    out["wall_s"] = time.monotonic() - start
    out["command"] = " ".join(command[1:])
  if not args.log.exists():
    why = "give the log an earlier run wrote" if args.read else f"pytest wrote none (return code {out['returncode']})"
    raise SystemExit(f"suite_time: no log at {args.log}: {why}")
  records = [json.loads(x) for x in args.log.read_text().splitlines() if x.strip()]
  session = records[0].get("session", {}) if records else {}
  lines = [r for r in records if "test" in r]
  out = {"commit": session.get("commit", "unknown"), "read_at": commit(), **out}
  out.update(summarize(lines, workers=session.get("workers", 0), top=args.top, weigh_above=args.weigh_above))
  print(json.dumps(out, indent=2))


if __name__ == "__main__":
  main()
