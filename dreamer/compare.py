"""`dreamer compare`: run a grid of configurations x seeds on one or more worlds (or take finished runs), and
report sample efficiency, wall-clock efficiency and the dream ratio of each configuration.

Runs go to `LOGDIR/<world>/<label>/seed<N>` (label: the grid's `key=value`s, or the preset's name), each a
`dreamer train` subprocess (`--jobs` at a time), its console output in `seed<N>.log` beside it. A finished run
(its metrics.jsonl has a closing summary) is skipped and an interrupted one resumes, so the same command can be
re-issued until the grid is done.

The report (`report.md`, `curves.png`, `summary.json`, and `scaling.png` where a world's configurations
differ in dream ratio) groups runs by world and configuration, a
configuration being the set of config keys in which runs differ (seed aside). For each it gives: the mean
evaluation return (acting with search) against real env steps and against wall-clock seconds, with 95%
percentile-bootstrap bands over seeds; the final returns (with search and with the policy network alone) with
95% CIs; the env steps and seconds to reach `--threshold`; and the dream ratio (imagined model steps per real
env step, `dreamer/dream_ratio.py`). A run that stopped early at its `stop_return` keeps its last evaluation in
the curves from there on (it was stopped because it had solved the task), and the report says so.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import json
import math
import os
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import jax
import numpy as np

from dreamer import config as config_lib
from dreamer import dream_ratio, plots, stats
from dreamer.logger import read_metrics

CI = 0.95
GRID_POINTS = 60  # points of the wall-clock curves


# ------------------------------------------------------------------------------------------------ the grid


@dataclasses.dataclass(frozen=True)
class Planned:
  """One run of the grid: where it goes and the overrides that make it."""

  world: str
  label: str
  seed: int
  overrides: tuple[str, ...]
  run_dir: Path


def parse_grid(items: Sequence[str]) -> list[tuple[str, list[Any]]]:
  """`key=v1,v2,...` items -> [(key, [values])], values read as TOML (bare words as strings); ConfigError
  for an unknown key, a repeated key, or a value of the wrong type."""
  grid, seen = [], set()
  for item in items:
    key, _ = config_lib.parse_override(item)
    if key in seen:
      raise config_lib.ConfigError(f"--grid key {key!r} is given twice; give all its values once: {key}=a,b,c")
    if key in ("seed", "world"):
      raise config_lib.ConfigError(f"--grid key {key!r}: use --seeds and --worlds for these")
    seen.add(key)
    texts = item.split("=", 1)[1].split(",")
    if any(not t.strip() for t in texts):
      raise config_lib.ConfigError(f"--grid {item!r} has an empty value; write key=v1,v2,...")
    values = [config_lib.parse_override(f"{key}={t.strip()}")[1] for t in texts]
    for v in values:
      config_lib.coerce(key, v, "--grid")
    grid.append((key, values))
  return grid


def _slug(text: str) -> str:
  return re.sub(r"[^A-Za-z0-9_.=,+-]", "_", text)


def plan(
  preset: str,
  *,
  overrides: Sequence[str],
  grid: Sequence[str],
  worlds: Sequence[str] | None,
  seeds: Sequence[int],
  logdir: str | Path,
) -> list[Planned]:
  """Every run of the grid, each config checked (ConfigError) before any run starts."""
  if not seeds:
    raise config_lib.ConfigError("give at least one seed (--seeds 0 1 2)")
  if len(set(seeds)) != len(seeds):
    raise config_lib.ConfigError(f"--seeds has repeats: {list(seeds)}")
  base = config_lib.load(preset, list(overrides))
  axes = parse_grid(grid)
  combos: list[list[tuple[str, Any]]] = [[]]
  for key, values in axes:
    combos = [c + [(key, v)] for c in combos for v in values]
  runs, configs = [], []
  for world in worlds or [base.world]:
    for combo in combos:
      sets = [f"{k}={json.dumps(v) if isinstance(v, str) else _toml(v)}" for k, v in combo]
      config = config_lib.load(preset, list(overrides) + sets + [f"world={json.dumps(world)}"])  # checks it now
      label = ",".join(f"{k}={v}" for k, v in combo) or Path(preset).stem
      for seed in seeds:
        runs.append(
          Planned(
            world,
            label,
            seed,
            tuple(list(overrides) + sets),
            Path(logdir) / _slug(world) / _slug(label) / f"seed{seed}",
          )
        )
        configs.append(dataclasses.replace(config, seed=seed))
  dirs = [r.run_dir for r in runs]
  if len(set(dirs)) != len(dirs):
    twice = next(d for d in dirs if dirs.count(d) > 1)
    raise config_lib.ConfigError(
      f"the grid names run {str(twice)!r} twice: give each --grid value and each --worlds id once"
    )
  for run, want in zip(runs, configs):  # a re-issued command must describe the runs already there
    saved = run.run_dir / "config.json"
    if saved.exists():
      have = json.loads(saved.read_text())
      diff = sorted(k for k, v in want.to_dict().items() if have.get(k) != v)
      if diff:
        raise config_lib.ConfigError(
          f"{str(run.run_dir)!r} holds a run whose config differs from this command's "
          f"in {', '.join(diff)}; use another --logdir for other settings"
        )
  return runs


def _toml(value: Any) -> str:
  if isinstance(value, bool):
    return "true" if value else "false"
  if isinstance(value, (list, tuple)):
    return "[" + ", ".join(_toml(v) for v in value) + "]"
  return repr(value)


def finished(run_dir: Path) -> bool:
  """A run is finished once metrics.jsonl holds a summary that no signal or update cap cut short."""
  try:
    records = read_metrics(run_dir)
  except (OSError, ValueError):  # damaged: not finished (a resume appends to it; load_run names the line)
    return False
  return bool(records) and bool(records[-1].get("summary")) and records[-1].get("stopped") is None


def _train_command(run: Planned, preset: str) -> list[str]:
  """The `dreamer train` command line of one planned run."""
  cmd = [
    sys.executable,
    "-m",
    "dreamer.cli",
    "train",
    "--config",
    preset,
    "--logdir",
    str(run.run_dir),
    "--seed",
    str(run.seed),
    "--quiet",
    "--set",
    f"world={json.dumps(run.world)}",
  ]
  for item in run.overrides:
    cmd += ["--set", item]
  return cmd


@contextlib.contextmanager
def _signals_to(handler) -> Iterator[None]:
  """SIGINT and SIGTERM go to `handler` inside the block (when it runs in the main thread, where Python allows
  handlers), and back to their previous handlers after it."""
  previous = {}
  if threading.current_thread() is threading.main_thread():
    previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
  try:
    yield
  finally:
    for s, h in previous.items():
      signal.signal(s, h)


def execute(
  runs: Sequence[Planned], *, preset: str, jobs: int, devices: int = 0, console: bool = True
) -> dict[str, Any]:
  """Trains every unfinished run, `jobs` at a time, as `dreamer train` subprocesses; with `devices` D > 0, D at a
  time, each on a device of its own: the run gets `devices=1` and `first_device` = a device no other running
  run holds, and JAX does not preallocate (every process sees every device, and uses one). SIGINT/SIGTERM are
  passed to the running trainings (which checkpoint and stop) and no new run starts. Returns
  {"failed": [(run_dir, log, exit code)], "stopped": signal name or None}."""
  todo = [r for r in runs if not finished(r.run_dir)]
  lock = threading.Lock()
  procs: set[subprocess.Popen] = set()
  state: dict[str, Any] = {"failed": [], "stopped": None, "error": None}
  free = list(range(devices))  # device indices no running run holds

  def one(run: Planned) -> None:
    with lock:
      if state["stopped"] or state["error"]:
        return
      log = run.run_dir.parent / f"{run.run_dir.name}.log"
      command, env, slot = _train_command(run, preset), None, None
      if devices:
        slot = free.pop(0)
        command += ["--set", "devices=1", "--set", f"first_device={slot}"]
        env = {**os.environ, "XLA_PYTHON_CLIENT_PREALLOCATE": "false"}
      if console:
        where = f" (device {slot})" if slot is not None else ""
        print(
          f"dreamer: compare: {run.world} {run.label} seed {run.seed} -> {run.run_dir}{where}",
          file=sys.stderr,
          flush=True,
        )
      try:
        run.run_dir.parent.mkdir(parents=True, exist_ok=True)
        with open(log, "a") as out:
          proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, start_new_session=True, env=env)
      except OSError as e:
        state["error"] = f"cannot start run {str(run.run_dir)!r}: {e.strerror or e}"
        return
      procs.add(proc)
    code = proc.wait()
    with lock:
      procs.discard(proc)
      if slot is not None:
        free.append(slot)
      if code != 0 and not state["stopped"]:
        state["failed"].append((str(run.run_dir), str(log), code))

  def forward(signum, frame) -> None:
    state["stopped"] = signal.Signals(signum).name
    with lock:
      for p in procs:
        p.send_signal(signal.SIGTERM)

  with _signals_to(forward), concurrent.futures.ThreadPoolExecutor(max_workers=devices or jobs) as pool:
    list(pool.map(one, todo))
  error = state.pop("error")
  if error:
    from dreamer.checkpoint import StorageError

    raise StorageError(f"{error}; the runs started before it ran to their end")
  return state


# ------------------------------------------------------------------------------------------------ the runs


@dataclasses.dataclass
class RunData:
  """What the report reads from one run directory."""

  path: Path
  config: dict[str, Any]
  steps: np.ndarray  # i64[E] env steps of each evaluation
  wall: np.ndarray  # f64[E] seconds into the run at each evaluation
  search: np.ndarray  # f64[E] mean evaluation return acting with search
  policy: np.ndarray  # f64[E] ... with the policy network alone
  env_steps: int
  wall_s: float
  dream: dict[str, float]  # dream/ratio and per kind, as logged (or planned, for runs from before the count)
  stopped_early: bool  # reached stop_return before total_env_steps


def load_run(run_dir: str | Path) -> RunData:
  """A finished run; ConfigError (one line) if `run_dir` is not one."""
  run_dir = Path(run_dir)
  try:
    config = json.loads((run_dir / "config.json").read_text())
    records = read_metrics(run_dir)
  except (OSError, ValueError) as e:
    raise config_lib.ConfigError(
      f"{str(run_dir)!r} is not a readable run directory (config.json and metrics.jsonl): {e}"
    ) from None
  # A key added after the run was made reads as its default (what the run did), so that it does not tell runs
  # of one configuration apart in labels.
  config = {**json.loads(json.dumps(config_lib.Config().to_dict())), **config}
  evals = evaluations(records)
  summary = next((r for r in reversed(records) if r.get("summary")), None)
  if summary is None or not evals or summary.get("stopped") is not None:
    raise config_lib.ConfigError(
      f"run {str(run_dir)!r} has not finished (no closing summary, no evaluation, or "
      f"stopped early by a signal or update cap, in its metrics.jsonl); finish it "
      f"with: dreamer train --logdir {run_dir}"
    )
  if "dream/ratio" in summary:
    dream = {k: summary[k] for k in ("dream/ratio", *(f"dream/{k}_ratio" for k in dream_ratio.KINDS))}
  else:  # a run from before the count: the same count, rebuilt from its counters
    dreams = dream_ratio.Dreams.rebuilt(
      config_lib.from_dict(config, str(run_dir / "config.json")), summary["env_steps"], summary["updates"]
    )
    dream = {k: v for k, v in dreams.record(summary["env_steps"]).items() if k != "dream/model_steps"}
  return RunData(
    run_dir,
    config,
    np.array([r["env_steps"] for r in evals], np.int64),
    np.array([r["wall_s"] for r in evals], np.float64),
    np.array([r["eval/search_return"] for r in evals], np.float64),
    np.array([r["eval/policy_return"] for r in evals], np.float64),
    int(summary["env_steps"]),
    float(summary["wall_s"]),
    dream,
    bool(summary.get("solved")) and summary["env_steps"] < config["total_env_steps"],
  )


def evaluations(records: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
  """The evaluation records among a run's metrics (`read_metrics`), in order; the closing summary left out."""
  return [r for r in records if "eval/search_return" in r and not r.get("summary")]


