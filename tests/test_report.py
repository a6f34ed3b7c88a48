"""Atari 100k statistics and report: published aggregates recomputed from the shipped data, fast functions
against slow pure-Python references, and the report end to end on synthetic result files."""

import csv
import io
import json
import math
from importlib import resources
from pathlib import Path

import numpy as np
import pytest

from dreamer import report, stats
from dreamer.config import ConfigError

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

# (mean, median, IQM) of human-normalised scores over all 26 games, as listed in the reference README.
PUBLISHED = {
  "SimPLe": (0.332, 0.134, 0.130),
  "DrQ(eps)": (0.465, 0.313, 0.280),
  "SPR": (0.616, 0.396, 0.337),
  "IRIS": (1.046, 0.289, 0.501),
  "STORM": (1.222, 0.425, 0.561),
  "DIAMOND": (1.459, 0.373, 0.641),
  "EfficientZero": (1.943, 1.090, 1.047),  # IQM over game means: one value per game
}

# Fixed small cases (never random): 3 runs x 4 games with ties, and uneven runs (1, 2, 3, 5 per game).
MATRIX = np.array([[0.10, 1.50, -0.20, 0.90], [0.40, 0.70, 0.00, 0.90], [0.25, 2.10, 0.30, 1.30]])
UNEVEN = [np.array([0.5]), np.array([1.2, -0.1]), np.array([0.3, 0.3, 0.8]), np.array([2.0, 0.0, 0.6, 1.1, 0.9])]


# --------------------------------------------------------------------------------------------------------
# Slow references: loops, sorted, fsum


def columns(scores):
  if isinstance(scores, np.ndarray):
    return [[float(scores[r, g]) for r in range(scores.shape[0])] for g in range(scores.shape[1])]
  return [[float(x) for x in s] for s in scores]


def slow_mean(games):
  return math.fsum(math.fsum(g) / len(g) for g in games) / len(games)


