"""Atari 100k report: our benchmark results beside published baselines, with honest uncertainty.

`write_report(paths, out_dir)` reads every `result.json` (format `dreamer-bench-result/1`, one per run = one
game x one seed) found under `paths`, groups runs by method and game, and writes into `out_dir`:
`report.md`, `aggregates.png`, `curves.png` and `summary.json`. Aggregates (mean, median, IQM, optimality gap
of human-normalised scores) carry 95% stratified-bootstrap intervals (Agarwal et al. 2021) and are computed
for our methods and the shipped published baselines on the same games. Nothing is written into run directories.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from dreamer import plots, stats
from dreamer.config import ConfigError

RESULT_FORMAT = "dreamer-bench-result/1"
REPORT_FORMAT = "dreamer-report/1"
REQUIRED_KEYS = ("format", "suite", "method", "game", "seed", "final_score", "eval_curve", "env_steps")
CI = 0.95
LABELS = {"mean": "Mean", "median": "Median", "iqm": "IQM", "optimality_gap": "Optimality gap"}
# Published rows whose intervals need a warning next to them.
BASELINE_NOTES = {
  "EfficientZero": "one value per game (the paper's mean over 3 runs x 32 episodes), so its interval is a point",
  "MuZero": "one value per game, origin not verified",
}


@dataclasses.dataclass(frozen=True)
class Run:
  """One `result.json`: one method on one game with one seed. Curve arrays are `[points]`, steps increasing."""

  path: Path
  method: str
  game: str
  seed: int
  suite: str
  final_score: float
  final_score_policy: float | None
  env_steps: int
  commit: str | None
  curve_steps: tuple[int, ...]
  curve_scores: tuple[float, ...]


# --------------------------------------------------------------------------------------------------------
# Reading results


def find_results(paths: Sequence[str | Path]) -> list[Path]:
  """Every `result.json` under `paths` (run directories, directories above them at any depth, or the files
  themselves), sorted and without repeats. Each path must exist and yield at least one."""
  if isinstance(paths, (str, Path)) or not paths:
    raise ConfigError(f"give a non-empty list of run directories, got {paths!r}")
  found: dict[Path, None] = {}
  for raw in paths:
    path = Path(raw)
    if path.is_file():
      if path.name != "result.json":
        raise ConfigError(f"{path} is a file but not a result.json; give run directories or result.json files")
      files = [path]
    elif path.is_dir():
      files = sorted(p for p in path.rglob("result.json") if p.is_file())
      if not files:
        raise ConfigError(
          f"no result.json found under {path}; give run directories (holding result.json) or directories above them"
        )
    else:
      raise ConfigError(f"run path {path} does not exist")
    for f in files:
      found.setdefault(f.resolve(), None)
  return sorted(found)


def _one_line(error: Exception) -> str:
  return " ".join(str(error).split())


def _is_number(value: Any) -> bool:
  return type(value) in (int, float) and math.isfinite(value)


def _check_scalars(data: dict[str, Any], bad) -> None:
  """Raises bad(key, allowed) for the first scalar field of a result with the wrong type or range."""
  for key in ("method", "game", "suite"):
    if not isinstance(data[key], str) or not data[key]:
      raise bad(key, "a non-empty string")
  if type(data["seed"]) is not int:
    raise bad("seed", "an integer")
  if type(data["env_steps"]) is not int or data["env_steps"] < 0:
    raise bad("env_steps", "a non-negative integer")
  if not _is_number(data["final_score"]):
    raise bad("final_score", "a finite number")
  policy = data.get("final_score_policy")
  if policy is not None and not _is_number(policy):
    raise bad("final_score_policy", "a finite number or null")
  commit = data.get("commit")
  if commit is not None and not isinstance(commit, str):
    raise bad("commit", "a string or null")


def load_result(path: str | Path) -> Run:
  """Reads and checks one result.json; any problem is a one-line ConfigError naming the file."""
  path = Path(path)
  try:
    data = json.loads(path.read_text(encoding="utf-8"))
  except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
    raise ConfigError(f"cannot read {path}: {_one_line(e)}") from None
  if not isinstance(data, dict):
    raise ConfigError(f"{path} must hold a JSON object, got {type(data).__name__}")
  if data.get("format") != RESULT_FORMAT:
    raise ConfigError(f"{path} has format {data.get('format')!r}; only {RESULT_FORMAT!r} is allowed")
  missing = [k for k in REQUIRED_KEYS if k not in data]
  if missing:
    raise ConfigError(f"{path} lacks key(s) {', '.join(missing)}; a result needs {', '.join(REQUIRED_KEYS)}")

  def bad(key: str, allowed: str) -> ConfigError:
    got = repr(data.get(key))
    got = got if len(got) <= 80 else got[:77] + "..."
    return ConfigError(f"{path}: {key!r} must be {allowed}, got {got}")

  _check_scalars(data, bad)
  policy, commit = data.get("final_score_policy"), data.get("commit")
  curve = data["eval_curve"]
  if not isinstance(curve, list) or not all(
    isinstance(p, dict) and type(p.get("env_steps")) is int and _is_number(p.get("score")) for p in curve
  ):
    raise bad("eval_curve", 'a list of {"env_steps": int, "score": number, ...}')
  # An exact repeat of the previous point is dropped: a run's closing summary record can repeat its last eval.
  curve = [p for i, p in enumerate(curve) if i == 0 or p != curve[i - 1]]
  steps = [p["env_steps"] for p in curve]
  if any(b <= a for a, b in zip(steps, steps[1:])):
    raise bad("eval_curve", "ordered by strictly increasing env_steps (exact repeats aside)")
  try:
    stats.random_human(data["game"])
  except ConfigError as e:
    raise ConfigError(f"{path}: {e}") from None
  return Run(
    path=path,
    method=data["method"],
    game=data["game"],
    seed=data["seed"],
    suite=data["suite"],
    final_score=float(data["final_score"]),
    final_score_policy=None if policy is None else float(policy),
    env_steps=data["env_steps"],
    commit=commit,
    curve_steps=tuple(steps),
    curve_scores=tuple(float(p["score"]) for p in curve),
  )


def group_runs(runs: Sequence[Run]) -> dict[str, dict[str, list[Run]]]:
  """`{method: {game: [runs sorted by seed]}}`, methods sorted by name, games in the shipped table's order.
  Two results for the same method, game and seed are an error (they would be counted twice)."""
  seen: dict[tuple[str, str, int], Path] = {}
  for r in runs:
    key = (r.method, r.game, r.seed)
    if key in seen:
      raise ConfigError(
        f"duplicate run (method {r.method!r}, game {r.game}, seed {r.seed}) in {seen[key]} and "
        f"{r.path}; each method x game x seed must appear once"
      )
    seen[key] = r.path
  order = {g: i for i, g in enumerate(stats.atari100k_games())}
  grouped: dict[str, dict[str, list[Run]]] = {}
  for r in sorted(runs, key=lambda r: (r.method, order[r.game], r.seed)):
    grouped.setdefault(r.method, {}).setdefault(r.game, []).append(r)
  return grouped


# --------------------------------------------------------------------------------------------------------
# Numbers


def _interval(values: dict[str, float], cis: dict[str, tuple[float, float]]) -> dict[str, Any]:
  return {name: {"value": values[name], "ci": list(cis[name])} for name in stats.AGGREGATES}


def _aggregate_with_ci(scores: list[np.ndarray], *, reps: int, seed: int) -> dict[str, Any]:
  """Aggregates of per-game HNS vectors `[f64[runs_g]]`; each call draws from a fresh `default_rng(seed)`,
  so a row's interval does not depend on which other rows the report holds."""
  cis = stats.bootstrap_ci(scores, rng=np.random.default_rng(seed), reps=reps, ci=CI)
  return _interval(stats.aggregates(scores), cis)