def first_reach(returns: Sequence[float] | np.ndarray, threshold: float) -> int | None:
  """Index of the first evaluation whose return (acting with search) is at or above `threshold`; None when
  none is (NaN never reaches)."""
  hit = np.flatnonzero(np.asarray(returns, np.float64) >= threshold)
  return int(hit[0]) if hit.size else None


def labels(runs: Sequence[RunData]) -> list[str]:
  """Each run's configuration label: its values of the keys in which the runs of its world differ (seed and
  world aside), or the world alone when they differ in nothing."""
  out = []
  for run in runs:
    same_world = [r for r in runs if r.config["world"] == run.config["world"]]
    keys = sorted(
      k for k in run.config if k not in ("seed", "world") and any(r.config.get(k) != run.config[k] for r in same_world)
    )
    out.append(",".join(f"{k}={_label_value(run.config[k])}" for k in keys) or "all")
  return out


def _label_value(value: Any) -> str:
  return _toml(value) if not isinstance(value, str) else value


# ------------------------------------------------------------------------------------------------ the report


def _step_values(xs: np.ndarray, ys: np.ndarray, grid: np.ndarray) -> np.ndarray:
  """The last value at or before each grid point (NaN before the first): evaluations as a step function."""
  idx = np.searchsorted(xs, grid, side="right") - 1
  return np.where(idx >= 0, ys[np.maximum(idx, 0)], np.nan)


