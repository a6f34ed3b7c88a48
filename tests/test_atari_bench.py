"""CPU smoke run of the atari100k preset on one game (tiny network, a few hundred env steps), end to end:
`dreamer bench` writes a result file from the run's own metrics, `dreamer report` turns it into a report.
Its bad-input cases are rows of the README's table (tests/test_bad_input.py)."""

import json
import subprocess
import sys

import numpy as np

from dreamer import config as config_lib
from dreamer import replay, suites
from dreamer.agent import load_checkpoint
from dreamer.logger import read_metrics

TINY = [
  "channels=8",
  "head_channels=2",
  "head_hidden=8",
  "lstm_dim=16",
  "proj_dim=16",
  "batch_size=8",
  "num_simulations=4",
  "replay_capacity=1200",
  "total_env_steps=240",
  "learning_starts=80",
  "updates_per_env_step=0.25",
  "updates_per_chunk=4",
  "eval_every=120",
  "eval_episodes=2",
  "eval_max_steps=40",
  "checkpoint_every_updates=0",
]


def test_atari100k_preset_smoke_run_produces_a_report(tmp_path):
  """The suite's run goes through `--devices 1`: a `dreamer train` process on device 0 (as `dreamer bench
  --devices N` places N at once), its result.json written from its metrics; re-issued, the suite skips it."""
  runs = tmp_path / "runs"
  paths, stopped = suites.run_suite(
    "atari100k", games=["Pong"], seeds=[0], logdir=runs, preset="atari100k", overrides=TINY, devices=1, console=False
  )
  assert paths == [runs / "Pong" / "seed0" / "result.json"] and stopped is None
  assert read_metrics(runs / "Pong" / "seed0")[-1]["devices"] == ["cpu:0"]
  res = json.loads(paths[0].read_text())
  config = config_lib.from_dict(res["config"], "result")
  # the faithful preset is what ran, only the network and the schedule were made tiny
  preset = config_lib.load("atari100k")
  for key in (
    "frame_stack",
    "atari_frame_size",
    "atari_grayscale",
    "network",
    "search",
    "discount",
    "augment",
    "reanalyze_fraction",
    "optimizer",
    "value_support",
  ):
    assert getattr(config, key) == getattr(preset, key), key
  assert res["world"] == "atari:Pong" and res["seed"] == 0 and res["env_steps"] == 240
  assert [p["env_steps"] for p in res["eval_curve"]] == [120, 240]
  evals = [r for r in read_metrics(runs / "Pong" / "seed0") if "eval/search_return" in r and not r.get("summary")]
  assert res["final_score"] == evals[-1]["eval/search_return"]
  # Pong scores are whole points in [-21, 21]; 40 steps are too few to finish a game
  assert res["final_score"] == int(res["final_score"]) and -21 <= res["final_score"] <= 0
  assert res["updates"] == (240 - 80) // 4 * 1 and res["commit"]

  # replay held each frame once: 96x96x3 bytes per row, not 4 stacked frames
  saved = load_checkpoint(runs / "Pong" / "seed0")
  obs = saved.state["replay"].rows.obs
  assert obs.shape[2:] == (96, 96, 3) and obs.dtype == np.uint8
  assert saved.state["obs"].shape == (4, 4, 96, 96, 3)  # the actor's stacks: 4 envs x 4 frames
  assert replay.nbytes(saved.state["replay"]) < 1200 * (96 * 96 * 3 + 200)

  # re-issuing the suite skips the finished run
  mtime = paths[0].stat().st_mtime_ns
  assert suites.run_suite(
    "atari100k", games=["Pong"], seeds=[0], logdir=runs, preset="atari100k", overrides=TINY, console=False
  ) == (paths, None)
  assert paths[0].stat().st_mtime_ns == mtime

  # the checkpoint evaluates through the CLI on whole games with stacked frames
  proc = subprocess.run(
    [sys.executable, "-m", "dreamer.cli", "eval", "--checkpoint", str(runs / "Pong" / "seed0"), "--episodes", "2"],
    capture_output=True,
    text=True,
    timeout=300,
  )
  assert proc.returncode == 0, proc.stderr[-2000:]
  ev = json.loads(proc.stdout)
  assert ev["world"] == "atari:Pong" and -21 <= ev["search_return"] <= 0

  out = tmp_path / "report"
  proc = subprocess.run(
    [sys.executable, "-m", "dreamer.cli", "report", str(runs), "--out", str(out), "--reps", "200"],
    capture_output=True,
    text=True,
    timeout=300,
  )
  assert proc.returncode == 0, proc.stderr[-2000:]
  text = (out / "report.md").read_text()
  assert "Pong" in text and "EfficientZero" in text and "IQM" in text
  for png in ("aggregates.png", "curves.png"):
    assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_suite_trains_in_process_without_devices(tmp_path, monkeypatch):
  """Without --devices the suite's runs train one after another in the bench process: a stand-in suite of the
  toy chain (the debug preset) writes each run's result.json from its own metrics."""
  monkeypatch.setitem(suites.SUITES, "chains", ("toy", ("chain", "chain-8")))
  overrides = ["total_env_steps=800", "stop_return=inf", "checkpoint_every_updates=0"]
  paths, stopped = suites.run_suite(
    "chains", games=["chain"], seeds=[3], logdir=tmp_path, preset="debug", overrides=overrides, console=False
  )
  assert paths == [tmp_path / "chain" / "seed3" / "result.json"] and stopped is None
  res = json.loads(paths[0].read_text())
  evals = [r for r in read_metrics(tmp_path / "chain" / "seed3") if "eval/search_return" in r and not r.get("summary")]
  assert (res["world"], res["seed"], res["env_steps"]) == ("toy:chain", 3, 800)
  assert [p["env_steps"] for p in res["eval_curve"]] == [r["env_steps"] for r in evals] == [400, 800]
  assert res["final_score"] == evals[-1]["eval/search_return"]