def _curve(by_game: dict[str, list[Run]], games: Sequence[str], *, reps: int, seed: int) -> dict[str, Any]:
  """HNS IQM over runs x games against env steps, with a stratified-bootstrap band.

  Grid: the runs' eval env_steps when every run has the same ones ('shared'); otherwise every eval step that
  lies inside all runs' ranges, each run's HNS curve interpolated linearly onto it ('interpolated'; never
  extrapolated). The same resampled runs serve every grid point (one `default_rng(seed)` per point)."""
  runs = {g: [r for r in by_game[g] if r.curve_steps] for g in games}
  runs = {g: rs for g, rs in runs.items() if rs}  # runs without an eval curve cannot contribute
  flat = [r for rs in runs.values() for r in rs]
  if not flat:
    return {"grid": "none", "games": [], "env_steps": [], "iqm": [], "ci": []}
  if all(r.curve_steps == flat[0].curve_steps for r in flat):
    mode, grid = "shared", np.array(flat[0].curve_steps, dtype=np.float64)
  else:
    lo = max(r.curve_steps[0] for r in flat)
    hi = min(r.curve_steps[-1] for r in flat)
    mode, grid = (
      "interpolated",
      np.array(sorted({s for r in flat for s in r.curve_steps if lo <= s <= hi}), dtype=np.float64),
    )
  # f64[runs_g, points] per game
  hns = {
    g: np.stack([np.interp(grid, r.curve_steps, [stats.human_normalized(s, g) for s in r.curve_scores]) for r in rs])
    for g, rs in runs.items()
  }
  iqms, cis = [], []
  for t in range(grid.size):
    scores = [h[:, t] for h in hns.values()]
    iqms.append(stats.iqm(scores))
    cis.append(
      list(stats.bootstrap_ci(scores, rng=np.random.default_rng(seed), reps=reps, ci=CI, names=("iqm",))["iqm"])
    )
  return {"grid": mode, "games": list(runs), "env_steps": [int(s) for s in grid], "iqm": iqms, "ci": cis}