def _band(per_run: np.ndarray, rng: np.random.Generator, reps: int) -> dict[str, list[float | None]]:
  """per_run f64[runs, points] -> mean and CI band per point, where every run has a value (else None)."""
  mean, low, high = [], [], []
  for column in per_run.T:
    if np.isnan(column).any():
      mean.append(None), low.append(None), high.append(None)
      continue
    m, lo, hi = stats.mean_ci(column, rng=rng, reps=reps, ci=CI)
    mean.append(m), low.append(lo), high.append(hi)
  return {"mean": mean, "low": low, "high": high}


def _steps_and_seconds_to(run: RunData, threshold: float) -> tuple[int | None, float | None]:
  """(env steps, seconds) at the run's first evaluation at or above `threshold`; (None, None) when none is."""
  i = first_reach(run.search, threshold)
  return (None, None) if i is None else (int(run.steps[i]), float(run.wall[i]))


def summarize(runs: Sequence[RunData], *, threshold: float | None, reps: int = 2000, seed: int = 0) -> dict:
  """Everything the report shows, as plain data (summary.json). Bootstrap draws come from `seed` only."""
  rng = np.random.default_rng(seed)
  names = labels(runs)
  groups: dict[str, dict[str, list[RunData]]] = {}
  for run, name in zip(runs, names):
    groups.setdefault(run.config["world"], {}).setdefault(name, []).append(run)
  out: dict[str, Any] = {
    "format": "dreamer-compare/1",
    "ci": CI,
    "reps": reps,
    "bootstrap_seed": seed,
    "threshold": threshold,
    "worlds": {},
  }
  for world, configs in groups.items():
    entries = {}
    for name, members in configs.items():
      members = sorted(members, key=lambda r: r.config["seed"])
      steps_grid = np.unique(np.concatenate([r.steps for r in members]))
      wall_grid = np.linspace(0.0, max(r.wall_s for r in members), GRID_POINTS)
      by_steps = np.stack([_step_values(r.steps, r.search, steps_grid) for r in members])
      by_wall = np.stack([_step_values(r.wall, r.search, wall_grid) for r in members])
      final_search = np.array([r.search[-1] for r in members])
      final_policy = np.array([r.policy[-1] for r in members])
      entry = {
        "seeds": [r.config["seed"] for r in members],
        "runs": [str(r.path) for r in members],
        "final_search": stats.mean_ci(final_search, rng=rng, reps=reps, ci=CI),
        "final_policy": stats.mean_ci(final_policy, rng=rng, reps=reps, ci=CI),
        "final_search_per_seed": final_search.tolist(),
        "final_policy_per_seed": final_policy.tolist(),
        "env_steps": [r.env_steps for r in members],
        "wall_s": [r.wall_s for r in members],
        "dream_ratio": float(np.mean([r.dream["dream/ratio"] for r in members])),
        "dream_by_kind": {k: float(np.mean([r.dream[f"dream/{k}_ratio"] for r in members])) for k in dream_ratio.KINDS},
        "stopped_early": [r.stopped_early for r in members],
        "curve_steps": {"x": steps_grid.tolist(), **_band(by_steps, rng, reps)},
        "curve_wall": {"x": wall_grid.tolist(), **_band(by_wall, rng, reps)},
      }
      if threshold is not None:
        reach = [_steps_and_seconds_to(r, threshold) for r in members]
        entry["steps_to_threshold"] = [s for s, _ in reach]
        entry["seconds_to_threshold"] = [w for _, w in reach]
      entries[name] = entry
    out["worlds"][world] = dict(sorted(entries.items(), key=lambda kv: kv[1]["dream_ratio"]))
  return out


