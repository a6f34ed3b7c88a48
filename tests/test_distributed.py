"""One run over two processes on localhost (`dreamer/distributed.py`), joined with `jax.distributed` and gloo's
CPU collectives: each process steps half the environments on its one CPU device, process 0 writes the logs and
orbax writes the checkpoints. Two processes learn what one process learns (up to the order of floating-point
sums), a process killed mid-run stops the other with one clear line, and the run resumes from its last
checkpoint to where an unkilled run ends.
"""

import os
import signal
import socket
import subprocess
import sys
import time

import numpy as np

from dreamer import cli
from dreamer.agent import load_checkpoint
from dreamer.logger import read_metrics
from tests.test_devices import RTOL, _assert_same_run, _losses

LONG_ATOL = 1e-3  # parameters after 40 updates, absolute: a third of one Adam step at the debug learning rate

# The debug preset at a fixed length, a checkpoint every 8 updates (one chunk).
ARGS = ["--config", "debug", "--quiet", "--set", "stop_return=inf", "--set", "total_env_steps=800"]
ARGS += ["--set", "checkpoint_every_updates=8", "--set", "tensorboard=false"]
# Exploratory repeats and held noise on: each process draws them for every env, keeps its own rows, saves every
# env's.
ARGS += ["--set", "explore_epsilon=0.3", "--set", "explore_max_repeat=20", "--set", "noise_hold=episode"]
ARGS += ["--set", "noise_redraw=0.2", "--set", "noise_hold_spread=0.001"]
ENV = {**os.environ, "JAX_PLATFORMS": "cpu", "XLA_FLAGS": ""}


def _port() -> int:
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


