"""`dreamer compare`: exact curves, thresholds, labels and intervals on hand-made runs; a real grid end to end."""

import json
import subprocess
import sys

import numpy as np
import pytest

from dreamer import compare
from dreamer import config as config_lib
from dreamer.logger import read_metrics


def fake_run(path, *, seed, sims, evals, total=400, stop_return=6.5, dream=None, world="toy:chain"):
  """A finished run directory: config.json and metrics.jsonl with evaluations [(env_steps, wall_s, search,
  policy)] and a closing summary."""
  config = config_lib.Config(
    seed=seed, num_simulations=sims, total_env_steps=total, stop_return=stop_return, world=world
  )
  path.mkdir(parents=True)
  (path / "config.json").write_text(json.dumps(config.to_dict()))
  lines = [{"env_steps": s, "wall_s": w, "eval/search_return": r, "eval/policy_return": p} for s, w, r, p in evals]
  last = evals[-1]
  summary = {
    "summary": True,
    "env_steps": last[0],
    "updates": 0,
    "wall_s": last[1] + 1.0,
    "stopped": None,
    "solved": last[2] >= stop_return,
    **(dream or {}),
  }
  (path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines + [summary]))
  return path


def test_step_values_carry_the_last_evaluation_forward():
  xs, ys = np.array([100, 200, 300]), np.array([1.0, 5.0, 3.0])
  got = compare._step_values(xs, ys, np.array([0, 100, 150, 200, 299, 300, 1000]))
  np.testing.assert_array_equal(got, [np.nan, 1.0, 1.0, 5.0, 5.0, 3.0, 3.0])


def test_summary_of_hand_made_runs(tmp_path):
  # Two configurations (num_simulations 4 and 8) x two seeds; the sims-8 seed-1 run stopped early at 400.
  a0 = fake_run(
    tmp_path / "a0", seed=0, sims=4, evals=[(200, 10, 1.0, 0.5), (400, 20, 3.0, 1.0), (600, 30, 5.0, 2.0)], total=600
  )
  a1 = fake_run(
    tmp_path / "a1", seed=1, sims=4, evals=[(200, 12, 2.0, 1.0), (400, 22, 4.0, 2.0), (600, 35, 4.0, 3.0)], total=600
  )
  b0 = fake_run(
    tmp_path / "b0", seed=0, sims=8, evals=[(200, 15, 4.0, 1.0), (400, 30, 6.0, 2.0), (600, 45, 7.0, 4.0)], total=600
  )
  b1 = fake_run(tmp_path / "b1", seed=1, sims=8, evals=[(200, 14, 2.0, 1.0), (400, 29, 6.5, 2.0)], total=600)
  runs = [compare.load_run(p) for p in (a0, a1, b0, b1)]
  assert compare.labels(runs) == ["num_simulations=4"] * 2 + ["num_simulations=8"] * 2
  summary = compare.summarize(runs, threshold=4.0, reps=500, seed=3)
  entries = summary["worlds"]["toy:chain"]
  a, b = entries["num_simulations=4"], entries["num_simulations=8"]
  assert list(entries) == ["num_simulations=4", "num_simulations=8"]  # ordered by dream ratio
  assert a["dream_ratio"] == 4.0  # rebuilt from the counters: 4 simulations per env step, no updates
  assert a["curve_steps"]["x"] == [200, 400, 600]
  assert a["curve_steps"]["mean"] == [1.5, 3.5, 4.5]
  assert b["curve_steps"]["mean"] == [3.0, 6.25, 6.75]  # seed 1 stopped at 400: its 6.5 is carried to 600
  assert b["stopped_early"] == [False, True]
  assert a["steps_to_threshold"] == [600, 400] and a["seconds_to_threshold"] == [30, 22]
  assert b["steps_to_threshold"] == [200, 400]
  assert a["final_search_per_seed"] == [5.0, 4.0] and a["final_policy_per_seed"] == [2.0, 3.0]
  mean, low, high = a["final_search"]
  assert mean == 4.5 and 4.0 <= low <= mean <= high <= 5.0
  # The same seed gives the same intervals; the wall-clock curve ends at the slowest run's end.
  again = compare.summarize(runs, threshold=4.0, reps=500, seed=3)
  assert again == summary
  assert a["curve_wall"]["x"][-1] == 36.0
  assert compare._median_reached([None, None, 3]) == "not reached"
  assert compare._median_reached([None, 5, 3]) == "5"