def _fmt(value: float | None, digits: int = 1) -> str:
  return "—" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"


def _median_reached(values: Sequence[float | None]) -> str:
  """Median over seeds, counting a seed that never reached the threshold as infinitely slow."""
  ordered = sorted(math.inf if v is None else v for v in values)
  m = float(np.median(ordered)) if not math.isnan(np.median(ordered)) else math.inf
  return "not reached" if math.isinf(m) else f"{m:.0f}"


def markdown(summary: dict[str, Any]) -> str:
  lines = [
    "# Comparison",
    "",
    f"Evaluation return acting with search (greedy) and with the policy network alone; means over seeds "
    f"with {int(CI * 100)}% percentile-bootstrap intervals ({summary['reps']} resamples of the seeds, "
    f"bootstrap seed {summary['bootstrap_seed']}). The dream ratio is imagined model steps per real env "
    f"step (acting search + reanalysis search + training unroll), as counted by the runs.",
    "",
  ]
  threshold = summary["threshold"]
  scaling = scaling_worlds(summary)
  for world, entries in summary["worlds"].items():
    lines += [f"## {world}", "", "![curves](curves.png)", ""]
    if world in scaling:
      lines += [
        "Final return against the dream ratio (log scale), mean and CI over seeds:",
        "",
        "![scaling](scaling.png)",
        "",
      ]
    head = (
      "| configuration | seeds | dream ratio (act + reanalyse + unroll) | final return, search "
      "| final return, policy only |"
    )
    rule = "| --- | --- | --- | --- | --- |"
    if threshold is not None:
      head += f" env steps to {threshold:g} (per seed) | median | seconds to {threshold:g} (median) |"
      rule += " --- | --- | --- |"
    lines += [head, rule]
    for name, e in entries.items():
      kinds = " + ".join(_fmt(e["dream_by_kind"][k]) for k in dream_ratio.KINDS)
      row = (
        f"| {name} | {len(e['seeds'])} | {e['dream_ratio']:.1f} ({kinds}) | {stats.format_ci(e['final_search'])} | "
        f"{stats.format_ci(e['final_policy'])} |"
      )
      if threshold is not None:
        per_seed = ", ".join("—" if s is None else str(s) for s in e["steps_to_threshold"])
        row += (
          f" {per_seed} | {_median_reached(e['steps_to_threshold'])} | {_median_reached(e['seconds_to_threshold'])} |"
        )
      lines.append(row)
    lines += _reference_rows(world, extra_columns=3 if threshold is not None else 0)
    early = [n for n, e in entries.items() if any(e["stopped_early"])]
    lines.append("")
    if early:
      lines.append(
        f"Runs of {', '.join(early)} stopped early at their stop_return; their curves carry the last "
        f"evaluation forward."
      )
    if threshold is not None:
      lines.append(
        f"Steps to {threshold:g}: the first evaluation at or above it (— : never); a median over "
        f"seeds counts a seed that never reached it as slower than any that did."
      )
    lines.append("")
  return "\n".join(lines)


