"""One writer per run directory: a second `dreamer train` is refused naming the holder; a killed holder's lock
never blocks the resume."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dreamer import cli
from dreamer.config import ConfigError
from dreamer.runlock import RunInUse, RunLock

ROOT = Path(__file__).resolve().parent.parent


def test_a_second_holder_is_refused_naming_the_first(tmp_path):
  with RunLock(tmp_path):
    holder = json.loads((tmp_path / ".lock").read_text())
    assert holder["pid"] == os.getpid()
    with pytest.raises(RunInUse, match=rf"is in use by pid {os.getpid()} on host .+ since "):
      with RunLock(tmp_path):
        pass
  with RunLock(tmp_path):  # released: free again
    pass
  assert not (tmp_path / ".lock").exists()  # no run was started here: the directory is left as found


def test_a_planted_lock_link_is_refused_and_its_target_untouched(tmp_path):
  target = tmp_path / "precious.txt"
  target.write_text("keep me\n")
  run = tmp_path / "run"
  run.mkdir()
  (run / ".lock").symlink_to(target)
  with pytest.raises(ConfigError, match=r"cannot lock run directory .*\.lock is a link"):
    with RunLock(run):
      pass
  assert target.read_text() == "keep me\n"


def _wait_for(path: Path, proc: subprocess.Popen, seconds: float = 120.0) -> None:
  end = time.monotonic() + seconds
  while not path.exists():
    assert proc.poll() is None, proc.communicate()
    assert time.monotonic() < end, f"{path} never appeared"
    time.sleep(0.2)


def test_two_processes_one_run_and_a_killed_holder_does_not_block_the_resume(tmp_path, capsys):
  run = tmp_path / "run"
  cmd = [sys.executable, "-m", "dreamer.cli", "train", "--config", "debug", "--logdir", str(run), "--quiet"]
  cmd += ["--set", "stop_return=inf", "--set", "total_env_steps=1000000"]
  proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
  try:
    _wait_for(run / "metrics.jsonl", proc)  # written once the lock is held and the run has started
    before = (run / "config.json").read_bytes()
    assert cli.main(["train", "--logdir", str(run), "--set", "learning_rate=1e-4"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("dreamer: error:") and "\n" not in err, err
    assert f"is in use by pid {proc.pid} on host " in err
    assert (run / "config.json").read_bytes() == before  # the refused command changed nothing
  finally:
    proc.send_signal(signal.SIGKILL)
    proc.wait()
  assert (run / ".lock").exists()  # the killed holder's lock file stays; its lock does not
  assert cli.main(["train", "--logdir", str(run), "--stop-after-updates", "8", "--quiet"]) == 0
