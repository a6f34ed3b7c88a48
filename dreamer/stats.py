"""Atari 100k statistics: human-normalised scores, robust aggregates and stratified-bootstrap intervals.

Follows Agarwal et al. 2021, "Deep RL at the Edge of the Statistical Precipice" (the `rliable` library).
Pure numpy. A score set is either a matrix `f64[runs, games]` or, when games have different numbers of
runs, a sequence of per-game vectors `[f64[runs_g] for each game]`. For a matrix every aggregate equals
rliable's exactly (to float rounding); the docstrings say how each generalises to uneven runs.
"""

from __future__ import annotations

import csv
import difflib
import functools
import io
from collections.abc import Sequence
from importlib import resources

import numpy as np

from dreamer.config import ConfigError

AGGREGATES = ("mean", "median", "iqm", "optimality_gap")
"""Names of the aggregates, in the order reports show them."""

# Bootstrap resamples are drawn in chunks of reps so that memory stays bounded; this caps the number of
# resampled scores held at once (2**22 float64 = 32 MiB). Chunking does not change the numbers.
_MAX_RESAMPLED = 2**22

ScoreSet = np.ndarray | Sequence[np.ndarray]
"""`f64[runs, games]`, or `[f64[runs_g] for each game]` when run counts differ between games."""


# --------------------------------------------------------------------------------------------------------
# Shipped reference tables


def _read_csv(name: str) -> list[dict[str, str]]:
  """The rows of a shipped CSV table; lines starting with '#' (its source notes) are skipped."""
  text = resources.files("dreamer.data").joinpath(name).read_text(encoding="utf-8")
  return list(csv.DictReader(io.StringIO("".join(line for line in text.splitlines(True) if not line.startswith("#")))))


@functools.cache
def _minatar_reference() -> tuple[tuple[str, str, int, float], ...]:
  return tuple(
    (r["game"], r["method"], int(r["frames"]), float(r["return"])) for r in _read_csv("minatar_reference.csv")
  )


def reference_returns(world: str) -> list[tuple[str, int, float]]:
  """Published (method, env steps, return) of a world, from the shipped tables: the MinAtar paper's DQN at
  0.1M, 1M and 5M frames and AC(lambda) at 5M for `minatar:<Game>` (read off its plots: approximate; see
  dreamer/data/README.md); [] for any other world."""
  family, _, game = world.partition(":")
  if family != "minatar":
    return []
  return [(method, frames, ret) for g, method, frames, ret in _minatar_reference() if g == game]


@functools.cache
def _random_human() -> dict[str, tuple[float, float]]:
  return {r["game"]: (float(r["random"]), float(r["human"])) for r in _read_csv("atari100k_random_human.csv")}


def atari100k_games() -> tuple[str, ...]:
  """The 26 Atari 100k game names, as spelled in the shipped table (alphabetical)."""
  return tuple(_random_human())


def random_human(game: str) -> tuple[float, float]:
  """(random score, human score) of `game`; raises ConfigError naming the 26 allowed games otherwise."""
  table = _random_human()
  if game not in table:
    close = difflib.get_close_matches(str(game), list(table), n=1, cutoff=0.6)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    raise ConfigError(f"unknown Atari 100k game {game!r}{hint}: human-normalised scores need one of {', '.join(table)}")
  return table[game]


def human_normalized(score: float, game: str) -> float:
  """(score - random) / (human - random) for one raw `score` on `game`."""
  lo, hi = random_human(game)
  return (float(score) - lo) / (hi - lo)


def human_normalized_matrix(scores: np.ndarray, games: Sequence[str]) -> np.ndarray:
  """Raw `scores: f64[..., games]` (last axis ordered as `games`) -> human-normalised `f64[..., games]`."""
  scores = np.asarray(scores, dtype=np.float64)
  if scores.ndim == 0 or scores.shape[-1] != len(games):
    raise ValueError(f"scores must have a last axis of {len(games)} games, got shape {scores.shape}")
  lo, hi = np.array([random_human(g) for g in games], dtype=np.float64).reshape(len(games), 2).T
  return (scores - lo) / (hi - lo)