def _method_summary(by_game: dict[str, list[Run]], games: Sequence[str], *, reps: int, seed: int) -> dict[str, Any]:
  per_game = {}
  for game, runs in by_game.items():
    scores = np.array([r.final_score for r in runs])
    policy = [r.final_score_policy for r in runs if r.final_score_policy is not None]
    per_game[game] = {
      "seeds": [r.seed for r in runs],
      "mean_score": float(scores.mean()),
      "sd_score": float(scores.std(ddof=1)) if scores.size > 1 else None,  # sample sd over seeds
      "hns": stats.human_normalized(float(scores.mean()), game),
      "mean_score_policy": float(np.mean(policy)) if len(policy) == len(runs) else None,
    }

  def hns(gs: Sequence[str]) -> list[np.ndarray]:
    return [np.array([stats.human_normalized(r.final_score, g) for r in by_game[g]]) for g in gs]

  all_runs = [r for runs in by_game.values() for r in runs]
  every_game = stats.atari100k_games()
  out = {
    "games": list(by_game),
    "runs": len(all_runs),
    "runs_on_report_games": sum(len(by_game[g]) for g in games),
    "aggregates": _aggregate_with_ci(hns(games), reps=reps, seed=seed),
    "per_game": per_game,
    "commits": sorted({r.commit or "unknown" for r in all_runs}),
    "env_steps": sorted({r.env_steps for r in all_runs}),
    "suites": sorted({r.suite for r in all_runs}),
    "curve": _curve(by_game, games, reps=reps, seed=seed),
  }
  # A method that ran every game also gets all-game figures, comparable with the baselines' all-game rows.
  if len(games) < len(every_game) and len(by_game) == len(every_game):
    out["aggregates_all_games"] = _aggregate_with_ci(hns(every_game), reps=reps, seed=seed)
  return out


def _baseline_summary(name: str, games: Sequence[str], shown: Sequence[str], *, reps: int, seed: int) -> dict[str, Any]:
  """A published method on the report's `games` (and on all 26 when those are fewer); per-game mean raw
  scores on the `shown` games (every game one of our methods ran)."""
  published = stats.published_scores(name)
  raw = stats.published_scores(name, normalized=False)
  out = {
    "runs": sum(int(published[g].size) for g in games),
    "runs_per_game": [int(published[g].size) for g in games],
    "aggregates": _aggregate_with_ci([published[g] for g in games], reps=reps, seed=seed),
    "mean_score": {g: float(raw[g].mean()) for g in shown},
  }
  if len(games) < len(stats.atari100k_games()):
    out["runs_all_games"] = sum(int(v.size) for v in published.values())
    out["aggregates_all_games"] = _aggregate_with_ci(list(published.values()), reps=reps, seed=seed)
  return out


# --------------------------------------------------------------------------------------------------------
# The report


