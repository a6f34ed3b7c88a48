"""Benchmark suites: train one run per (game, seed) and write each run's `result.json` for `dreamer report`.

    dreamer bench atari100k --games Pong Breakout --seeds 0 1 2 --config atari100k-fast --logdir runs/bench

Runs live in `LOGDIR/<Game>/seed<N>/`. A run that already has its result.json is skipped; one that was stopped
resumes from its checkpoint, so a suite can be re-issued until it is complete.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
from pathlib import Path
from typing import Any

import worlds
from dreamer import config as config_lib
from dreamer.logger import read_metrics

RESULT_FORMAT = "dreamer-bench-result/1"
# suite -> (world family, games)
SUITES: dict[str, tuple[str, tuple[str, ...]]] = {"atari100k": ("atari", worlds.ATARI100K_GAMES)}


def commit() -> str:
  """The git commit of this source tree (with '+dirty' when it has uncommitted changes), or 'unknown'."""
  root = Path(__file__).resolve().parent.parent
  try:
    sha = subprocess.run(
      ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10, check=True
    ).stdout.strip()
    dirty = subprocess.run(
      ["git", "status", "--porcelain", "--untracked-files=no"], cwd=root, capture_output=True, text=True, timeout=10
    ).stdout.strip()
    return sha + ("+dirty" if dirty else "")
  except (OSError, subprocess.SubprocessError):
    return "unknown"


def check_games(suite: str, games: list[str] | None) -> list[str]:
  """The games to run (all of the suite's when None); ConfigError naming the allowed ones otherwise."""
  if suite not in SUITES:
    raise config_lib.ConfigError(f"unknown benchmark suite {suite!r}: available suites are {sorted(SUITES)}")
  allowed = SUITES[suite][1]
  if not games:
    return list(allowed)
  bad = [g for g in games if g not in allowed]
  if bad:
    raise config_lib.ConfigError(
      f"{', '.join(map(repr, bad))} {'is' if len(bad) == 1 else 'are'} not in "
      f"suite {suite!r}; its games are {' '.join(allowed)}"
    )
  return list(dict.fromkeys(games))


def result(
  run_dir: Path, config: config_lib.Config, *, suite: str, game: str, method: str, summary: dict[str, Any]
) -> dict[str, Any]:
  """The result record of a finished run, from its metrics.jsonl (the source of truth) and summary."""
  # Evaluation records only (the closing summary repeats the last evaluation's figures).
  evals = [r for r in read_metrics(run_dir) if "eval/search_return" in r and not r.get("summary")]
  if not evals:
    raise RuntimeError(f"run {str(run_dir)!r} finished without an evaluation")
  last = evals[-1]
  return {
    "format": RESULT_FORMAT,
    "suite": suite,
    "method": method,
    "game": game,
    "world": config.world,
    "seed": config.seed,
    "final_score": last["eval/search_return"],
    "final_score_policy": last["eval/policy_return"],
    "eval_curve": [
      {"env_steps": r["env_steps"], "score": r["eval/search_return"], "score_policy": r["eval/policy_return"]}
      for r in evals
    ],
    "env_steps": summary["env_steps"],
    "updates": summary["updates"],
    "wall_s": summary["wall_s"],
    "eval_episodes": config.eval_episodes,
    "config": config.to_dict(),
    "commit": commit(),
  }


def run_suite(
  suite: str,
  *,
  games: list[str] | None,
  seeds: list[int],
  logdir: str | Path,
  preset: str,
  overrides: list[str] | None = None,
  method: str | None = None,
  devices: int = 0,
  console: bool = True,
) -> tuple[list[Path], str | None]:
  """Trains every (game, seed) of `suite` that has no result yet: one after another in this process, or with
  `devices` D > 0 as `dreamer train` processes D at a time, each on a device of its own (as `dreamer compare
  --devices`). Returns the paths of the suite's result files and None, or, if SIGINT/SIGTERM stopped a run
  (checkpointed), the paths so far and the signal's name.

  The config is `preset` with `overrides`, then world = '<family>:<game>' and seed = N per run. ConfigError
  for an unknown suite, game, config key or world, before any run starts."""
  from dreamer import train as train_lib  # heavy imports only when a suite really runs
  from dreamer.agent import check_network, check_world

  games = check_games(suite, games)
  if not seeds:
    raise config_lib.ConfigError("give at least one seed (--seeds 0 1 2)")
  base = config_lib.load(preset, overrides)  # checks every key now, not after hours of the first run
  method = method or Path(preset).stem
  family = SUITES[suite][0]
  if not base.world.startswith(f"{family}:"):
    raise config_lib.ConfigError(
      f"suite {suite!r} runs '{family}:' worlds, but config {preset!r} trains on "
      f"{base.world!r}; give a preset for {family} worlds (e.g. --config atari100k)"
    )
  kwargs = config_lib.world_kwargs(dataclasses.replace(base, world=f"{family}:{games[0]}"), train=True)
  for game in games:
    check_network(base, check_world(f"{family}:{game}", f"suite {suite!r}", **kwargs))
  if devices < 0:
    raise config_lib.ConfigError(f"--devices must be >= 0 (0: one run at a time, in this process), got {devices}")
  if devices:
    return _run_on_devices(suite, games, seeds, logdir, preset, overrides or [], method, devices, console)
  paths = []
  for game in games:
    for seed in seeds:
      run_dir = Path(logdir) / game / f"seed{seed}"
      path = run_dir / "result.json"
      paths.append(path)
      if path.exists():
        continue
      config = dataclasses.replace(base, world=f"{family}:{game}", seed=seed)
      if console:
        print(f"dreamer: bench {suite}: {game} seed {seed} -> {run_dir}", flush=True)
      summary = train_lib.train(config, run_dir, console=console)
      if summary["stopped"]:  # SIGINT/SIGTERM: the run is checkpointed; re-issuing the command resumes it
        return paths, summary["stopped"]
      _write_result(path, result(run_dir, config, suite=suite, game=game, method=method, summary=summary))
  return paths, None


def _write_result(path: Path, record: dict[str, Any]) -> None:
  tmp = path.with_suffix(".json.tmp")
  tmp.write_text(json.dumps(record, indent=1) + "\n")
  os.replace(tmp, path)


def _run_on_devices(
  suite: str,
  games: list[str],
  seeds: list[int],
  logdir: str | Path,
  preset: str,
  overrides: list[str],
  method: str,
  devices: int,
  console: bool,
) -> tuple[list[Path], str | None]:
  """run_suite's runs as `dreamer train` processes, `devices` at a time, one a device; each finished run's
  result.json is written from its metrics.jsonl. StorageError naming the runs that failed."""
  from dreamer import compare

  family = SUITES[suite][0]
  planned, paths = [], []
  for game in games:
    for seed in seeds:
      run_dir = Path(logdir) / game / f"seed{seed}"
      paths.append(run_dir / "result.json")
      if not paths[-1].exists():
        planned.append(compare.Planned(f"{family}:{game}", method, seed, tuple(overrides), run_dir))
  compare.check_devices(devices)
  state = compare.execute(planned, preset=preset, jobs=1, devices=devices, console=console)
  for run in planned:
    if compare.finished(run.run_dir):
      config = config_lib.load_saved(run.run_dir / "config.json")
      summary = read_metrics(run.run_dir)[-1]
      game = run.world.partition(":")[2]
      _write_result(
        run.run_dir / "result.json", result(run.run_dir, config, suite=suite, game=game, method=method, summary=summary)
      )
  if state["failed"]:
    from dreamer.checkpoint import StorageError

    failed = ", ".join(f"{run} (exit {code}, see {log})" for run, log, code in state["failed"])
    raise StorageError(f"runs failed: {failed}; the others have their result.json")
  return paths, state["stopped"]
