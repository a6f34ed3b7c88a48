"""Helpers shared by the resume tests: equal saved states, and TensorBoard's view equal to metrics.jsonl."""

import subprocess
import sys

import numpy as np

from dreamer import board
from dreamer import checkpoint as ckpt_lib
from dreamer.logger import read_metrics


def assert_same_state(a: ckpt_lib.Saved, b: ckpt_lib.Saved) -> None:
  """Every saved array equal bit for bit: parameters, target, optimizer, rng keys, replay, observations."""
  fa, fb = ckpt_lib.flatten((a.params, a.state)), ckpt_lib.flatten((b.params, b.state))
  assert fa.keys() == fb.keys()
  differ = [k for k in fa if not np.array_equal(fa[k], fb[k])]
  assert not differ, f"{len(differ)} arrays differ, e.g. {differ[:3]}"
  assert _untimed(a.meta["progress"]) == _untimed(b.meta["progress"])


def _untimed(progress: dict) -> dict:
  """The host counters without wall-clock readings."""
  drop = ("wall_s", "eval/seconds")
  return {k: _untimed(v) if isinstance(v, dict) else v for k, v in progress.items() if k not in drop}


def board_points(run_dir) -> dict[str, list[tuple[int, float]]]:
  """{tag: [(step, value)]} as TensorBoard shows them (its event accumulator, purging orphaned data)."""
  from tensorboard.backend.event_processing import event_accumulator

  acc = event_accumulator.EventAccumulator(str(run_dir / board.DIR_NAME), size_guidance={"scalars": 0})
  acc.Reload()
  return {t: [(e.step, e.value) for e in acc.Scalars(t)] for t in acc.Tags()["scalars"]}


def expected_points(run_dir) -> dict[str, list[tuple[int, float]]]:
  """{tag: [(step, value)]} from metrics.jsonl as it stands, by the documented rules (written out here, not
  taken from dreamer.board): every int or float value of a non-event record with an integer env_steps, at that
  step, tagged by its key (plain keys under 'run/'), except a closing summary's eval/ copies; the first value
  of a tag at a step wins."""
  out: dict[str, dict[int, float]] = {}
  for record in read_metrics(run_dir):
    step = record.get("env_steps")
    if "event" in record or type(step) is not int:
      continue
    for key, value in record.items():
      if key == "env_steps" or type(value) not in (int, float) or (record.get("summary") and key.startswith("eval/")):
        continue
      out.setdefault(key if "/" in key else f"run/{key}", {}).setdefault(step, float(value))
  return {t: sorted(points.items()) for t, points in out.items()}


def assert_mirrors(run_dir) -> None:
  got, want = board_points(run_dir), expected_points(run_dir)
  assert sorted(got) == sorted(want)
  for tag in want:
    steps = [s for s, _ in got[tag]]
    assert steps == [s for s, _ in want[tag]], tag  # same steps, increasing, none twice
    np.testing.assert_allclose([v for _, v in got[tag]], [v for _, v in want[tag]], rtol=1e-6, err_msg=tag)


def run_cli(*args: str, timeout: float = 900) -> None:
  """`python -m dreamer.cli ARGS` in a fresh process; asserts it exits 0 (its stderr's tail otherwise)."""
  done = subprocess.run([sys.executable, "-m", "dreamer.cli", *args], capture_output=True, text=True, timeout=timeout)
  assert done.returncode == 0, done.stderr[-3000:]
