"""Agents share their jitted functions within a process (`agent.programs`): configs that differ only in keys the
host loop alone reads get the same functions, which compute what functions built for each config would."""

import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import worlds
from dreamer import config as config_lib
from dreamer.agent import HOST_ONLY, Agent, build_programs
from dreamer.learner import reciprocal


def _spec(config):
  with worlds.make(config.world, num_envs=1, seed=0) as world:
    return world.spec


# Every HOST_ONLY key changed from the debug preset's value.
CHANGED = [
  "seed=7", "total_env_steps=3000", "stop_return=inf", "learning_starts=300", "eval_every=500", "eval_episodes=3",
  "eval_max_steps=20", "checkpoint_every_updates=16", "checkpoints_kept=5", "tensorboard=false", "video=true",
]  # fmt: skip


def test_agents_differing_in_host_only_keys_share_programs_that_compute_what_their_own_would():
  base = config_lib.load("debug", ["total_env_steps=800"])
  other = config_lib.load("debug", CHANGED)
  assert {c.split("=")[0] for c in CHANGED} == set(HOST_ONLY)
  assert all(getattr(base, k) != getattr(other, k) for k in HOST_ONLY)
  spec = _spec(base)
  a, b = Agent(base, spec), Agent(other, spec)
  for name in ["act", "policy_act", "eval_act", "add", "explore_draw", "held_draw", "model"]:
    assert getattr(a, name) is getattr(b, name), name
  assert a.train_chunk.target is b.train_chunk.target
  # Each is bound to its own run's length, which the chunk takes as a value.
  assert a.train_chunk.inv_total_env_steps == reciprocal(800)
  assert b.train_chunk.inv_total_env_steps == reciprocal(3000)
  # A key that reaches the programs gives other programs.
  c = Agent(config_lib.load("debug", ["total_env_steps=800", "discount=0.9"]), spec)
  assert c.train_chunk.target is not a.train_chunk.target and c.act is not a.act
  # An Agent's attributes are its own: replacing one leaves the shared programs and the other Agents alone.
  a.act = None
  assert b.act is not None and Agent(base, spec).act is b.act

  # What b's own functions would compute: built from its own config, not from the shared key's.
  own = build_programs.__wrapped__(other, spec)
  state, rb = b.init(jax.random.PRNGKey(0))
  obs = jnp.zeros((other.num_envs, *b.obs_shape), spec.obs_dtype)
  key, env_step = jax.random.PRNGKey(1), jnp.int32(0)
  assert own.act.lower(state.params, obs, key, 1.0).as_text() == b.act.lower(state.params, obs, key, 1.0).as_text()
  own_chunk = own.train_chunk.target.lower(state, rb, env_step, reciprocal(3000)).as_text()
  assert own_chunk == b.train_chunk.lower(state, rb, env_step).as_text()
  assert np.float32(own.train_chunk.inv_total_env_steps) == b.train_chunk.inv_total_env_steps


@pytest.fixture(scope="module")
def built_before():
  """An agent built before the test below starts (as an earlier test's would be)."""
  config = config_lib.load("debug")
  return Agent(config, _spec(config))


def test_a_monkeypatch_of_traced_code_drops_the_programs_and_other_patches_keep_them(
  built_before, monkeypatch, tmp_path
):
  # tests/conftest.py: an agent built after a patch of dreamer's (or jax's) code must trace the patch; a test
  # that patches only the working directory, the environment or sys keeps what earlier tests built.
  import sys

  from dreamer import networks

  config, first = built_before.config, built_before
  spec = first.spec
  monkeypatch.chdir(tmp_path)
  monkeypatch.setenv("DREAMER_TEST_PATCH", "1")
  monkeypatch.setattr(sys, "argv", ["x"])
  monkeypatch.setattr(f"{__name__}._spec", _spec)
  assert Agent(config, spec).act is first.act
  with monkeypatch.context() as patch:  # a patch made through a context is seen too, and so is its undo
    patch.setattr(networks.Model, "call", networks.Model.call)
    assert build_programs.cache_info().currsize == 0
    assert Agent(config, spec).act is not first.act
    assert build_programs.cache_info().currsize == 1
  assert build_programs.cache_info().currsize == 0
  Agent(config, spec)
  monkeypatch.setattr("dreamer.learner.reciprocal", reciprocal)  # a string target
  assert build_programs.cache_info().currsize == 0
  Agent(config, spec)
  monkeypatch.undo()  # the fixture's end does the same
  assert build_programs.cache_info().currsize == 0


def test_files_go_to_the_workers_heaviest_first_keeping_the_order_within_a_file():
  from conftest import FILE_SECONDS, heaviest_files_first

  ids = ["tests/test_a.py::x", "tests/test_b.py::x", "tests/test_a.py::y", "tests/test_c.py::x", "tests/test_b.py::y"]
  order = heaviest_files_first(ids, {"test_b.py": 5.0, "test_c.py": 9.0})
  assert [ids[i] for i in order] == [
    "tests/test_c.py::x", "tests/test_b.py::x", "tests/test_b.py::y", "tests/test_a.py::x", "tests/test_a.py::y"
  ]  # fmt: skip
  # A renamed or deleted file would silently fall to the end: every weighed file exists.
  here = pathlib.Path(__file__).parent
  assert [name for name in FILE_SECONDS if not (here / name).is_file()] == []