def test_a_key_newer_than_a_run_reads_as_its_default(tmp_path):
  old = fake_run(tmp_path / "old", seed=0, sims=4, evals=[(200, 10, 1.0, 0.5)])
  new = fake_run(tmp_path / "new", seed=1, sims=4, evals=[(200, 10, 2.0, 0.5)])
  other = fake_run(tmp_path / "other", seed=0, sims=8, evals=[(200, 10, 2.0, 0.5)])
  config = json.loads((old / "config.json").read_text())
  del config["q_range_floor"]  # as written before the key existed
  (old / "config.json").write_text(json.dumps(config))
  runs = [compare.load_run(p) for p in (old, new, other)]
  assert runs[0].config["q_range_floor"] == config_lib.Config().q_range_floor
  assert compare.labels(runs) == ["num_simulations=4", "num_simulations=4", "num_simulations=8"]


def test_logged_dream_ratio_is_used_when_present(tmp_path):
  dream = {"dream/ratio": 50.0, "dream/act_ratio": 10.0, "dream/reanalyse_ratio": 0.0, "dream/unroll_ratio": 40.0}
  run = compare.load_run(fake_run(tmp_path / "r", seed=0, sims=4, evals=[(100, 1, 0.0, 0.0)], dream=dream))
  assert run.dream == dream


def test_bad_input_is_one_clear_line(tmp_path):
  with pytest.raises(config_lib.ConfigError, match="unknown config key 'num_sims'"):
    compare.parse_grid(["num_sims=2,4"])
  with pytest.raises(config_lib.ConfigError, match="must be an integer"):
    compare.parse_grid(["num_simulations=2,4.5"])
  with pytest.raises(config_lib.ConfigError, match="given twice"):
    compare.parse_grid(["num_simulations=2", "num_simulations=4"])
  with pytest.raises(config_lib.ConfigError, match="has not finished"):
    (tmp_path / "unfinished").mkdir()
    (tmp_path / "unfinished" / "config.json").write_text(json.dumps(config_lib.Config().to_dict()))
    (tmp_path / "unfinished" / "metrics.jsonl").write_text("")
    compare.load_run(tmp_path / "unfinished")


@pytest.mark.slow
def test_grid_end_to_end(tmp_path):
  """A grid of two configurations of the debug preset run as subprocesses, two at a time; then re-issued
  (nothing reruns)."""
  cmd = [
    sys.executable,
    "-m",
    "dreamer.cli",
    "compare",
    "--config",
    "debug",
    "--grid",
    "num_simulations=2,4",
    "--seeds",
    "3",
    "--logdir",
    str(tmp_path / "cmp"),
    "--jobs",
    "2",
    "--threshold",
    "1.0",
    "--quiet",
    "--set",
    "eval_episodes=4",
    "--reps",
    "200",
  ]
  done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
  assert done.returncode == 0, done.stderr
  out = tmp_path / "cmp" / "report"
  assert {p.name for p in out.iterdir()} == {"report.md", "curves.png", "summary.json", "scaling.png"}
  summary = json.loads((out / "summary.json").read_text())
  entries = summary["worlds"]["toy:chain"]
  assert sorted(entries) == ["num_simulations=2", "num_simulations=4"]  # (in the order of their dream ratios)
  for sims in (2, 4):
    entry = entries[f"num_simulations={sims}"]
    assert entry["seeds"] == [3]
    for run_dir, reached in zip(entry["runs"], entry["steps_to_threshold"]):
      records = read_metrics(run_dir)
      evals = [r for r in records if "eval/search_return" in r and not r.get("summary")]
      assert reached == next((r["env_steps"] for r in evals if r["eval/search_return"] >= 1.0), None)
      # The run's own count: its acting part is num_simulations per env step.
      assert records[-1]["dream/act_ratio"] == sims
  assert "| num_simulations=4 | 1 |" in (out / "report.md").read_text()
  logs = sorted((tmp_path / "cmp").rglob("seed*.log"))
  sizes = [p.stat().st_size for p in logs]
  again = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
  assert again.returncode == 0, again.stderr
  assert [p.stat().st_size for p in logs] == sizes  # finished runs were not started again


def test_plan_refuses_duplicate_runs_and_runs_of_other_settings(tmp_path):
  with pytest.raises(config_lib.ConfigError, match="names run .* twice"):
    compare.plan("debug", overrides=[], grid=["num_simulations=2,2"], worlds=None, seeds=[0], logdir=tmp_path)
  runs = compare.plan("debug", overrides=[], grid=["num_simulations=2"], worlds=None, seeds=[0], logdir=tmp_path)
  runs[0].run_dir.mkdir(parents=True)
  other = config_lib.load("debug", ["num_simulations=2", "learning_rate=0.5"])
  (runs[0].run_dir / "config.json").write_text(json.dumps(other.to_dict()))
  with pytest.raises(config_lib.ConfigError, match="config differs from this command's in learning_rate"):
    compare.plan("debug", overrides=[], grid=["num_simulations=2"], worlds=None, seeds=[0], logdir=tmp_path)