def write_report(
  paths: list[str | Path],
  out_dir: str | Path,
  *,
  reps: int = 2000,
  seed: int = 0,
  baselines: tuple[str, ...] | None = None,
) -> dict:
  """Writes report.md, aggregates.png, curves.png and summary.json into `out_dir`; returns the summary.

  `paths`: run directories holding result.json, or directories above them (searched recursively).
  `baselines`: published methods to compare with (default: every one in the shipped table).
  Aggregates use the games that every one of our methods covers; intervals are percentile 95% stratified
  bootstraps with `reps` replicates seeded by `seed`. Bad input raises a one-line ConfigError before
  anything is written."""
  baselines = _checked_options(reps=reps, seed=seed, baselines=baselines)
  files = find_results(paths)
  out = Path(out_dir).resolve()
  _check_out_dir(out, files)
  grouped = group_runs([load_result(f) for f in files])
  games, shown = _report_games(grouped)
  summary = {
    "format": REPORT_FORMAT,
    "reps": reps,
    "seed": seed,
    "ci": CI,
    "games": games,
    "result_files": [str(f) for f in files],
    "methods": {m: _method_summary(by_game, games, reps=reps, seed=seed) for m, by_game in grouped.items()},
    "baselines": {b: _baseline_summary(b, games, shown, reps=reps, seed=seed) for b in baselines},
  }
  out.mkdir(parents=True, exist_ok=True)
  (out / "report.md").write_text(_markdown(summary), encoding="utf-8")
  _plot_aggregates(summary, out / "aggregates.png")
  _plot_curves(summary, grouped, out / "curves.png")
  (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
  return summary


def _checked_options(*, reps: Any, seed: Any, baselines: Any) -> tuple[str, ...]:
  """Checks `write_report`'s options (ConfigError); returns the baselines to show, repeats dropped."""
  if type(reps) is not int or reps < 1:
    raise ConfigError(f"reps must be a positive integer, got {reps!r}")
  if type(seed) is not int:
    raise ConfigError(f"seed must be an integer, got {seed!r}")
  allowed = stats.published_methods()
  if isinstance(baselines, str):
    raise ConfigError(
      f"baselines must be a tuple of names, got the string {baselines!r}; allowed names are {', '.join(allowed)}"
    )
  baselines = allowed if baselines is None else tuple(dict.fromkeys(baselines))
  for b in baselines:
    if b not in allowed:
      raise ConfigError(f"unknown baseline {b!r}: allowed are {', '.join(allowed)}")
  return baselines


def _check_out_dir(out: Path, files: Sequence[Path]) -> None:
  """ConfigError when the (resolved) output directory `out` lies inside a run directory."""
  for f in files:
    if out == f.parent or f.parent in out.parents:
      raise ConfigError(
        f"output directory {out} lies in run directory {f.parent}; write the report elsewhere "
        f"(run directories are never written to)"
      )


def _report_games(grouped: dict[str, dict[str, list[Run]]]) -> tuple[list[str], list[str]]:
  """(games every method of ours ran: the aggregates' games, games any of them ran: the per-game table's),
  both in the shipped table's order; ConfigError when the methods share no game."""
  covered = {m: set(by_game) for m, by_game in grouped.items()}
  games = [g for g in stats.atari100k_games() if all(g in c for c in covered.values())]
  shown = [g for g in stats.atari100k_games() if any(g in c for c in covered.values())]
  if not games:
    listing = "; ".join(f"{m}: {', '.join(sorted(c))}" for m, c in covered.items())
    raise ConfigError(f"our methods share no game, so no aggregate compares them ({listing}); report them separately")
  return games, shown


# --------------------------------------------------------------------------------------------------------
# report.md


def _fmt_runs(n_total: int, per_game: Sequence[int]) -> str:
  lo, hi = min(per_game), max(per_game)
  return f"{n_total} ({lo} per game)" if lo == hi else f"{n_total} ({lo}-{hi} per game)"


def _fmt_aggregate(entry: dict[str, Any]) -> str:
  """An aggregate `{"value": v, "ci": [low, high]}` as 'v [low, high]', three decimals."""
  return stats.format_ci((entry["value"], *entry["ci"]), digits=3)


def _aggregate_table(rows: list[tuple[str, str, dict[str, Any]]]) -> list[str]:
  lines = [
    "| Method | Runs | " + " | ".join(LABELS[a] for a in stats.AGGREGATES) + " |",
    "| --- | --- | " + " | ".join("---" for _ in stats.AGGREGATES) + " |",
  ]
  for label, runs, aggs in rows:
    lines.append(f"| {label} | {runs} | " + " | ".join(_fmt_aggregate(aggs[a]) for a in stats.AGGREGATES) + " |")
  return lines


def _baseline_label(name: str) -> str:
  return f"{name} *" if name in BASELINE_NOTES else name


def _markdown(summary: dict[str, Any]) -> str:
  methods, baselines = summary["methods"], summary["baselines"]
  lines = ["# Atari 100k report", ""]
  lines += _inputs_lines(methods, n_files=len(summary["result_files"]))
  lines += _per_game_lines(methods, baselines)
  lines += _aggregate_lines(summary)
  lines += _all_games_lines(methods, baselines, summary["games"])
  lines += _baseline_notes(baselines)
  lines += _sample_efficiency_lines(methods)
  lines += HOW_TO_READ
  return "\n".join(lines)


def _inputs_lines(methods: dict[str, Any], *, n_files: int) -> list[str]:
  """What the report read: result files, and per method its runs, env steps, commits and suites."""
  lines = [f"{n_files} result file(s), {len(methods)} method(s) of ours."]
  for name, m in methods.items():
    steps = ", ".join(str(s) for s in m["env_steps"])
    warn = " (runs differ in env steps)" if len(m["env_steps"]) > 1 else ""
    lines.append(
      f"- **{name}**: {m['runs']} runs on {len(m['games'])} game(s); env steps {steps}{warn}; "
      f"commit(s) {', '.join(m['commits'])}; suite(s) {', '.join(m['suites'])}."
    )
  return lines


def _per_game_lines(methods: dict[str, Any], baselines: dict[str, Any]) -> list[str]:
  """The per-game table of raw scores, on every game one of our methods ran."""
  lines = [
    "",
    "## Per-game scores",
    "",
    "Raw game scores. Ours: final score acting with search, mean ± sample sd over seeds "
    "(number of seeds), then the human-normalised score (HNS) of that mean, (score - random) / "
    "(human - random), and the mean final score acting with the policy network alone. Baselines: mean of "
    "their published runs.",
    "",
  ]
  head = ["Game", "Random", "Human"]
  for name in methods:
    head += [f"{name} score", f"{name} HNS", f"{name} policy-only"]
  head += list(baselines)
  lines += ["| " + " | ".join(head) + " |", "| " + " | ".join("---" for _ in head) + " |"]
  for game in [g for g in stats.atari100k_games() if any(g in m["per_game"] for m in methods.values())]:
    lo, hi = stats.random_human(game)
    cells = [game, f"{lo:.1f}", f"{hi:.1f}"]
    for m in methods.values():
      cells += _per_game_cells(m["per_game"].get(game))
    cells += [f"{b['mean_score'][game]:.1f}" for b in baselines.values()]
    lines.append("| " + " | ".join(cells) + " |")
  return lines


def _per_game_cells(pg: dict[str, Any] | None) -> list[str]:
  """One method's three cells of a per-game row (score ± sd (seeds), HNS, policy-only); '-' where it did not run."""
  if pg is None:
    return ["-", "-", "-"]
  sd = f" ± {pg['sd_score']:.1f}" if pg["sd_score"] is not None else ""
  policy = "-" if pg["mean_score_policy"] is None else f"{pg['mean_score_policy']:.1f}"
  return [f"{pg['mean_score']:.1f}{sd} ({len(pg['seeds'])})", f"{pg['hns']:.3f}", policy]


def _aggregate_lines(summary: dict[str, Any]) -> list[str]:
  """The aggregate table of ours and the baselines, on the games every method of ours covers."""
  methods, baselines, games = summary["methods"], summary["baselines"], summary["games"]
  cover = "our runs cover" if len(methods) == 1 else "every method of ours covers"
  lines = [
    "",
    f"## Aggregates on the {len(games)} game(s) {cover}",
    "",
    f"Games: {', '.join(games)}. Every row below, ours and published, is computed on these same "
    f"{len(games)} of the {len(stats.atari100k_games())} Atari 100k games, from human-normalised final scores. "
    f"Brackets: 95% stratified-bootstrap percentile interval, {summary['reps']} replicates, seed "
    f"{summary['seed']}.",
    "",
  ]
  for name, m in methods.items():
    if len(m["games"]) > len(games):
      extra = [g for g in m["games"] if g not in games]
      lines += [f"- {name} also ran {', '.join(extra)}, left out here because not every method of ours ran it.", ""]
  rows = []
  for name, m in methods.items():
    per_game = [len(m["per_game"][g]["seeds"]) for g in games]
    rows.append((f"**{name}** (ours)", _fmt_runs(m["runs_on_report_games"], per_game), m["aggregates"]))
  for name, b in baselines.items():
    rows.append((_baseline_label(name), _fmt_runs(b["runs"], b["runs_per_game"]), b["aggregates"]))
  return lines + _aggregate_table(rows)


def _all_games_lines(methods: dict[str, Any], baselines: dict[str, Any], games: Sequence[str]) -> list[str]:
  """When the report covers fewer than all games: the all-game aggregates of the baselines and of our methods
  that ran every game (nothing otherwise)."""
  n_all = len(stats.atari100k_games())
  full = {name: m for name, m in methods.items() if "aggregates_all_games" in m}
  if len(games) >= n_all or not (baselines or full):
    return []
  lines = [
    "",
    f"## All {n_all} games",
    "",
    "For orientation only: these rows are not comparable with the table above, which covers fewer games"
    + (" (our methods listed here ran all of them)." if full else "."),
    "",
  ]
  return lines + _aggregate_table(
    [(f"**{name}** (ours)", str(m["runs"]), m["aggregates_all_games"]) for name, m in full.items()]
    + [(_baseline_label(name), str(b["runs_all_games"]), b["aggregates_all_games"]) for name, b in baselines.items()]
  )


def _baseline_notes(baselines: dict[str, Any]) -> list[str]:
  """The footnotes of the starred baseline rows (nothing when none is shown)."""
  notes = [f"\\* {name}: {BASELINE_NOTES[name]}." for name in baselines if name in BASELINE_NOTES]
  return [""] + notes if notes else []


def _sample_efficiency_lines(methods: dict[str, Any]) -> list[str]:
  """What curves.png shows, and per method how its curve's grid was made."""
  lines = [
    "",
    "## Sample efficiency",
    "",
    "`curves.png`: first panel, IQM of human-normalised eval scores "
    "(acting with search) over runs x games against env steps, with a 95% stratified-bootstrap band; "
    "then raw score per seed for each game, with random (dotted) and human (dashed) scores where they "
    "fall inside the plotted range.",
  ]
  for name, m in methods.items():
    c = m["curve"]
    if c["grid"] == "shared":
      how = "every run evaluated at the same env steps, used as they are"
    elif c["grid"] == "interpolated":
      how = (
        "runs evaluated at different env steps: each run's curve is interpolated linearly onto every eval "
        "step inside all runs' ranges (never extrapolated)"
      )
    else:
      how = "no run has an eval curve"
    lines.append(f"- {name}: {how}; {len(c['env_steps'])} point(s) on {len(c['games'])} game(s).")
  return lines


HOW_TO_READ = [
  "",
  "## How to read these figures",
  "",
  "- HNS 0 is a random agent and 1 is the human reference; Atari 100k allows 100k agent steps (400k frames) per game.",
  "- Mean is the mean over games of the per-game mean over runs; a few games with very large HNS can "
  "dominate it. Median is the median of the per-game means and ignores how far the best and worst "
  "games go. IQM (interquartile mean) pools all runs x games, drops the lowest and highest 25% "
  "(rounded down, as scipy.stats.trim_mean) and averages the rest: robust to outliers, yet it uses "
  "half the data, so its interval is tighter than the median's. "
  "Optimality gap is the mean shortfall below HNS 1 (lower is better).",
  '- Intervals come from the stratified bootstrap of Agarwal et al. 2021 ("Deep RL at the Edge of the '
  'Statistical Precipice", rliable): runs are resampled with replacement within each game, the '
  "aggregate recomputed, and the 2.5th and 97.5th percentiles reported. They reflect the spread over "
  "runs only, not over games; with few runs per game they are themselves uncertain, and with one run "
  "per game they collapse to a point.",
  "- Overlapping intervals mean the data do not separate the methods; compare methods on the same "
  "games only (as the aggregate table does).",
  "",
]
"""The closing section of report.md: how to read the aggregates and their intervals."""


# --------------------------------------------------------------------------------------------------------
# Figures


def _plot_aggregates(summary: dict[str, Any], path: Path) -> None:
  """Point and 95% interval of each aggregate, one panel per aggregate, one row per method."""
  rows = [(f"{n} (ours)", m["aggregates"], "tab:red") for n, m in summary["methods"].items()]
  rows += [(n, b["aggregates"], "tab:blue") for n, b in summary["baselines"].items()]
  with plots.png(path, dpi=100, figsize=(14, 1.0 + 0.35 * len(rows)), layout="constrained") as fig:
    axes = fig.subplots(1, len(stats.AGGREGATES), sharey=True)
    y = np.arange(len(rows))[::-1]
    for ax, name in zip(axes, stats.AGGREGATES):
      for yi, (_, aggs, color) in zip(y, rows):
        v, (lo, hi) = aggs[name]["value"], aggs[name]["ci"]
        ax.errorbar([v], [yi], xerr=[[v - lo], [hi - v]], fmt="o", color=color, capsize=3)
      ax.set_title(LABELS[name] + (" (lower is better)" if name == "optimality_gap" else ""))
      ax.set_xlabel("human-normalised score")
      ax.grid(axis="x", alpha=0.3)
    axes[0].set_yticks(y, [label for label, _, _ in rows])
    fig.suptitle(f"Atari 100k aggregates on {len(summary['games'])} game(s), 95% stratified-bootstrap CIs")


def _plot_curves(summary: dict[str, Any], grouped: dict[str, dict[str, list[Run]]], path: Path) -> None:
  """IQM-of-HNS curve per method with its band, then raw score vs env steps per seed for every game."""
  games = [g for g in stats.atari100k_games() if any(g in by_game for by_game in grouped.values())]
  ncols = min(4, 1 + len(games))
  nrows = math.ceil((1 + len(games)) / ncols)
  with plots.png(path, dpi=80, figsize=(4 * ncols, 3 * nrows), layout="constrained") as fig:
    axes = np.atleast_1d(fig.subplots(nrows, ncols, squeeze=False)).ravel()
    colors = {m: f"C{i}" for i, m in enumerate(grouped)}
    _plot_iqm_curves(axes[0], summary["methods"], colors)
    for ax, game in zip(axes[1:], games):
      _plot_game(ax, game, {name: by_game.get(game, []) for name, by_game in grouped.items()}, colors)
    for ax in axes[1 + len(games) :]:
      ax.set_visible(False)


def _plot_iqm_curves(ax, methods: dict[str, Any], colors: dict[str, str]) -> None:
  """Each method's IQM-of-HNS curve against env steps, with its 95% band."""
  for name, m in methods.items():
    c = m["curve"]
    if c["env_steps"]:
      ci = np.array(c["ci"]).reshape(-1, 2)
      ax.plot(c["env_steps"], c["iqm"], marker=".", color=colors[name], label=name)
      ax.fill_between(c["env_steps"], ci[:, 0], ci[:, 1], color=colors[name], alpha=0.2)
  ax.set_title("IQM human-normalised score (95% CI)")
  ax.set_xlabel("env steps")
  ax.legend(fontsize="small")


def _plot_game(ax, game: str, runs: dict[str, list[Run]], colors: dict[str, str]) -> None:
  """Raw score against env steps of every run (`{method: runs on game}`) on one game, with its random
  (dotted) and human (dashed) scores where they fall inside the data's range."""
  styles = ["-", "--", ":", "-."]
  lines = 0
  for name, game_runs in runs.items():
    for i, r in enumerate(game_runs):
      ax.plot(
        r.curve_steps,
        r.curve_scores,
        color=colors[name],
        linestyle=styles[i % len(styles)],
        marker=".",
        label=f"{name} seed {r.seed}",
      )
      lines += 1
  # Reference lines must not set the scale (human Qbert would flatten every curve): keep the data's.
  ax.autoscale_view()
  ylim = ax.get_ylim()
  lo, hi = stats.random_human(game)
  ax.axhline(lo, color="gray", linestyle=":", linewidth=1)
  ax.axhline(hi, color="gray", linestyle="--", linewidth=1)
  if lines:
    ax.set_ylim(ylim)
  ax.set_title(f"{game} (random {lo:g}, human {hi:g})", fontsize="medium")
  ax.set_xlabel("env steps")
  ax.set_ylabel("score")
  if 0 < lines <= 8:
    ax.legend(fontsize="x-small")