@functools.cache
def _published() -> dict[str, dict[str, tuple[float, ...]]]:
  runs: dict[str, dict[str, dict[int, float]]] = {}
  for r in _read_csv("atari100k_published_runs.csv"):
    runs.setdefault(r["method"], {}).setdefault(r["game"], {})[int(r["run"])] = float(r["score"])
  return {
    m: {g: tuple(v for _, v in sorted(by_run.items())) for g, by_run in by_game.items()} for m, by_game in runs.items()
  }


def published_methods() -> tuple[str, ...]:
  """Methods in the shipped table of published runs, in file order."""
  return tuple(_published())


def published_scores(method: str, *, normalized: bool = True) -> dict[str, np.ndarray]:
  """Per game, the published final scores of `method`: `{game: f64[runs_g]}` ordered as `atari100k_games()`.

  Human-normalised unless `normalized=False`. EfficientZero and MuZero have one value per game (for
  EfficientZero the paper's mean over 3 runs x 32 episodes), so their bootstrap intervals are points."""
  table = _published()
  if method not in table:
    raise ConfigError(f"unknown published baseline {method!r}: allowed are {', '.join(table)}")
  out = {}
  for game in atari100k_games():
    raw = np.array(table[method][game], dtype=np.float64)
    out[game] = human_normalized_matrix(raw[:, None], [game])[:, 0] if normalized else raw
  return out


# --------------------------------------------------------------------------------------------------------
# Aggregates


def _per_game(scores: ScoreSet) -> list[np.ndarray]:
  """A score set as a list of per-game vectors `f64[runs_g]`, checked non-empty and finite."""
  if isinstance(scores, np.ndarray):
    if scores.ndim != 2:
      raise ValueError(f"a score matrix must be f64[runs, games], got shape {scores.shape}")
    games = [np.asarray(scores[:, g], dtype=np.float64) for g in range(scores.shape[1])]
  else:
    games = [np.asarray(s, dtype=np.float64) for s in scores]
  if not games:
    raise ValueError("a score set needs at least one game")
  for g, s in enumerate(games):
    if s.ndim != 1 or s.size == 0:
      raise ValueError(f"game {g} must have a non-empty f64[runs] vector of scores, got shape {s.shape}")
    if not np.all(np.isfinite(s)):
      raise ValueError(f"game {g} has non-finite scores")
  return games


def _aggregate_batch(games: list[np.ndarray], names: Sequence[str], gamma: float) -> dict[str, np.ndarray]:
  """Aggregates of B score sets at once. `games`: per game `f64[B, runs_g]` -> `{name: f64[B]}`."""
  out = {}
  means = None
  if {"mean", "median"} & set(names):
    means = np.stack([s.mean(axis=1) for s in games], axis=1)  # f64[B, games]
  for name in names:
    if name == "mean":
      out[name] = means.mean(axis=1)
    elif name == "median":
      out[name] = np.median(means, axis=1)
    elif name == "iqm":
      pooled = np.concatenate(games, axis=1)  # f64[B, runs x games]
      n = pooled.shape[1]
      cut = n // 4  # == scipy.stats.trim_mean's int(0.25 * n): floor, from each end
      middle = np.partition(pooled, (cut, n - cut - 1), axis=1)[:, cut : n - cut]
      out[name] = middle.mean(axis=1)
    elif name == "optimality_gap":
      gaps = np.stack([np.maximum(gamma - s, 0.0).mean(axis=1) for s in games], axis=1)
      out[name] = gaps.mean(axis=1)
    else:
      raise ValueError(f"unknown aggregate {name!r}: allowed are {', '.join(AGGREGATES)}")
  return out


def aggregates(scores: ScoreSet, *, names: Sequence[str] = AGGREGATES, gamma: float = 1.0) -> dict[str, float]:
  """Point estimates `{name: value}` of the named aggregates of `scores` (see `mean`, `median`, ...)."""
  batch = _aggregate_batch([s[None, :] for s in _per_game(scores)], names, gamma)
  return {name: float(v[0]) for name, v in batch.items()}


def mean(scores: ScoreSet) -> float:
  """Mean over games of the per-game mean over runs (rliable `aggregate_mean`).

  With equal run counts this is also the mean over all runs x games; with uneven counts every game weighs
  the same, whatever its number of runs."""
  return aggregates(scores, names=("mean",))["mean"]


def median(scores: ScoreSet) -> float:
  """Median over games of the per-game mean over runs (rliable `aggregate_median`); an even number of
  games gives the average of the two middle game means (numpy's median)."""
  return aggregates(scores, names=("median",))["median"]