def test_runs_before_the_count_get_it_rebuilt_from_their_counters(tmp_path):
  run = compare.load_run(fake_run(tmp_path / "r", seed=0, sims=4, evals=[(400, 1, 0.0, 0.0)]))
  config = config_lib.Config(num_simulations=4, total_env_steps=400, stop_return=6.5)
  # 400 env steps / 8 envs x (8 envs x 4 simulations) = 1600 act; the summary reports no updates (0).
  assert run.dream["dream/act_ratio"] == 1600 / 400 == compare.dream_ratio.act_steps(config) / config.num_envs
  assert run.dream["dream/unroll_ratio"] == 0.0


def test_first_reach_is_the_first_evaluation_at_or_above_the_threshold():
  assert compare.first_reach([1.0, np.nan, 4.0, 5.0, 3.0], 4.0) == 2  # equal counts; NaN never reaches
  assert compare.first_reach(np.array([5.0, 1.0]), 4.0) == 0
  assert compare.first_reach([1.0, 2.0], 4.0) is None
  assert compare.first_reach([], 4.0) is None


def test_minatar_report_shows_the_published_references(tmp_path):
  # The MinAtar paper's DQN at 0.1M / 1M / 5M frames and AC(lambda) at 5M, as shipped (dreamer/data).
  from dreamer import stats

  assert stats.reference_returns("minatar:Freeway") == [
    ("DQN", 100_000, 5.5), ("DQN", 1_000_000, 47.0), ("DQN", 5_000_000, 50.0), ("AC(lambda)", 5_000_000, 47.0)
  ]  # fmt: skip
  games = {g for g, *_ in stats._minatar_reference()}
  assert games == {"Breakout", "Asterix", "Freeway", "SpaceInvaders", "Seaquest"}
  assert stats.reference_returns("toy:chain") == [] and stats.reference_returns("minatar:Nothing") == []
  run = fake_run(tmp_path / "r", seed=0, sims=4, evals=[(100, 1, 2.0, 1.0)], world="minatar:Breakout")
  summary = compare.write_report([run], tmp_path / "out", threshold=5.0, reps=50)
  text = (tmp_path / "out" / "report.md").read_text()
  assert "| DQN @ 1M env steps (published) | — | — | 9 | — | — | — | — |" in text
  assert "| AC(lambda) @ 5M env steps (published) | — | — | 17.5 |" in text
  assert "Young & Tian 2019" in text and (tmp_path / "out" / "curves.png").stat().st_size > 0
  assert list(summary["worlds"]) == ["minatar:Breakout"]
  assert not (tmp_path / "out" / "scaling.png").exists() and "scaling.png" not in text  # one dream ratio only


def test_scaling_figure_appears_for_worlds_with_two_dream_ratios(tmp_path):
  """The dreaming scaling curve: drawn (and linked from the report) for a world whose configurations differ in
  dream ratio, and only for such worlds."""
  runs = [
    fake_run(tmp_path / f"{w}{sims}", seed=0, sims=sims, evals=[(100, 1, float(sims), 1.0)], world=w)
    for w, sims in [("minatar:Breakout", 4), ("minatar:Breakout", 32), ("toy:chain", 4)]
  ]
  summary = compare.write_report(runs, tmp_path / "out", threshold=None, reps=50)
  assert compare.scaling_worlds(summary) == ["minatar:Breakout"]
  text = (tmp_path / "out" / "report.md").read_text()
  breakout, chain = text.split("## toy:chain")
  assert "![scaling](scaling.png)" in breakout and "scaling.png" not in chain
  assert (tmp_path / "out" / "scaling.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_reference_far_above_the_data_is_named_not_drawn():
  from dreamer import plots, stats

  refs = {f"{m} @ {compare._steps_label(n)}": r for m, n, r in stats.reference_returns("minatar:SpaceInvaders")}
  ax = plots.figure().subplots()
  compare.draw_references(ax, "minatar:SpaceInvaders", top=16.0)
  drawn = sorted(float(line.get_ydata()[0]) for line in ax.lines if len(line.get_ydata()))
  named = [line.get_label() for line in ax.lines if not len(line.get_ydata())]
  assert drawn == sorted(r for r in refs.values() if r <= 32.0) and len(drawn) >= 2
  assert named == [f"{k} (published): {r:g}, above" for k, r in refs.items() if r > 32.0] and named
