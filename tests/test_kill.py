"""A training process killed (SIGKILL) at several points, including during a checkpoint write, resumes from
its newest complete checkpoint and ends exactly where a run that was never killed ends. SIGTERM stops a run
cleanly after a checkpoint."""

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import assert_mirrors, assert_same_state

from dreamer import config as config_lib
from dreamer.agent import load_checkpoint
from dreamer.logger import read_metrics
from dreamer.train import train

OVERRIDES = ["stop_return=inf", "total_env_steps=2400", "checkpoint_every_updates=16", "checkpoints_kept=3"]
TIMING = ("wall_s", "eval/seconds", "speed/env_steps_per_s", "speed/updates_per_s", "sys/rss_bytes")


def _start(run_dir: Path) -> subprocess.Popen:
  args = ["train", "--config", "debug", "--logdir", str(run_dir), "--quiet"] + [f"--set={o}" for o in OVERRIDES]
  return subprocess.Popen(
    [sys.executable, "-m", "dreamer.cli", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
  )


def _complete(run_dir: Path) -> list[int]:
  d = run_dir / "checkpoints"
  return sorted(int(p.name) for p in d.iterdir() if p.name.isdigit()) if d.is_dir() else []


def _partial(run_dir: Path) -> list[str]:
  d = run_dir / "checkpoints"
  return [p.name for p in d.iterdir() if not p.name.isdigit()] if d.is_dir() else []


def _kill_when(proc: subprocess.Popen, ready, timeout: float = 180.0) -> None:
  """SIGKILLs `proc` the moment `ready()` holds (polled every millisecond)."""
  end = time.monotonic() + timeout
  while not ready():
    assert proc.poll() is None, f"the run ended before the kill point: {proc.communicate()[1][-2000:]}"
    assert time.monotonic() < end, "the kill point never came"
    time.sleep(0.001)
  proc.kill()
  proc.wait()


def _untimed(record: dict) -> dict:
  return {k: v for k, v in record.items() if k not in TIMING}


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
  run_dir = tmp_path_factory.mktemp("straight")
  return run_dir, train(config_lib.load("debug", OVERRIDES), run_dir, console=False)


@pytest.mark.slow
def test_sigkill_at_several_points_then_resume_ends_where_an_unkilled_run_ends(straight, tmp_path):
  run = tmp_path / "run"
  resumes = []  # what each restart must resume from: the newest complete checkpoint at the kill

  # 1. During start-up (imports, compilation), before any checkpoint exists.
  proc = _start(run)
  _kill_when(proc, lambda: (run / "metrics.jsonl").exists())
  assert _complete(run) == []
  resumes.append(None)

  # 2. Between checkpoints: two complete, none being written.
  proc = _start(run)
  _kill_when(proc, lambda: len(_complete(run)) >= 2 and not _partial(run))
  resumes.append(_complete(run)[-1])

  # 3. During a checkpoint write: the moment orbax's temporary directory appears. The kill counts if the
  #    temporary directory is still there afterwards (the write was cut short); else try the next write.
  for _ in range(5):
    proc = _start(run)
    _kill_when(proc, lambda: bool(_partial(run)))
    resumes.append(_complete(run)[-1])
    if _partial(run):
      break
  assert _partial(run), "no kill landed inside a checkpoint write in 5 tries"
  torn = _partial(run)

  # 4. Resume to the end.
  proc = _start(run)
  out, err = proc.communicate(timeout=300)
  assert proc.returncode == 0, err[-2000:]

  # No temporary directory survives, and every kept checkpoint reads back with matching checksums.
  assert not _partial(run), f"left behind: {_partial(run)} (torn by the kill: {torn})"
  for step in _complete(run):
    load_checkpoint(run, step)
  # Each restart resumed from the newest checkpoint complete at its kill (a kill before any record was
  # written leaves nothing to resume from, and no resume record).
  raw = read_metrics(run, raw=True)
  events = [r for r in raw if r.get("event") == "resume"]
  got = [None if e["checkpoint"] is None else int(Path(e["checkpoint"]).name) for e in events]
  assert got[-len(resumes) + 1 :] == resumes[1:] and len(got) in (len(resumes) - 1, len(resumes)), (got, resumes)
  for e in events:
    assert e["env_steps"] == (0 if e["checkpoint"] is None else int(Path(e["checkpoint"]).name))

  # The finished run's counters and records are those of a run that was never killed, and so is its state.
  straight_dir, summary = straight
  final = read_metrics(run)
  assert final[-1]["summary"] and final[-1]["env_steps"] == 2400
  for key in ("env_steps", "updates", "episodes", "eval/search_return", "eval/policy_return"):
    assert final[-1][key] == summary[key], key
  records = [_untimed(r) for r in final if "event" not in r and not r.get("summary")]
  assert records == [_untimed(r) for r in read_metrics(straight_dir) if "event" not in r and not r.get("summary")]
  assert_same_state(load_checkpoint(straight_dir), load_checkpoint(run))
  # TensorBoard shows metrics.jsonl as it stands: every point once, at its step, none from before a resume.
  assert_mirrors(run)


@pytest.mark.slow
def test_sigterm_writes_a_checkpoint_and_exits_143_then_resumes(tmp_path):
  run = tmp_path / "run"
  proc = _start(run)
  end = time.monotonic() + 180
  while not _complete(run):
    assert proc.poll() is None and time.monotonic() < end
    time.sleep(0.01)
  proc.send_signal(signal.SIGTERM)
  out, err = proc.communicate(timeout=120)
  assert proc.returncode == 128 + signal.SIGTERM, err[-2000:]
  assert "stopped by SIGTERM" in err and f"resume with: dreamer train --logdir {run}" in err
  summary = read_metrics(run)[-1]
  assert summary["stopped"] == "SIGTERM" and summary["env_steps"] < 2400
  assert _complete(run)[-1] == summary["env_steps"]  # the checkpoint is at the step where it stopped
  proc = _start(run)
  out, err = proc.communicate(timeout=300)
  assert proc.returncode == 0, err[-2000:]
  assert read_metrics(run)[-1]["env_steps"] == 2400