def _steps_label(steps: int) -> str:
  return f"{steps / 1e6:g}M" if steps >= 100_000 else f"{steps:,}"


def _reference_rows(world: str, *, extra_columns: int) -> list[str]:
  """Table rows of the world's published references (stats.reference_returns): the return in the search
  column, the rest empty; a note on where they come from."""
  refs = stats.reference_returns(world)
  rows = [
    f"| {method} @ {_steps_label(steps)} env steps (published) | — | — | {ret:g} | — |" + " — |" * extra_columns
    for method, steps, ret in refs
  ]
  if refs:
    rows.append(
      "| (published: the MinAtar paper's learning curves, Young & Tian 2019, read off its plots, about ±10%) "
      "| | | | |" + " |" * extra_columns
    )
  return rows


def plot(summary: dict[str, Any], path: Path) -> None:
  """curves.png: per world, the mean eval return (search) with its band against env steps and wall-clock s."""
  worlds = list(summary["worlds"])
  with plots.png(path, dpi=110, figsize=(12, 4 * len(worlds))) as fig:
    axes = fig.subplots(len(worlds), 2, squeeze=False)
    for row, world in zip(axes, worlds):
      _plot_world(row, summary["worlds"][world], title=world, threshold=summary["threshold"])
    fig.tight_layout()


