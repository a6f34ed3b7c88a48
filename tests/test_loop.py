"""The training loop's schedule, driven with a fake agent and a fake world: exact counters, no jit, no learning.

Settings: 2 envs, 40 env steps (20 acting steps), updates owed from env step 8 at 0.5 per env step and paid
2 at a time, an evaluation every 10 env steps, a checkpoint every 4 updates.
"""

from types import SimpleNamespace
from typing import NamedTuple

import numpy as np
import pytest

import worlds
from dreamer import config as config_lib
from dreamer import schedule
from dreamer import train as train_lib

SETTINGS = dict(
  world="toy:chain",
  num_envs=2,
  total_env_steps=40,
  learning_starts=8,
  updates_per_env_step=0.5,
  updates_per_chunk=2,
  eval_every=10,
  checkpoint_every_updates=4,
  stop_return=100.0,
)


class FakeState(NamedTuple):
  params: np.ndarray
  target_params: np.ndarray
  opt_state: np.ndarray
  updates: int


class FakeAgent:
  """Records what the loop asked of it; every update has a finite loss unless `nan_at` names its chunk, and
  finite weights unless `nan_weights_at` does (with a finite loss)."""

  def __init__(self, config, *, eval_returns=(), nan_at=None, nan_weights_at=None):
    self.config, self.eval_returns, self.nan_at, self.nan_weights_at = (
      config,
      list(eval_returns),
      nan_at,
      nan_weights_at,
    )
    self.chunks_at, self.rows, self.temperatures = [], 0, []

  def init(self, rng_key):
    zeros = np.zeros(2, np.float32)
    return FakeState(zeros, zeros, zeros, 0), {"count": np.zeros(1, np.int64)}

  def act(self, params, obs, rng_key, temperature, held=None):
    assert held is None  # these configs hold no noise
    self.temperatures.append(temperature)
    b = obs.shape[0]
    return SimpleNamespace(action=np.zeros(b, np.int32), policy=np.full((b, 2), 0.5), value=np.zeros(b))

  def add(self, rb, row, final_obs, ended, terminated):
    self.rows += len(row.action)
    return rb

  def train_chunk(self, state, rb, env_step):
    self.chunks_at.append(int(env_step))
    n = self.config.updates_per_chunk
    loss = np.full(n, np.nan if len(self.chunks_at) == self.nan_at else 1.0, np.float32)
    metrics = {k: loss for k in train_lib.LOSS_KEYS}
    if len(self.chunks_at) == self.nan_weights_at:
      state = state._replace(params=np.array([0.0, np.inf], np.float32))
    return state._replace(updates=state.updates + n), rb, metrics

  def evaluate(self, world, params, rng_key, *, record=None):
    ret = self.eval_returns.pop(0) if self.eval_returns else 0.0
    return {"eval/search_return": ret, "eval/policy_return": ret}


class FakeWorld:
  """B envs of 1-float observations; every env's episode ends (return 1) on every 3rd step."""

  spec = worlds.Spec((1,), np.dtype(np.float32), 2)

  def __init__(self, num_envs):
    self.b, self.t = num_envs, 0

  def reset(self, seed):
    return np.zeros((self.b, 1), np.float32)

  def step(self, action):
    self.t += 1
    end = np.full(self.b, self.t % 3 == 0)
    obs = np.full((self.b, 1), self.t, np.float32)
    return worlds.Step(
      obs=obs,
      reward=np.ones(self.b, np.float32),
      terminated=end,
      truncated=np.zeros(self.b, bool),
      final_obs=obs,
      episode_return=np.where(end, 1.0, np.nan).astype(np.float32),
      episode_length=np.where(end, 3, 0).astype(np.int32),
    )

  def get_state(self):
    return b""


class FakeCheckpoints:
  def __init__(self):
    self.saved = []  # (env_steps, updates) of each save
    self.progress = []  # the loop's counters saved with each

  def steps(self):
    return [step for step, _ in self.saved]

  def save(self, step, params, state, meta):
    self.saved.append((step, meta["progress"]["updates"]))
    self.progress.append(meta["progress"])

  def wait(self):
    pass

  def path(self, step):
    return f"checkpoints/{step}"


class FakeLog:
  def __init__(self, path):
    self.records, self.path = [], path
    path.write_text("")

  def write(self, record):
    self.records.append(record)


def run(tmp_path, *, stop_after_updates=None, settings=(), **kwargs):
  tmp_path.mkdir(parents=True, exist_ok=True)
  config = config_lib.Config(**SETTINGS, **dict(settings))
  agent = FakeAgent(config, **kwargs)
  log, ckpts = FakeLog(tmp_path / "metrics.jsonl"), FakeCheckpoints()
  world = FakeWorld(config.num_envs)
  parts = train_lib.Parts(config, agent, world, FakeWorld(4), log, ckpts, tmp_path, console=False)
  signals = SimpleNamespace(received=None)
  summary = train_lib.run_loop(parts, changed={}, signals=signals, stop_after_updates=stop_after_updates)
  return summary, agent, log, ckpts


