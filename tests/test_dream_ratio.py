"""The dream ratio: the logged model-step counts equal a hand count and the dynamics calls really made."""

import jax
import pytest

from dreamer import config as config_lib
from dreamer import dream_ratio
from dreamer import train as train_lib
from dreamer.agent import Agent
from dreamer.logger import read_metrics
from dreamer.networks import Model

# A toy run small enough to count by hand: 2 envs, 20 acting steps (40 env steps), learning from env step 8,
# 0.5 updates per env step paid in chunks of 2.
SETTINGS = dict(
  world="toy:chain",
  num_envs=2,
  total_env_steps=40,
  num_simulations=4,
  max_considered_actions=2,
  batch_size=8,
  unroll_steps=3,
  td_steps=2,
  reanalyze_fraction=0.5,
  updates_per_env_step=0.5,
  updates_per_chunk=2,
  learning_starts=8,
  replay_capacity=64,
  eval_every=0,
  eval_episodes=2,
  checkpoint_every_updates=0,
  latent_dim=8,
  hidden_dim=16,
  lstm_dim=8,
  proj_dim=8,
)


def test_planned_ratio_by_hand():
  config = config_lib.Config(**SETTINGS)
  # act: 4 simulations per env step; reanalyse: round(0.5 * 8) = 4 samples x (3 + 1) roots x 4 simulations
  # = 64 per update, x 0.5 updates per env step = 32; unroll: 8 samples x 3 steps = 24 per update -> 12.
  assert dream_ratio.planned_ratio(config) == {"act": 4.0, "reanalyse": 32.0, "unroll": 12.0, "total": 48.0}
  none = config_lib.Config(**{**SETTINGS, "search": "none"})
  assert dream_ratio.planned_ratio(none) == {"act": 0.0, "reanalyse": 0.0, "unroll": 12.0, "total": 12.0}


@pytest.mark.parametrize(
  "search", ["gumbel", pytest.param("puct", marks=pytest.mark.slow), pytest.param("none", marks=pytest.mark.slow)]
)
def test_logged_dreams_equal_a_hand_count_and_the_dynamics_calls_made(search, tmp_path, monkeypatch):
  made = []  # samples passed through the dynamics network, counted when the compiled code runs
  call = Model.call  # every network call of search, acting and learning passes here

  def counted(self, params, method, *args, **kwargs):
    if method == "dynamics":
      rows = args[0].shape[0]
      jax.debug.callback(lambda: made.append(rows))
    return call(self, params, method, *args, **kwargs)

  monkeypatch.setattr(Model, "call", counted)
  # Evaluation searches are not training's dreams: leave them out of the count.
  monkeypatch.setattr(Agent, "evaluate", lambda *a, **k: {"eval/search_return": 0.0})
  config = config_lib.Config(**{**SETTINGS, "search": search})
  summary = train_lib.train(config, tmp_path / "run", console=False)
  jax.effects_barrier()

  # By hand: 20 acting steps x 2 envs x 4 simulations = 160 (0 without search). Updates are owed from env
  # step 8 on: the steps reaching 8, 10, ..., 40 are 17 acting steps x 2 env steps x 0.5 = 17 updates owed,
  # paid 2 at a time: 16 updates. Reanalyse: 16 x 64 = 1024 (0 without search); unroll: 16 x 24 = 384.
  act, reanalyse = (0, 0) if search == "none" else (160, 1024)
  assert summary["env_steps"] == 40 and summary["updates"] == 16
  assert summary["dream/model_steps"] == act + reanalyse + 384
  assert summary["dream/act_ratio"] == act / 40
  assert summary["dream/reanalyse_ratio"] == reanalyse / 40
  assert summary["dream/unroll_ratio"] == 384 / 40
  assert summary["dream/ratio"] == (act + reanalyse + 384) / 40
  # The instrumented count: every dynamics call the compiled acting and learning code made.
  assert sum(made) == act + reanalyse + 384
  records = [r for r in read_metrics(tmp_path / "run") if "dream/model_steps" in r and not r.get("summary")]
  assert records and all(r["dream/model_steps"] <= summary["dream/model_steps"] for r in records)
