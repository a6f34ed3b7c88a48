"""`dreamer runs`: each status with exact numbers on hand-made runs, a real finished run, --json, bad input."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dreamer import cli, runs
from dreamer import config as config_lib
from dreamer.logger import read_metrics
from dreamer.runlock import RunLock

ROOT = Path(__file__).resolve().parent.parent


def ev(steps, search, policy):
  """An evaluation record as train.evaluate_if_due writes it (wall_s: a tenth of the env steps)."""
  return {"eval/search_return": search, "eval/policy_return": policy, "env_steps": steps, "wall_s": steps / 10}


def tr(steps, updates, dream=None):
  """A training record as train.record writes it (wall_s: a tenth of the env steps)."""
  return {"env_steps": steps, "updates": updates, "wall_s": steps / 10, **({"dream/ratio": dream} if dream else {})}


def summary(steps, updates, *, stopped=None, solved=False, wall_s=99.0, **extra):
  """A closing summary as train.summarize writes it (the fields read here)."""
  ends = {"solved": solved, "stopped": stopped}
  return {"summary": True, "env_steps": steps, "updates": updates, "wall_s": wall_s, **ends, **extra}


def fake_run(path, records, *, total=300):
  """A run directory: config.json (toy:chain, `total` env steps, 4 envs, 4 simulations, batches of 10) and
  metrics.jsonl."""
  config = config_lib.Config(total_env_steps=total, num_envs=4, num_simulations=4, batch_size=10, world="toy:chain")
  path.mkdir(parents=True)
  (path / "config.json").write_text(json.dumps(config.to_dict()))
  (path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
  return path


EVALS = [ev(100, 0.5, 0.2), ev(200, 0.9, 0.4), ev(300, 0.7, 0.6)]


@pytest.fixture
def folder(tmp_path):
  """One run of each status (all but running, whose lock a test holds) under tmp_path/runs."""
  top = tmp_path / "runs"
  # The summary repeats the last evaluation's returns (as train.summarize does): they must not count twice.
  last = {"eval/search_return": 0.7, "eval/policy_return": 0.6}
  fake_run(top / "finished", [tr(100, 8), *EVALS, summary(300, 24, **last)])  # no dream count: rebuilt
  fake_run(top / "solved", [EVALS[0], ev(200, 1.0, 0.3), summary(200, 16, solved=True, **{"dream/ratio": 7.5})])
  fake_run(top / "deep/sigterm", [*EVALS[:2], tr(240, 16, 30.0), summary(240, 16, stopped="SIGTERM", wall_s=25.5)])
  fake_run(top / "killed", [*EVALS[:2], tr(256, 20, 31.25)])
  diverged = {"event": "diverged", "env_steps": 264, "updates": 24, "error": "non-finite loss at update 24"}
  fake_run(top / "diverged", [*EVALS[:2], tr(256, 16, 20.0), diverged])
  # Diverged, then resumed from its checkpoint at 200, then killed: the divergence is history.
  resume = {"event": "resume", "env_steps": 200, "updates": 16, "checkpoint": "x", "changed": None}
  fake_run(top / "resumed", [*EVALS[:2], {**diverged, "env_steps": 200}, resume, tr(232, 24, 40.0)])
  damaged = '{"env_steps": 1}\n{bad\n{}\n'  # line 2: not a torn last line, which read_metrics skips
  fake_run(top / "damaged", [EVALS[0]]).joinpath("metrics.jsonl").write_text(damaged)
  fake_run(top / "badconfig", [EVALS[0]]).joinpath("config.json").write_text("{")
  (top / "notarun").mkdir()
  (top / "notarun" / "config.json").write_text("{}")  # no metrics.jsonl: not a run
  return top


def test_every_status_with_its_numbers(folder):
  rows = {r["path"]: r for r in runs.listing(folder)}
  assert list(rows) == ["badconfig", "damaged", "deep/sigterm", "diverged", "finished", "killed", "resumed", "solved"]
  pick = ("status", "reason", "env_steps", "updates", "search_best", "search_last", "policy_best", "policy_last")
  got = {path: tuple(r[k] for k in pick) for path, r in rows.items()}
  assert got["finished"] == ("finished", None, 300, 24, 0.9, 0.7, 0.6, 0.6)
  assert got["solved"] == ("finished", None, 200, 16, 1.0, 1.0, 0.3, 0.3)
  assert got["deep/sigterm"] == ("stopped", "SIGTERM", 240, 16, 0.9, 0.9, 0.4, 0.4)
  assert got["killed"] == ("stopped", "killed", 256, 20, 0.9, 0.9, 0.4, 0.4)
  assert got["diverged"] == ("diverged", "non-finite loss at update 24", 264, 24, 0.9, 0.9, 0.4, 0.4)
  assert got["resumed"] == ("stopped", "killed", 232, 24, 0.9, 0.9, 0.4, 0.4)
  assert got["damaged"][:2] == ("unreadable", "metrics.jsonl line 2 is not JSON")
  assert got["badconfig"][0] == "unreadable" and got["badconfig"][1].startswith("config.json: ")
  # Wall-clock: the summary's, else the newest record's; dream ratio: logged, else rebuilt from the counters
  # (4 simulations per env step, no reanalysis, 24 updates x 10 samples x 5 unroll steps / 300 env steps: 4 + 4).
  wall = {p: (r["wall_s"], r["dream_ratio"]) for p, r in rows.items()}
  assert wall["finished"] == (99.0, 8.0) and wall["solved"] == (99.0, 7.5)
  assert wall["deep/sigterm"] == (25.5, 30.0) and wall["killed"] == (25.6, 31.25) and wall["diverged"] == (25.6, 20.0)
  assert all(r["world"] == "toy:chain" and r["preset"] is None for p, r in rows.items() if p != "badconfig")
  assert not list(folder.rglob(".lock"))  # looking for a holder creates no lock file


def test_a_held_lock_is_running_and_its_file_untouched(folder):
  run = folder / "killed"
  with RunLock(run):
    text = (run / ".lock").read_text()
    row = runs.describe(run, root=folder)
    assert row["status"] == "running" and row["reason"].startswith(f"pid {os.getpid()} on host ")
    assert (run / ".lock").read_text() == text
  assert runs.describe(run, root=folder)["status"] == "stopped"  # released: killed again


def test_table_and_json_from_the_command(folder, capsys):
  (folder / "badconfig" / "config.json").unlink()  # no run any more: one unreadable row is enough here
  assert cli.main(["runs", str(folder)]) == 0
  head = "wall_s  dream_ratio  status"
  assert capsys.readouterr().out.splitlines() == [
    f"path          world      preset  env_steps  updates  search_best  search_last  policy_best  policy_last  {head}",
    "damaged       toy:chain  —               —        —            —            —            —            —       —"
    "            —  unreadable (metrics.jsonl line 2 is not JSON)",
    "deep/sigterm  toy:chain  —             240       16         0.90         0.90         0.40         0.40      26"
    "         30.0  stopped (SIGTERM)",
    "diverged      toy:chain  —             264       24         0.90         0.90         0.40         0.40      26"
    "         20.0  diverged",
    "finished      toy:chain  —             300       24         0.90         0.70         0.60         0.60      99"
    "          8.0  finished",
    "killed        toy:chain  —             256       20         0.90         0.90         0.40         0.40      26"
    "         31.2  stopped (killed)",
    "resumed       toy:chain  —             232       24         0.90         0.90         0.40         0.40      23"
    "         40.0  stopped (killed)",
    "solved        toy:chain  —             200       16         1.00         1.00         0.30         0.30      99"
    "          7.5  finished",
  ]
  assert cli.main(["runs", str(folder), "--json"]) == 0
  rows = json.loads(capsys.readouterr().out)
  assert rows == runs.listing(folder) and [list(r) for r in rows] == [list(runs.FIELDS)] * 7
  assert rows[1] == {
    "path": "deep/sigterm",
    "world": "toy:chain",
    "preset": None,
    "env_steps": 240,
    "updates": 16,
    "search_best": 0.9,
    "search_last": 0.9,
    "policy_best": 0.4,
    "policy_last": 0.4,
    "wall_s": 25.5,
    "dream_ratio": 30.0,
    "status": "stopped",
    "reason": "SIGTERM",
  }


def test_no_runs_is_one_line_and_exit_2(tmp_path, capsys):
  (tmp_path / "empty" / "sub").mkdir(parents=True)
  assert cli.main(["runs", str(tmp_path / "empty")]) == 2
  err = capsys.readouterr().err
  assert err.count("\n") == 1 and err.startswith("dreamer: error: no runs under ")
  assert str(tmp_path / "empty") in err and "config.json and metrics.jsonl" in err
  assert cli.main(["runs", str(tmp_path / "missing")]) == 2
  assert "is not a directory" in capsys.readouterr().err


def test_a_real_finished_run(debug_run):
  """The debug run shared with test_train (trained once per session): the listing matches its own files."""
  _, run_dir, done = debug_run
  (row,) = runs.listing(run_dir)
  evals = [r for r in read_metrics(run_dir) if "eval/search_return" in r and not r.get("summary")]
  assert row["path"] == "." and row["status"] == "finished" and row["world"] == "toy:chain"
  assert row["preset"] == json.loads((run_dir / "config.json").read_text())["preset"] != ""
  assert (row["env_steps"], row["updates"], row["dream_ratio"]) == (
    done["env_steps"],
    done["updates"],
    done["dream/ratio"],
  )
  assert row["search_last"] == evals[-1]["eval/search_return"] == done["eval/search_return"]
  assert row["search_best"] == max(r["eval/search_return"] for r in evals)
  assert row["policy_best"] == max(r["eval/policy_return"] for r in evals)
  assert row["wall_s"] == pytest.approx(done["wall_s"])


@pytest.mark.slow
def test_a_real_run_while_it_trains_and_after_sigterm(tmp_path):
  run = tmp_path / "runs" / "cp"
  cmd = [sys.executable, "-m", "dreamer.cli", "train", "--config", "debug", "--logdir", str(run), "--quiet"]
  cmd += ["--set", "stop_return=inf", "--set", "total_env_steps=1000000"]
  proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
  try:
    end = time.monotonic() + 300
    while not [r for r in _records(run) if "updates" in r and "eval/search_return" not in r]:
      assert proc.poll() is None and time.monotonic() < end, "the run never logged an update"
      time.sleep(0.5)
    (row,) = runs.listing(tmp_path / "runs")
    assert row["status"] == "running" and row["reason"].startswith(f"pid {proc.pid} on host ")
  finally:
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=300)
  done = json.loads(out.splitlines()[-1])
  (row,) = runs.listing(tmp_path / "runs")
  assert (row["status"], row["reason"]) == ("stopped", "SIGTERM")
  assert (row["env_steps"], row["updates"], row["dream_ratio"]) == (
    done["env_steps"],
    done["updates"],
    done["dream/ratio"],
  )


def _records(run: Path) -> list[dict]:
  try:
    return read_metrics(run)
  except OSError:
    return []
