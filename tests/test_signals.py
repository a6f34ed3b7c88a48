"""Ctrl-C during the first jit compile: the first says the run will stop after the current step, the second
ends the process at once with exit code 130 (never a crash), and the run stays resumable."""

import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_second_sigint_during_the_first_compile_exits_130_and_the_run_resumes(tmp_path):
  run = tmp_path / "run"
  cmd = [sys.executable, "-m", "dreamer.cli", "train", "--config", "debug", "--logdir", str(run), "--quiet"]
  proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
  try:
    end = time.monotonic() + 120
    while not (run / "metrics.jsonl").exists():  # the loop is about to act: the first compile is next
      assert proc.poll() is None and time.monotonic() < end, proc.communicate()
      time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    time.sleep(0.5)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
  finally:
    proc.kill()
  assert proc.returncode == 130, err[-2000:]
  assert "SIGINT received: the run stops after the current step" in err
  assert "second SIGINT: stopping at once" in err
  assert "Traceback" not in err and "Segmentation" not in err
  resumed = subprocess.run(cmd + ["--stop-after-updates", "8"], cwd=ROOT, capture_output=True, text=True)
  assert resumed.returncode == 0, resumed.stderr[-2000:]
