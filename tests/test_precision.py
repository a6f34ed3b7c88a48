"""compute_dtype: bfloat16 matmuls and convolutions, float32 everywhere else. On a fixed batch the bfloat16
losses match float32 within a stated tolerance, with the same parameters; debug and CartPole still solve."""

import functools

import jax
import jax.numpy as jnp
import pytest
from test_learner import SMALL, _filled

from dreamer import config as config_lib
from dreamer import learner
from dreamer.agent import Agent
from dreamer.train import train

# |bf16 - f32| <= RTOL * |f32| + ATOL for every loss: bfloat16 keeps 8 bits of mantissa (relative error ~0.4%
# per rounding), and a loss sums many rounded products.
RTOL, ATOL = 0.03, 0.01
RESNET = dict(network="resnet", downsample=False, channels=8, res_blocks=1, head_channels=4, head_hidden=16)


def _losses(config, params, batch, key):
  agent = Agent(config, agent_spec(config))
  loss, aux = jax.jit(functools.partial(learner.loss_fn, model=agent.model, config=config))(params, batch, key)
  return {k: float(v) for k, v in aux.items() if k.startswith("loss/")}


def agent_spec(config):
  import worlds

  with worlds.make(config.world, num_envs=1, seed=0) as world:
    return world.spec


@pytest.mark.parametrize("world, extra", [("toy:chain", {}), ("minatar:Breakout", RESNET)])
def test_bfloat16_losses_match_float32_on_a_fixed_batch(world, extra):
  base = {**SMALL, "world": world, **extra}
  f32 = config_lib.Config(**base)
  bf16 = config_lib.Config(**base, compute_dtype="bfloat16")
  agent, state, rb = _filled(f32)
  batch, _ = learner.make_batch(state, rb, jax.random.PRNGKey(1), jnp.int32(240), model=agent.model, config=f32)
  want = _losses(f32, state.params, batch, None)
  got = _losses(bf16, state.params, batch, None)
  assert want.keys() == got.keys() and len(want) >= 4
  for k in want:
    assert abs(got[k] - want[k]) <= RTOL * abs(want[k]) + ATOL, (k, got[k], want[k])
  assert any(got[k] != want[k] for k in want)  # the bfloat16 path did run in bfloat16


def test_bfloat16_computes_in_bfloat16_and_returns_float32():
  config = config_lib.Config(**{**SMALL, "world": "minatar:Breakout", **RESNET}, compute_dtype="bfloat16")
  agent = Agent(config, agent_spec(config))
  params = agent.model.net.init(jax.random.PRNGKey(0), jnp.zeros((1, 10, 10, 4)), jnp.zeros((1,), jnp.int32))
  assert {x.dtype for x in jax.tree.leaves(params)} == {jnp.dtype(jnp.float32)}  # parameters stay float32
  obs = jnp.zeros((2, 10, 10, 4), bool)
  latent = agent.model.represent(params, obs)
  outputs = [latent, *agent.model.predict(params, latent), agent.model.project(params, latent, True)]
  assert all(x.dtype == jnp.float32 for x in outputs)
  text = str(jax.make_jaxpr(lambda p, o: agent.model.represent(p, o))(params, obs))
  assert "conv_general_dilated" in text and "bf16" in text


def test_debug_preset_solves_in_bfloat16(tmp_path):
  # The same in float32 (the Config default; the preset sets none) is
  # tests/test_train.py::test_debug_preset_reaches_optimal_return, on the suite's shared debug run.
  summary = train(config_lib.load("debug", ["compute_dtype=bfloat16"]), tmp_path, console=False)
  assert summary["solved"] and summary["eval/search_return"] == pytest.approx(1.0, abs=1e-6)


@pytest.mark.slow
def test_cartpole_solves_in_bfloat16(tmp_path):
  """The cartpole preset reaches a mean evaluation return of 475 (its stop_return) with search, seed 0. The same
  in float32 is tests/test_dream_search.py::test_cartpole_solves_in_float32, whose run a /dream test reuses."""
  config = config_lib.load("cartpole", ["compute_dtype=bfloat16", "total_env_steps=20000"])
  summary = train(config, tmp_path, console=False)
  assert summary["solved"], summary["eval/search_return"]