def _start(run_dir, *, stop: int, process: int | None = None, port: int = 0, extra=()) -> subprocess.Popen:
  """`dreamer train` in a child: alone (process None) or as `process` of two joined at localhost:`port`."""
  command = [sys.executable, "-m", "dreamer.cli", "train", *ARGS, "--logdir", str(run_dir)]
  command += ["--stop-after-updates", str(stop), *extra]
  if process is not None:
    command += ["--coordinator", f"localhost:{port}", "--num-processes", "2", "--process-id", str(process)]
  return subprocess.Popen(command, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _finish(*children: subprocess.Popen) -> list[tuple[int, str]]:
  """(exit code, stderr without JAX's own log lines) of each child, once all have ended."""
  out = []
  for child in children:
    _, err = child.communicate(timeout=900)
    lines = [x for x in err.splitlines() if x.startswith("dreamer:")]
    out.append((child.returncode, "\n".join(lines)))
  return out


def _steps(run_dir) -> list[int]:
  return sorted(int(p.name) for p in (run_dir / "checkpoints").iterdir() if p.name.isdigit())


def _pair(run_dir, *, stop: int) -> tuple[subprocess.Popen, subprocess.Popen]:
  port = _port()
  return _start(run_dir, stop=stop, process=0, port=port), _start(run_dir, stop=stop, process=1, port=port)


def test_two_processes_train_as_one_and_resume_after_one_is_killed(tmp_path):
  """16 updates over two processes equal 16 in one process; resumed, process 1 is killed after the checkpoint at
  update 24: process 0 stops with one line, and both restarted continue from that checkpoint to update 40,
  where a one-process run that was never stopped agrees with them; then one process resumes their run."""
  one, two = tmp_path / "one", tmp_path / "two"
  alone = _start(one, stop=16)
  assert _finish(alone, *_pair(two, stop=16)) == [(0, "")] * 3
  _assert_same_run(load_checkpoint(one), load_checkpoint(two))
  l1, l2 = _losses(one), _losses(two)
  assert l1.keys() == l2.keys() and l1
  np.testing.assert_allclose([l2[k] for k in l1], list(l1.values()), rtol=RTOL)
  assert read_metrics(two)[-1]["devices"] == ["cpu:0", "cpu:2048"]  # one summary, by process 0

  saved = _steps(two)  # updates 8 and 16
  first, second = _pair(two, stop=40)
  deadline = time.monotonic() + 600
  while len(_steps(two)) == len(saved) and time.monotonic() < deadline:  # the next checkpoint: update 24's
    assert first.poll() is None and second.poll() is None
    time.sleep(0.1)
  second.send_signal(signal.SIGKILL)
  (code, message), (killed, _) = _finish(first, second)
  assert killed == -signal.SIGKILL and code == 1
  assert "process 0 of 2 lost contact with the run's other processes" in message and "\n" not in message
  assert "start every process again with the same command" in message

  alone = _start(one, stop=40)
  assert _finish(alone, *_pair(two, stop=40)) == [(0, "")] * 3
  resumed = [r for r in read_metrics(two) if r.get("event") == "resume"]
  assert resumed[-1]["updates"] >= 24
  # Summed in another order, gradients differ in their last bits and Adam's steps carry that forward: after 40
  # updates a few weights of one layer were 2.8e-4 apart on an AMD EPYC (under 1e-4 on the earlier CI
  # machines), a tenth of one step at learning rate 3e-3, while the replay (what acting chose) stays identical.
  _assert_same_run(load_checkpoint(one), load_checkpoint(two), atol=LONG_ATOL)

  # The two processes' checkpoint resumes in one process; their episodes in progress cannot continue there.
  [(code, message)] = _finish(_start(two, stop=48))
  assert code == 0 and "its episodes were saved by 2 processes, this run has 1; the run resumes with new" in message
  assert read_metrics(two)[-1]["updates"] == 48


def test_processes_that_cannot_join_give_one_line_after_the_timeout(tmp_path):
  """Process 1 of 2 with no coordinator anywhere, and process 0 of 2 whom nobody joins, give up after
  --join-timeout with one line each (JAX's client would abort); nothing is written."""
  wait = ["--join-timeout", "3"]
  children = [_start(tmp_path / f"run{k}", stop=8, process=k, port=_port(), extra=wait) for k in (1, 0)]
  (code1, message1), (code0, message0) = _finish(*children)
  assert code1 == code0 == 2 and "\n" not in message1 + message0
  assert "process 1 of 2 could not join the run at coordinator localhost:" in message1
  assert "within 3 s: nothing answers at that address" in message1
  assert "process 0 of 2 could not join" in message0 and "within 3 s: not all 2 processes joined" in message0
  assert not list(tmp_path.iterdir())


def test_a_process_0_that_cannot_start_the_run_stops_the_other_with_one_line(tmp_path):
  """--logdir is a file: process 0 refuses it, and process 1, waiting for the run directory, stops too (one line
  each) instead of waiting forever; nothing is written."""
  bad = tmp_path / "file"
  bad.write_text("not a run\n")
  [(code0, message0), (code1, message1)] = _finish(*_pair(bad, stop=8))
  assert (code0, code1) == (2, 2) and "\n" not in message0 + message1
  assert f"--logdir {str(bad)!r} is a file" in message0
  assert "process 0 could not start the run (its output says why); nothing was changed" in message1
  assert bad.read_text() == "not a run\n" and [p.name for p in tmp_path.iterdir()] == ["file"]


def test_process_settings_come_from_the_environment(tmp_path, capsys, monkeypatch):
  """JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES and JAX_PROCESS_ID stand in for the options (the options'
  own mistakes are rows of the bad-input table in docs/checkpoints.md)."""
  monkeypatch.setenv("JAX_COORDINATOR_ADDRESS", "localhost:1")
  monkeypatch.setenv("JAX_NUM_PROCESSES", "2")
  monkeypatch.setenv("JAX_PROCESS_ID", "5")
  assert cli.main(["train", "--config", "debug", "--logdir", str(tmp_path / "run")]) == 2
  assert "--process-id must be in 0..1 for --num-processes 2, got 5" in capsys.readouterr().err
  monkeypatch.setenv("JAX_PROCESS_ID", "1")
  assert cli.main(["train", "--config", "debug"]) == 2  # no --logdir: each process would make its own
  assert "needs one run directory that every process names: give --logdir DIR" in capsys.readouterr().err
  monkeypatch.delenv("JAX_NUM_PROCESSES")
  assert cli.main(["train", "--config", "debug", "--logdir", str(tmp_path / "run")]) == 2
  assert "needs --num-processes (or JAX_NUM_PROCESSES) too" in capsys.readouterr().err
  assert not list(tmp_path.iterdir())