def _plot_world(row, entries: dict[str, Any], *, title: str, threshold: float | None) -> None:
  """One world's two panels (`row`: its two axes): every configuration's curve against steps, then seconds."""
  for ax, key, xlabel in [(row[0], "curve_steps", "real env steps"), (row[1], "curve_wall", "wall-clock s")]:
    for name, e in entries.items():
      c = e[key]
      ok = [i for i, m in enumerate(c["mean"]) if m is not None]
      x = np.array(c["x"], float)[ok]
      (line,) = ax.plot(x, [c["mean"][i] for i in ok], label=f"{name} (dream {e['dream_ratio']:.0f})")
      ax.fill_between(x, [c["low"][i] for i in ok], [c["high"][i] for i in ok], color=line.get_color(), alpha=0.2)
    if threshold is not None:
      ax.axhline(threshold, color="grey", lw=0.8, ls="--")
    highs = [h for e in entries.values() for h in e[key]["high"] if h is not None]
    draw_references(ax, title, top=max(highs, default=0.0))
    ax.set_xlabel(xlabel)
    ax.set_ylabel("eval return (search)")
    ax.set_title(title)
    ax.legend(fontsize=8)


def draw_references(ax, world: str, *, top: float) -> None:
  """The world's published returns as horizontal lines on `ax`; one more than twice the data's `top` only
  named in the legend (with its value), so that the data keep the plot's height."""
  for (method, steps, ret), style in zip(stats.reference_returns(world), ("--", "-.", ":", (0, (1, 4))) * 2):
    label = f"{method} @ {_steps_label(steps)} (published)"
    if top > 0 and ret > 2 * top:
      ax.plot([], [], " ", label=f"{label}: {ret:g}, above")
    else:
      ax.axhline(ret, color="black", lw=0.8, ls=style, label=label)


def scaling_worlds(summary: dict[str, Any]) -> list[str]:
  """Worlds whose configurations span at least two dream ratios: the ones the scaling figure can show."""
  return [w for w, entries in summary["worlds"].items() if len({e["dream_ratio"] for e in entries.values()}) >= 2]


def plot_scaling(summary: dict[str, Any], path: Path) -> None:
  """scaling.png, the dreaming scaling curve: per world of `scaling_worlds`, the final return (acting with search
  and with the policy alone; mean over seeds with its CI) against the dream ratio on a log axis, one point per
  configuration, with the world's published references as lines."""
  worlds = scaling_worlds(summary)
  with plots.png(path, dpi=110, figsize=(6.5, 4 * len(worlds))) as fig:
    for ax, world in zip(fig.subplots(len(worlds), 1, squeeze=False)[:, 0], worlds):
      entries = sorted(summary["worlds"][world].values(), key=lambda e: e["dream_ratio"])
      x = np.array([e["dream_ratio"] for e in entries])
      for key, label, marker in [("final_search", "with search", "o"), ("final_policy", "policy alone", "s")]:
        mean, low, high = (np.array([e[key][i] for e in entries], float) for i in range(3))
        ax.errorbar(x, mean, yerr=[mean - low, high - mean], marker=marker, capsize=3, label=label)
      highs = [e[key][2] for e in entries for key in ("final_search", "final_policy") if e[key][2] is not None]
      draw_references(ax, world, top=max(highs, default=0.0))
      ax.set_xscale("log")
      ax.set_xlabel("dream ratio (imagined model steps per real env step)")
      ax.set_ylabel("final eval return")
      ax.set_title(f"{world}: final return against the dream ratio")
      ax.legend(fontsize=8)
    fig.tight_layout()