def iqm(scores: ScoreSet) -> float:
  """Interquartile mean of all runs x games pooled (rliable `aggregate_iqm` = `scipy.stats.trim_mean(x, 0.25)`).

  Of the n pooled scores, floor(n / 4) are cut from each end (scipy's `int(0.25 * n)`, so when n is not a
  multiple of 4 slightly more than half are kept) and the rest are averaged. With uneven run counts a game
  weighs in proportion to its runs."""
  return aggregates(scores, names=("iqm",))["iqm"]


def optimality_gap(scores: ScoreSet, *, gamma: float = 1.0) -> float:
  """Mean shortfall below `gamma`: mean over games of the per-game mean of max(0, gamma - x) (rliable
  `aggregate_optimality_gap`, gamma - mean(min(x, gamma)); equal to it for equal run counts). Lower is better."""
  return aggregates(scores, names=("optimality_gap",), gamma=gamma)["optimality_gap"]


# --------------------------------------------------------------------------------------------------------
# Stratified bootstrap


def bootstrap_distribution(
  scores: ScoreSet,
  *,
  rng: np.random.Generator,
  reps: int = 2000,
  names: Sequence[str] = AGGREGATES,
  gamma: float = 1.0,
  chunk_reps: int | None = None,
) -> dict[str, np.ndarray]:
  """Stratified bootstrap replicates `{name: f64[reps]}` of the named aggregates.

  Each replicate resamples runs with replacement independently within each game (same run count per game as
  the data) and recomputes every aggregate on that one resample. `rng` is consumed: game g draws from the g-th
  child of `rng.spawn(games)`, row by row (one replicate = `integers(0, runs_g, runs_g)`), so the numbers
  depend only on `rng`'s state, `reps` and the data, never on `chunk_reps` (default: as many replicates at
  once as fit in about 32 MiB)."""
  games = _per_game(scores)
  if reps < 1:
    raise ValueError(f"reps must be a positive integer, got {reps}")
  children = rng.spawn(len(games))
  total_runs = sum(s.size for s in games)
  chunk = chunk_reps or max(1, _MAX_RESAMPLED // total_runs)
  out = {name: np.empty(reps) for name in names}
  for start in range(0, reps, chunk):
    m = min(chunk, reps - start)
    resampled = [s[child.integers(0, s.size, size=(m, s.size))] for s, child in zip(games, children)]
    for name, values in _aggregate_batch(resampled, names, gamma).items():
      out[name][start : start + m] = values
  return out


def bootstrap_ci(
  scores: ScoreSet,
  *,
  rng: np.random.Generator,
  reps: int = 2000,
  ci: float = 0.95,
  names: Sequence[str] = AGGREGATES,
  gamma: float = 1.0,
  chunk_reps: int | None = None,
) -> dict[str, tuple[float, float]]:
  """Percentile `ci` intervals `{name: (low, high)}` of the stratified bootstrap (rliable's default
  'percentile' method: numpy's linearly interpolated 2.5th and 97.5th percentiles for ci = 0.95)."""
  if not 0.0 < ci < 1.0:
    raise ValueError(f"ci must lie strictly between 0 and 1, got {ci}")
  dist = bootstrap_distribution(scores, rng=rng, reps=reps, names=names, gamma=gamma, chunk_reps=chunk_reps)
  q = [100 * (1 - ci) / 2, 100 * (1 + ci) / 2]
  return {name: tuple(float(v) for v in np.percentile(values, q)) for name, values in dist.items()}


def mean_ci(
  values: np.ndarray, *, rng: np.random.Generator, reps: int = 2000, ci: float = 0.95
) -> tuple[float, float, float]:
  """(mean, low, high): the mean of one set of values (runs, seeds or episodes) and its percentile-bootstrap
  interval (the values resampled with replacement)."""
  values = np.asarray(values, np.float64)
  low, high = bootstrap_ci([values], rng=rng, reps=reps, ci=ci, names=("mean",))["mean"]
  return float(values.mean()), low, high


def format_ci(value: Sequence[float], *, digits: int = 1) -> str:
  """A (mean, low, high) triple as text, every number with `digits` decimals: (4.5, 4, 5) -> '4.5 [4.0, 5.0]'."""
  mean, low, high = value
  return f"{mean:.{digits}f} [{low:.{digits}f}, {high:.{digits}f}]"