def slow_median(games):
  means = sorted(math.fsum(g) / len(g) for g in games)
  n = len(means)
  return means[n // 2] if n % 2 else (means[n // 2 - 1] + means[n // 2]) / 2


def slow_iqm(games):
  pooled = sorted(x for g in games for x in g)
  cut = int(0.25 * len(pooled))  # scipy.stats.trim_mean
  kept = pooled[cut : len(pooled) - cut]
  return math.fsum(kept) / len(kept)


def slow_gap(games, gamma=1.0):
  return math.fsum(math.fsum(max(0.0, gamma - x) for x in g) / len(g) for g in games) / len(games)


SLOW = {"mean": slow_mean, "median": slow_median, "iqm": slow_iqm, "optimality_gap": slow_gap}


def slow_percentile(values, q):
  xs = sorted(values)
  pos = q / 100 * (len(xs) - 1)
  lo = math.floor(pos)
  hi = min(lo + 1, len(xs) - 1)
  return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def slow_bootstrap(scores, *, seed, reps):
  """One scalar index draw at a time, in the documented stream: game g uses child g of default_rng(seed)."""
  games = columns(scores)
  children = np.random.default_rng(seed).spawn(len(games))
  draws = [[[int(child.integers(0, len(g))) for _ in g] for _ in range(reps)] for g, child in zip(games, children)]
  out = {name: [] for name in SLOW}
  for r in range(reps):
    sample = [[g[i] for i in draws[k][r]] for k, g in enumerate(games)]
    for name, fn in SLOW.items():
      out[name].append(fn(sample))
  return out


# --------------------------------------------------------------------------------------------------------
# Shipped data and published aggregates


def test_data_ships_inside_the_package():
  data = resources.files("dreamer.data")
  assert Path(str(data)).resolve() == (Path(stats.__file__).parent / "data").resolve()
  assert len(stats.atari100k_games()) == 26
  assert stats.human_normalized(-20.7, "Pong") == 0.0
  assert stats.human_normalized(14.6, "Pong") == 1.0
  assert stats.human_normalized_matrix(np.array([[-20.7, 14.6]]), ["Pong", "Pong"]).tolist() == [[0.0, 1.0]]


@pytest.mark.parametrize("method", list(PUBLISHED))
def test_published_aggregates_recomputed(method):
  scores = list(stats.published_scores(method).values())
  got = stats.aggregates(scores)
  assert (round(got["mean"], 3), round(got["median"], 3), round(got["iqm"], 3)) == PUBLISHED[method]


def test_efficientzero_headline_numbers():
  ez = list(stats.published_scores("EfficientZero").values())
  assert all(s.size == 1 for s in ez)  # the paper's per-game means
  assert f"{stats.mean(ez):.3f}" == "1.943" and f"{stats.median(ez):.3f}" == "1.090"


# --------------------------------------------------------------------------------------------------------
# Aggregates: exact tiny case, fast vs slow, scipy convention


def test_aggregates_tiny_exact():
  scores = np.array([[0.0, 2.0], [1.0, 4.0]])  # game means 0.5, 3.0; pooled 0, 1, 2, 4
  assert stats.aggregates(scores) == {"mean": 1.75, "median": 1.75, "iqm": 1.5, "optimality_gap": 0.25}


@pytest.mark.parametrize("scores", [MATRIX, UNEVEN], ids=["3x4", "uneven"])
def test_aggregates_match_slow_reference(scores):
  games = columns(scores)
  fast = {"mean": stats.mean, "median": stats.median, "iqm": stats.iqm, "optimality_gap": stats.optimality_gap}
  for name, fn in fast.items():
    assert fn(scores) == pytest.approx(SLOW[name](games), abs=1e-12), name
  assert stats.optimality_gap(scores, gamma=0.5) == pytest.approx(slow_gap(games, 0.5), abs=1e-12)


def test_matrix_and_per_game_list_agree():
  assert stats.aggregates(MATRIX) == pytest.approx(stats.aggregates(list(MATRIX.T)), abs=1e-15)


@pytest.mark.parametrize("n", range(1, 14))
def test_iqm_matches_scipy_trim_mean(n):
  scipy_stats = pytest.importorskip("scipy.stats")
  x = np.cos(np.arange(n) * 1.7) * 3  # fixed, unsorted, n not always a multiple of 4
  assert stats.iqm(x[:, None]) == pytest.approx(scipy_stats.trim_mean(x, 0.25), abs=1e-12)
  assert stats.iqm(x[None, :]) == pytest.approx(scipy_stats.trim_mean(x, 0.25), abs=1e-12)


# --------------------------------------------------------------------------------------------------------
# Stratified bootstrap


@pytest.mark.parametrize("scores", [MATRIX, UNEVEN], ids=["3x4", "uneven"])
def test_bootstrap_matches_slow_reference(scores):
  reps = 60
  slow = slow_bootstrap(scores, seed=3, reps=reps)
  for chunk in (None, 7, 1):
    fast = stats.bootstrap_distribution(scores, rng=np.random.default_rng(3), reps=reps, chunk_reps=chunk)
    for name in stats.AGGREGATES:
      np.testing.assert_allclose(fast[name], slow[name], rtol=0, atol=1e-12, err_msg=f"{name} chunk {chunk}")
  cis = stats.bootstrap_ci(scores, rng=np.random.default_rng(3), reps=reps)
  for name in stats.AGGREGATES:
    want = (slow_percentile(slow[name], 2.5), slow_percentile(slow[name], 97.5))
    assert cis[name] == pytest.approx(want, abs=1e-12), name


def test_bootstrap_seeding():
  def ci(seed):
    return stats.bootstrap_ci(UNEVEN, rng=np.random.default_rng(seed), reps=200)

  assert ci(0) == ci(0)
  assert ci(0) != ci(1)
  assert all(lo < hi for lo, hi in ci(0).values())


def test_bootstrap_one_run_per_game_is_a_point():
  one = [np.array([0.3]), np.array([1.2]), np.array([-0.1])]
  cis = stats.bootstrap_ci(one, rng=np.random.default_rng(0), reps=50)
  assert cis == {name: (v, v) for name, v in stats.aggregates(one).items()}


def test_format_ci_rounds_each_number_to_the_digits_asked():
  assert stats.format_ci((4.5, 4.0, 5.0)) == "4.5 [4.0, 5.0]"
  assert stats.format_ci([0.12345, -0.5, 1], digits=3) == "0.123 [-0.500, 1.000]"
  assert stats.format_ci(np.array([6.75, 6.5, 7.0]), digits=0) == "7 [6, 7]"


# --------------------------------------------------------------------------------------------------------
# Report end to end

GAMES = {
  "Pong": ([-5.0, -2.0], [-8.0, -6.0]),
  "Breakout": ([10.0, 14.0], [9.0, 11.0]),
  "MsPacman": ([800.0, 1300.0], [700.0, 900.0]),
}  # game: (final scores, policy-only scores) per seed


def result(game, seed, score, policy, *, method="dreamer", steps=(20000, 60000, 100000), **extra):
  curve = [{"env_steps": s, "score": score * s / 100000, "score_policy": policy * s / 100000} for s in steps]
  return {
    "format": "dreamer-bench-result/1",
    "suite": "atari100k",
    "method": method,
    "game": game,
    "world": f"atari:{game}",
    "seed": seed,
    "final_score": score,
    "final_score_policy": policy,
    "eval_curve": curve,
    "env_steps": 100000,
    "updates": 50000,
    "wall_s": 12.5,
    "config": {},
    "commit": "abc1234",
    "eval_episodes": 32,
    **extra,
  }


def write_runs(root, results):
  for r in results:
    d = root / r["method"] / f"{r['game']}-seed{r['seed']}"
    d.mkdir(parents=True)
    (d / "result.json").write_text(json.dumps(r))


def csv_random_human():
  text = resources.files("dreamer.data").joinpath("atari100k_random_human.csv").read_text()
  return {r["game"]: (float(r["random"]), float(r["human"])) for r in csv.DictReader(io.StringIO(text))}


def snapshot(root):
  return {p: p.read_bytes() for p in sorted(Path(root).rglob("*")) if p.is_file()}


def assert_per_game_rows(md):
  """report.md holds GAMES' per-game rows, recomputed here from the shipped CSVs."""
  table = csv_random_human()
  published = {}  # (method, game) -> raw scores, read here straight from the shipped CSV
  for r in csv.DictReader(
    io.StringIO(resources.files("dreamer.data").joinpath("atari100k_published_runs.csv").read_text())
  ):
    published.setdefault((r["method"], r["game"]), []).append(float(r["score"]))
  methods = list(dict.fromkeys(m for m, _ in published))
  for game, (scores, policy) in GAMES.items():
    lo, hi = table[game]
    m, sd = sum(scores) / 2, math.sqrt(sum((s - sum(scores) / 2) ** 2 for s in scores))  # ddof=1, n=2
    baseline_cells = " | ".join(f"{math.fsum(published[b, game]) / len(published[b, game]):.1f}" for b in methods)
    row = (
      f"| {game} | {lo:.1f} | {hi:.1f} | {m:.1f} ± {sd:.1f} (2) | {(m - lo) / (hi - lo):.3f} | "
      f"{sum(policy) / 2:.1f} | {baseline_cells} |"
    )
    assert row in md, row


def test_report_end_to_end(tmp_path):
  runs = tmp_path / "runs"
  write_runs(runs, [result(g, seed, s[seed], p[seed]) for g, (s, p) in GAMES.items() for seed in (0, 1)])
  before = snapshot(runs)
  out = tmp_path / "report"
  summary = report.write_report([runs], out, reps=300, seed=5)

  assert snapshot(runs) == before  # nothing written into run directories
  assert json.loads((out / "summary.json").read_text()) == summary
  for png in ("aggregates.png", "curves.png"):
    assert (out / png).read_bytes()[:8] == PNG_MAGIC
  md = (out / "report.md").read_text()
  assert_per_game_rows(md)

  table = csv_random_human()
  games = [
    [(s - table[game][0]) / (table[game][1] - table[game][0]) for s in scores] for game, (scores, _) in GAMES.items()
  ]
  ours = summary["methods"]["dreamer"]
  assert ours["runs"] == 6 and summary["games"] == ["Breakout", "MsPacman", "Pong"]
  for name, fn in SLOW.items():
    assert ours["aggregates"][name]["value"] == pytest.approx(fn(games), abs=1e-12)
  agg_row = (
    "| **dreamer** (ours) | 6 (2 per game) | "
    + " | ".join(
      f"{ours['aggregates'][a]['value']:.3f} [{ours['aggregates'][a]['ci'][0]:.3f}, "
      f"{ours['aggregates'][a]['ci'][1]:.3f}]"
      for a in stats.AGGREGATES
    )
    + " |"
  )
  assert agg_row in md
  assert f"{slow_mean(games):.3f} [" in agg_row and f"{slow_iqm(games):.3f} [" in agg_row
  assert "## Aggregates on the 3 game(s) our runs cover" in md
  assert "300 replicates, seed 5" in md and "commit(s) abc1234" in md and "env steps 100000" in md
  assert "## All 26 games" in md
  assert "| DIAMOND | 15 (5 per game) |" in md and "| SPR | 300 (100 per game) |" in md
  # Baseline rows use the same 3 games, recomputed here from the shipped runs.
  spr = [stats.published_scores("SPR")[g] for g in summary["games"]]
  assert summary["baselines"]["SPR"]["aggregates"]["iqm"]["value"] == pytest.approx(slow_iqm(columns(spr)))
  assert summary["baselines"]["SPR"]["aggregates_all_games"]["mean"]["value"] == pytest.approx(0.616, abs=5e-4)
  curve = ours["curve"]
  assert curve["grid"] == "shared" and curve["env_steps"] == [20000, 60000, 100000]
  assert curve["iqm"][-1] == pytest.approx(slow_iqm(games), abs=1e-12)

  again = report.write_report([runs / "dreamer"], tmp_path / "again", reps=300, seed=5)
  assert again["methods"] == summary["methods"]  # same data, same seed: same numbers


def test_report_uneven_curves_and_baseline_choice(tmp_path):
  runs = tmp_path / "runs"
  repeated = result("Pong", 0, -3.0, -4.0, steps=(10000, 50000, 100000))
  repeated["eval_curve"].append(dict(repeated["eval_curve"][-1]))  # as a closing summary record repeats it
  write_runs(
    runs,
    [
      repeated,
      result("Pong", 1, -1.0, -2.0, steps=(20000, 60000, 90000)),
      result("Pong", 2, 0.0, -1.0, steps=(20000, 60000, 90000)),
    ],
  )
  out = tmp_path / "report"
  summary = report.write_report([runs / "dreamer" / "Pong-seed0", runs / "dreamer"], out, reps=50, baselines=("SPR",))
  assert summary["methods"]["dreamer"]["runs"] == 3  # a run given twice counts once
  assert list(summary["baselines"]) == ["SPR"]
  curve = summary["methods"]["dreamer"]["curve"]
  assert curve["grid"] == "interpolated" and curve["env_steps"] == [20000, 50000, 60000, 90000]
  md = (out / "report.md").read_text()
  assert "interpolated linearly" in md and "1-2 per game" not in md and "3 (3 per game)" in md

  none = report.write_report([runs], tmp_path / "none", reps=20, baselines=())
  assert none["baselines"] == {}
  assert "## All 26 games" not in (tmp_path / "none" / "report.md").read_text()


def test_report_two_methods_compare_on_shared_games(tmp_path):
  runs = tmp_path / "runs"
  everything = [result(g, 0, 1.0 + i, 0.0, method="wide") for i, g in enumerate(stats.atari100k_games())]
  write_runs(runs, everything + [result("Pong", 0, 2.0, 0.0, method="narrow")])
  summary = report.write_report([runs], tmp_path / "report", reps=20, baselines=("IRIS",))
  assert summary["games"] == ["Pong"]
  wide = summary["methods"]["wide"]
  assert wide["aggregates"]["mean"]["value"] == pytest.approx(stats.human_normalized(1.0 + 20, "Pong"))
  all_hns = [[stats.human_normalized(r["final_score"], r["game"])] for r in everything]
  assert wide["aggregates_all_games"]["iqm"]["value"] == pytest.approx(slow_iqm(all_hns), abs=1e-12)
  assert "aggregates_all_games" not in summary["methods"]["narrow"]
  md = (tmp_path / "report" / "report.md").read_text()
  assert "## Aggregates on the 1 game(s) every method of ours covers" in md and "- wide also ran Alien" in md
  assert "| **wide** (ours) | 26 |" in md

  write_runs(tmp_path / "apart", [result("Pong", 0, 1.0, 0.0, method="a"), result("Qbert", 0, 1.0, 0.0, method="b")])
  with pytest.raises(ConfigError, match="share no game") as info:
    report.write_report([tmp_path / "apart"], tmp_path / "apart-report", reps=10)
  assert "\n" not in str(info.value)


# --------------------------------------------------------------------------------------------------------
# Bad input: one-line ConfigError naming what was wrong, nothing written


def bad_cases(tmp_path):
  def run_dir(name, content):
    d = tmp_path / name / "run"
    d.mkdir(parents=True)
    (d / "result.json").write_text(content if isinstance(content, str) else json.dumps(content))
    return tmp_path / name

  good = result("Pong", 0, 1.0, 1.0)
  (tmp_path / "empty" / "nested").mkdir(parents=True)
  missing = {k: v for k, v in good.items() if k != "final_score"}
  dup = run_dir("dup", good)
  (dup / "copy").mkdir()
  (dup / "copy" / "result.json").write_text(json.dumps(good))
  return [
    ("no result", dict(paths=[tmp_path / "empty"]), "no result.json found under"),
    ("missing path", dict(paths=[tmp_path / "nowhere"]), "does not exist"),
    ("not json", dict(paths=[run_dir("garbled", "{not json")]), "cannot read"),
    ("not an object", dict(paths=[run_dir("list", [1, 2])]), "must hold a JSON object"),
    ("missing key", dict(paths=[run_dir("missing", missing)]), "lacks key(s) final_score"),
    (
      "wrong format",
      dict(paths=[run_dir("format", {**good, "format": "dreamer-bench-result/0"})]),
      "only 'dreamer-bench-result/1' is allowed",
    ),
    ("bad score", dict(paths=[run_dir("score", {**good, "final_score": "high"})]), "'final_score' must be"),
    ("curve order", dict(paths=[run_dir("order", result("Pong", 0, 1.0, 1.0, steps=(9, 5)))]), "strictly increasing"),
    (
      "curve clash",
      dict(
        paths=[
          run_dir("clash", {**good, "eval_curve": [{"env_steps": 5, "score": 1.0}, {"env_steps": 5, "score": 2.0}]})
        ]
      ),
      "strictly increasing",
    ),
    ("unknown game", dict(paths=[run_dir("game", {**good, "game": "Pongg"})]), "unknown Atari 100k game 'Pongg'"),
    (
      "unknown baseline",
      dict(paths=[run_dir("base", good)], baselines=("Rainbow",)),
      "unknown baseline 'Rainbow': allowed are SimPLe, DrQ(eps), SPR",
    ),
    ("duplicate", dict(paths=[dup]), "duplicate run"),
  ]


def test_bad_inputs_raise_one_line_config_errors(tmp_path):
  for label, kwargs, expected in bad_cases(tmp_path / "cases"):
    out = tmp_path / f"out-{label}"
    with pytest.raises(ConfigError) as info:
      report.write_report(kwargs["paths"], out, reps=10, baselines=kwargs.get("baselines"))
    message = str(info.value)
    assert "\n" not in message, label
    assert expected in message, (label, message)
    assert not out.exists(), label
    if label == "unknown game":
      assert all(g in message for g in stats.atari100k_games()) and "result.json" in message


def test_report_never_writes_into_a_run_directory(tmp_path):
  runs = tmp_path / "runs"
  write_runs(runs, [result("Pong", 0, 1.0, 1.0)])
  run_dir = runs / "dreamer" / "Pong-seed0"
  with pytest.raises(ConfigError, match="lies in run directory"):
    report.write_report([runs], run_dir / "report", reps=10)
  assert sorted(p.name for p in run_dir.iterdir()) == ["result.json"]


def test_unknown_names_in_stats():
  with pytest.raises(ConfigError, match="did you mean 'MsPacman'"):
    stats.human_normalized(1.0, "MsPacMan")
  with pytest.raises(ConfigError, match="allowed are SimPLe"):
    stats.published_scores("BBF")