def write_report(
  run_dirs: Sequence[str | Path], out: str | Path, *, threshold: float | None, reps: int = 2000, seed: int = 0
) -> dict[str, Any]:
  """Reads the finished runs (run directories, or directories holding them), writes report.md, curves.png and
  summary.json to `out`, and returns the summary. ConfigError when no finished run is found."""
  summary = summarize(_finished_runs(run_dirs), threshold=threshold, reps=reps, seed=seed)
  out = Path(out)
  out.mkdir(parents=True, exist_ok=True)
  (out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
  (out / "report.md").write_text(markdown(summary))
  plot(summary, out / "curves.png")
  if scaling_worlds(summary):
    plot_scaling(summary, out / "scaling.png")
  return summary


def _finished_runs(run_dirs: Sequence[str | Path]) -> list[RunData]:
  """The runs named in `run_dirs` (any named directly, where an unfinished one is an error) and the finished
  ones found under them (an unfinished one is skipped with a note); ConfigError when there are none."""
  found: dict[Path, bool] = {}  # resolved run directory -> named directly (not found by searching)
  for d in run_dirs:
    d = Path(d)
    if not d.is_dir():
      raise config_lib.ConfigError(f"{str(d)!r} is not a directory")
    if (d / "config.json").exists():
      found[d.resolve()] = True
    for p in sorted(p.parent for p in d.rglob("config.json") if ".replaced-" not in str(p)):
      found.setdefault(p.resolve(), False)
  if not found:
    raise config_lib.ConfigError(f"no run directories (with config.json) under {[str(d) for d in run_dirs]}")
  runs = []
  for path, named in found.items():
    if named or finished(path):
      runs.append(load_run(path))
    else:
      print(f"dreamer: compare: skipping unfinished run {str(path)!r}", file=sys.stderr)
  if not runs:
    raise config_lib.ConfigError(f"no finished run under {[str(d) for d in run_dirs]}")
  return runs


def compare(
  preset: str | None,
  *,
  run_dirs: Sequence[str],
  overrides: Sequence[str],
  grid: Sequence[str],
  worlds: Sequence[str] | None,
  seeds: Sequence[int],
  logdir: str | None,
  out: str | None,
  jobs: int,
  devices: int = 0,
  threshold: float | None,
  reps: int,
  console: bool = True,
) -> dict[str, Any]:
  """The `dreamer compare` command: run the grid (if `preset`), then report on it and on `run_dirs`."""
  if jobs < 1:
    raise config_lib.ConfigError(f"--jobs must be >= 1, got {jobs}")
  if devices and jobs > 1:
    raise config_lib.ConfigError("give --jobs or --devices, not both: --devices N runs N at a time, one a device")
  if reps < 1:
    raise config_lib.ConfigError(f"--reps must be >= 1, got {reps}")
  if preset is None and not run_dirs:
    raise config_lib.ConfigError(
      "give --config PRESET_OR_PATH (with --grid, --seeds, --logdir) to run a grid, "
      "or --runs DIR ... to compare finished runs"
    )
  if preset is None and (grid or worlds or overrides):
    raise config_lib.ConfigError("--grid, --worlds and --set need --config: they describe runs to train")
  result: dict[str, Any] = {"failed": [], "stopped": None}
  dirs = list(run_dirs)
  if preset is not None:
    if logdir is None:
      raise config_lib.ConfigError("give --logdir DIR for the grid's runs")
    planned = plan(preset, overrides=overrides, grid=grid, worlds=worlds, seeds=seeds, logdir=logdir)
    if devices:
      check_devices(devices)
    _check_worlds(planned, preset, overrides)
    result = execute(planned, preset=preset, jobs=jobs, devices=devices, console=console)
    if result["stopped"]:
      return {**result, "summary": None}
    dirs += [str(p.run_dir) for p in planned if finished(p.run_dir)]
  out = out or os.path.join(logdir or ".", "report")
  summary = write_report(dirs, out, threshold=threshold, reps=reps) if dirs else None
  return {**result, "summary": summary, "out": out}


def check_devices(count: int) -> None:
  """ConfigError unless JAX sees at least `count` devices (this process only looks: it allocates nothing)."""
  os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")  # before JAX's backend starts, if it has not
  seen = jax.devices()
  if count > len(seen):
    kinds = "/".join(sorted({d.platform for d in seen}))
    raise config_lib.ConfigError(f"--devices {count} is more than the {len(seen)} {kinds} device(s) JAX sees")


def _check_worlds(planned: Sequence[Planned], preset: str, overrides: Sequence[str]) -> None:
  """Every world builds and fits the network, before any run starts (ConfigError)."""
  from dreamer.agent import check_network, check_world

  for world in dict.fromkeys(p.world for p in planned):
    config = config_lib.load(preset, list(overrides) + [f"world={json.dumps(world)}"])
    check_network(config, check_world(world, "--worlds", **config_lib.world_kwargs(config, train=True)))
