"""End to end: the debug preset learns the toy world; the CLI evaluates its checkpoint (bad input: see
test_bad_input.py)."""

import json

import pytest

import worlds
from dreamer import cli
from dreamer.logger import read_metrics


def test_debug_preset_reaches_optimal_return(debug_run):
  # How fast it gets there is a benchmark, not a test (a shared machine's load is not the code's):
  # python scripts/solve_time.py --config debug --threshold 1 --within-s 60
  config, run_dir, summary = debug_run
  optimal = worlds.make(config.world, num_envs=1).optimal_return
  assert optimal == 1.0
  assert summary["solved"]
  assert summary["eval/search_return"] == pytest.approx(optimal, abs=1e-6)


def test_run_directory_holds_metrics_config_and_checkpoint(debug_run):
  config, run_dir, summary = debug_run
  records = read_metrics(run_dir)
  assert records[-1]["summary"] is True
  evals = [r for r in records if "eval/search_return" in r]
  assert evals and all("eval/policy_return" in r for r in evals)
  train_records = [r for r in records if "loss/total" in r]
  assert train_records and all(r["updates"] > 0 for r in train_records)
  steps = [r["env_steps"] for r in records]
  assert steps == sorted(steps)
  assert json.loads((run_dir / "config.json").read_text()) == config.to_dict()
  assert list((run_dir / "checkpoints").iterdir())


def test_cli_eval_reads_the_checkpoint(debug_run, capsys):
  _, run_dir, summary = debug_run
  assert cli.main(["eval", "--checkpoint", str(run_dir), "--episodes", "4"]) == 0
  out = json.loads(capsys.readouterr().out)
  assert out["search_return"] == pytest.approx(summary["eval/search_return"], abs=1e-6)
  assert out["episodes"] == 4
  for mode in ["search", "policy"]:
    returns = out[f"{mode}_returns"]
    assert len(returns) == 4 and sum(returns) / 4 == pytest.approx(out[f"{mode}_return"])
    low, high = out[f"{mode}_return_ci95"]
    assert min(returns) <= low <= out[f"{mode}_return"] <= high <= max(returns)


def test_cli_eval_samples_at_a_temperature_and_is_seeded(debug_run, capsys):
  # Greedy, the trained chain agent always walks right; sampling at a huge temperature is a random walk on the
  # chain, which ends some of 16 games at the left trap or the time limit. The same seed replays the same games.
  _, run_dir, _ = debug_run
  runs = []
  for temperature in ["0", "1000", "1000"]:
    args = ["eval", "--checkpoint", str(run_dir), "--episodes", "16", "--seed", "3", "--temperature", temperature]
    assert cli.main(args) == 0
    runs.append(json.loads(capsys.readouterr().out))
  greedy, hot, again = runs
  assert greedy["temperature"] == 0 and hot["temperature"] == 1000
  for mode in ["search", "policy"]:
    assert greedy[f"{mode}_returns"] == [1.0] * 16
    assert min(hot[f"{mode}_returns"]) < 1.0
    assert hot[f"{mode}_returns"] == again[f"{mode}_returns"]


def test_cli_eval_searches_with_the_settings_given(debug_run, capsys, monkeypatch):
  # --search-set changes the search over the checkpoint's own networks: the act function is built from the
  # changed config and the JSON records it; search 'none' then plays exactly as the policy alone does.
  from dreamer import actor as actor_lib

  _, run_dir, _ = debug_run
  seen, make_act = [], actor_lib.make_act
  monkeypatch.setattr(actor_lib, "make_act", lambda model, config: seen.append(config) or make_act(model, config))
  sets = ["--search-set", "search=none", "--search-set", "q_range_floor=0.5"]
  assert cli.main(["eval", "--checkpoint", str(run_dir), "--episodes", "8", "--seed", "3", *sets]) == 0
  out = json.loads(capsys.readouterr().out)
  # The last act function built is evaluation's (loading the checkpoint builds its own first).
  assert seen[0].search == "gumbel" and (seen[-1].search, seen[-1].q_range_floor) == ("none", 0.5)
  assert out["search_set"] == {"search": "none", "q_range_floor": 0.5}
  assert out["search_returns"] == out["policy_returns"]


@pytest.fixture(scope="module")
def policy_only_runs(tmp_path_factory):
  """A directory holding two debug runs of 1200 env steps that act with the policy alone in training:
  'none' (search=none) and 'off' (train_search=false)."""
  from dreamer import config as config_lib
  from dreamer.train import train

  tmp_path = tmp_path_factory.mktemp("policy_only")
  common = ["total_env_steps=1200", "stop_return=inf", "eval_every=600"]
  for name, extra in {"none": "search=none", "off": "train_search=false"}.items():
    train(config_lib.load("debug", [*common, extra]), tmp_path / name, console=False)
  return tmp_path


def test_train_search_off_trains_exactly_as_search_none_and_evaluates_with_search(policy_only_runs):
  # train_search=false: every training record (losses, counts, dream ratio) is search 'none''s to the bit, while
  # evaluation's act function searches (its policy is not the prior's softmax, as search 'none''s is).
  import jax
  import numpy as np

  from dreamer import agent as agent_lib

  tmp_path = policy_only_runs

  def training(run_dir):
    keep = ("loss/", "train/", "dream/", "updates", "env_steps", "episodes")
    return [{k: v for k, v in r.items() if k.startswith(keep)} for r in read_metrics(run_dir) if "loss/total" in r]

  assert len(training(tmp_path / "none")) > 5 and training(tmp_path / "none") == training(tmp_path / "off")
  assert all(r["dream/act_ratio"] == 0 for r in training(tmp_path / "off"))

  for name, searches in [("none", False), ("off", True)]:  # the run's trained networks (identical in both)
    config, world, _, _, params, _ = agent_lib.load_acting(tmp_path / name, None, num_envs=4, seed=0, train=False)
    obs = world.reset(0)
    agent = agent_lib.Agent(config, world.spec)
    trained = agent.act(params, obs, jax.random.PRNGKey(1), 1.0).policy
    evaluated = agent.eval_act(params, obs, jax.random.PRNGKey(1), 0.0).policy
    np.testing.assert_array_equal(trained, agent.act(params, obs, jax.random.PRNGKey(2), 0.0).policy)  # the prior
    world.close()
    gap = np.abs(np.asarray(evaluated) - np.asarray(trained)).max()
    assert gap > 1e-4 if searches else gap == 0


def test_cli_play_defaults_to_the_checkpoints_last_training_temperature(policy_only_runs, debug_run, capsys):
  # A search run's last stage of the schedule, with search or with --policy; 1 for runs whose training acted
  # with the policy alone (search none, train_search off), which never follow the schedule.
  config, search_run, _ = debug_run
  assert config.temperatures[-1] != 1.0  # the two cases differ
  cases = [(search_run, [], config.temperatures[-1]), (search_run, ["--policy"], config.temperatures[-1])]
  cases += [(policy_only_runs / name, flags, 1.0) for name in ("none", "off") for flags in ([], ["--policy"])]
  for i, (run_dir, flags, expected) in enumerate(cases):
    out = policy_only_runs / f"play-{i}"
    args = ["play", "--checkpoint", str(run_dir), "--steps", "8", "--envs", "2", "--out", str(out), *flags]
    assert cli.main(args) == 0
    assert json.loads((out / "experience.json").read_text())["temperature"] == expected, (run_dir, flags)
