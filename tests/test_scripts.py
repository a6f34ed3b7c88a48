"""Every benchmark script under scripts/ still imports and parses its options (a rename once broke two of them
silently, since nothing in the suite ran them)."""

import subprocess
import sys
from pathlib import Path

import pytest

SCRIPTS = sorted((Path(__file__).resolve().parent.parent / "scripts").glob("*.py"))


def test_there_are_scripts():
  assert len(SCRIPTS) >= 4


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_script_imports_and_prints_its_usage(script):
  done = subprocess.run([sys.executable, str(script), "--help"], capture_output=True, text=True, timeout=300)
  assert done.returncode == 0, done.stderr[-2000:]
  assert "usage:" in done.stdout


def test_an_archived_run_reads_like_the_original(debug_run, tmp_path):
  from dreamer import compare
  from dreamer.logger import read_metrics

  _, run_dir, _ = debug_run
  dest = tmp_path / "archived"
  cmd = [sys.executable, "scripts/archive_run.py", str(run_dir), str(dest), "--commit", "abc", "--command", "x"]
  cmd += ["--every", "1000"]
  done = subprocess.run(cmd, cwd=SCRIPTS[0].parent.parent, capture_output=True, text=True, timeout=300)
  assert done.returncode == 0, done.stderr[-2000:]
  original, archived = compare.load_run(run_dir), compare.load_run(dest)
  for field in ("steps", "wall", "search", "policy"):
    assert (getattr(original, field) == getattr(archived, field)).all(), field
  assert (original.env_steps, original.wall_s, original.dream) == (archived.env_steps, archived.wall_s, archived.dream)
  kept = read_metrics(dest)
  train_steps = [r["env_steps"] for r in kept if "loss/total" in r]
  assert len(kept) < len(read_metrics(run_dir)) and len(train_steps) == len({s // 1000 for s in train_steps})