def test_loop_counters_and_schedule_are_exact(tmp_path):
  summary, agent, log, ckpts = run(tmp_path)
  # Updates are owed from env step 8 on: 17 acting steps x 2 env steps x 0.5 = 17 owed, paid 2 at a time,
  # whenever 2 are owed: at env steps 10, 14, ..., 38, 16 updates, 1 still owed at the end.
  assert agent.chunks_at == [10, 14, 18, 22, 26, 30, 34, 38]
  assert summary["env_steps"] == 40 and summary["updates"] == 16 and agent.rows == 40
  # Every 3rd acting step ends both envs' episodes: 6 steps x 2 envs.
  assert summary["episodes"] == 12
  evals = [r["env_steps"] for r in log.records if "eval/search_return" in r and not r.get("summary")]
  assert evals == [10, 20, 30, 40]
  # A checkpoint when the updates reach 4, 8, 12, 16 (after the chunks at 14, 22, 30, 38), and one at the end.
  assert ckpts.saved == [(14, 4), (22, 8), (30, 12), (38, 16), (40, 16)]
  training = [r for r in log.records if "loss/total" in r]
  assert [r["env_steps"] for r in training] == agent.chunks_at
  assert summary["stopped"] is None and not summary["solved"]


def test_checkpoints_hold_the_debt_and_the_next_due_times(tmp_path):
  config = config_lib.Config(**SETTINGS)
  assert train_lib.clocks(config) == (schedule.Every(10), schedule.Every(4), schedule.Ratio(0.5, 2, start=8))
  _, _, _, ckpts = run(tmp_path)
  # At env step 14 (update 4): nothing owed (the 2 owed were just paid); next evaluation at 20, checkpoint at 8.
  first, last = ckpts.progress[0], ckpts.progress[-1]
  assert (first["env_steps"], first["owed"], first["next_eval"], first["next_checkpoint"]) == (14, 0.0, 20, 8)
  # At the end: 1 update still owed (17 owed, 16 paid), the next evaluation and checkpoint past the run.
  assert (last["env_steps"], last["owed"], last["next_eval"], last["next_checkpoint"]) == (40, 1.0, 50, 20)
  assert last["episodes"] == 12 and last["recent_returns"] == [1.0] * 12


def test_loop_stops_when_evaluation_solves(tmp_path):
  summary, agent, log, ckpts = run(tmp_path, eval_returns=[0.0, 100.0])
  assert summary["solved"] and summary["env_steps"] == 20
  assert summary["eval/search_return"] == 100.0
  assert ckpts.saved == [(14, 4), (20, 6)]


def test_loop_stops_after_updates_with_a_checkpoint(tmp_path):
  summary, agent, log, ckpts = run(tmp_path, stop_after_updates=6)
  assert summary["stopped"] == "stop_after_updates"
  assert summary["updates"] == 6 and summary["env_steps"] == 18
  assert ckpts.saved == [(14, 4), (18, 6)]


def test_loop_names_the_first_non_finite_update_and_saves_nothing_of_it(tmp_path):
  with pytest.raises(train_lib.Diverged, match=r"non-finite loss at update 5 \(env step 18\)"):
    run(tmp_path, nan_at=3)
  # (the third chunk, updates 5-6, paid at env step 18)


def test_loop_never_saves_non_finite_weights(tmp_path):
  # The chunk at env step 18 leaves an infinite weight with a finite loss; the checkpoint due at update 8
  # (env step 22) must not be written: the run stops, naming the weight and the last good checkpoint.
  with pytest.raises(train_lib.Diverged, match=r"non-finite weights at \['params'\] .*checkpoints/14") as info:
    run(tmp_path, nan_weights_at=3)
  assert "after update 8 (env step 22)" in str(info.value)


@pytest.mark.parametrize(
  "period, counts, fired",
  [(10, [8, 10, 12, 20, 26, 29, 30], [10, 20, 30]), (4, [3, 4, 9, 12, 13], [4, 9, 12]), (0, [0, 5, 100], [])],
)
def test_every_fires_on_each_multiple_reached(period, counts, fired):
  clock, got = schedule.Every(period), []
  next_at = clock.first()
  for count in counts:
    if clock.due(count, next_at):
      got.append(count)
      next_at = clock.following(count)
  assert got == fired


def test_ratio_pays_whole_chunks_and_keeps_the_fraction():
  ratio = schedule.Ratio(0.3, 2, start=4)
  assert ratio.owe(0.0, 2, done=2) == 0.0  # before `start`
  owed = ratio.owe(0.0, 2, done=4)
  assert ratio.pay(owed) == (0, 0.6)
  assert ratio.pay(5.5) == (2, 1.5)


def test_acting_follows_the_temperature_schedule_only_when_training_learns_from_search(tmp_path):
  # 20 acting steps at env steps 0, 2, ..., 38; the default schedule (1, 0.5, 0.25) moves at 50% and 75%.
  _, agent, _, _ = run(tmp_path / "search")
  assert agent.temperatures == [1.0] * 10 + [0.5] * 5 + [0.25] * 5
  # The policy alone learns from the actions it took: it is sampled at 1 throughout, trained with or without
  # a search to evaluate with.
  for name, settings in (("none", {"search": "none"}), ("off", {"train_search": False})):
    _, agent, _, _ = run(tmp_path / name, settings=settings)
    assert agent.temperatures == [1.0] * 20
