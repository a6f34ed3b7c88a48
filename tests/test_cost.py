"""The cost model (dreamer/cost.py): XLA's count of a tiny MLP against a hand count, the loop that XLA counts
once and the search's trip counts put back in, the roofline's arithmetic, and scripts/cost.py end to end."""

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import pytest

from dreamer import agent as agent_lib
from dreamer import config as config_lib
from dreamer import cost
from dreamer import search as search_lib

B, D, H, OUT = 32, 64, 128, 16  # batch, input, hidden and output widths of the tiny MLP
ROOT = Path(__file__).resolve().parent.parent


def mlp(x, w1, b1, w2, b2):
  """x f32[B, D] -> dense H -> relu -> dense OUT: f32[B, OUT]."""
  return jax.nn.relu(x @ w1 + b1) @ w2 + b2


def mlp_args(out: int = OUT):
  return [jax.ShapeDtypeStruct(s, jnp.float32) for s in [(B, D), (D, H), (H,), (H, out), (out,)]]


def test_tiny_mlp_matches_the_hand_count():
  got = cost.xla_cost(mlp, *mlp_args())
  matmuls = 2 * B * (D * H + H * OUT)  # a multiply and an add per weight per sample
  elementwise = B * H + B * OUT + B * H  # XLA counts one flop per output element: the bias adds and the relu
  assert abs(got.flops - matmuls) / matmuls < 0.05
  assert got.flops == matmuls + elementwise
  least_bytes = 4 * (B * D + D * H + H + H * OUT + OUT + B * OUT)  # every input read and the output written once
  assert got.bytes >= least_bytes


def test_jitted_function_costs_the_same():
  assert cost.xla_cost(jax.jit(mlp), *mlp_args()) == cost.xla_cost(mlp, *mlp_args())


def test_xla_counts_a_loop_body_once():
  n = 10

  def looped(x, w1, b1, w2, b2):
    return jax.lax.fori_loop(0, n, lambda _, y: mlp(y, w1, b1, w2, b2), x)

  def unrolled(x, w1, b1, w2, b2):
    for _ in range(n):
      x = mlp(x, w1, b1, w2, b2)
    return x

  body = cost.xla_cost(mlp, *mlp_args(D)).flops
  compiled = cost.compile_fn(looped, *mlp_args(D))
  assert body <= cost.of_compiled(compiled).flops < 1.5 * body  # the reason for dreamer/cost.py
  assert abs(cost.xla_cost(unrolled, *mlp_args(D)).flops - n * body) / (n * body) < 0.05
  assert [(f.kind, f.trip_count) for f in cost.control_flow(compiled)] == [("while", n)]


@pytest.fixture(scope="module")
def debug_agent():
  config = config_lib.load("debug", ["num_simulations=4"])  # 8 envs
  spec = agent_lib.check_world(config.world, "world", **config_lib.world_kwargs(config, train=True))
  agent = agent_lib.Agent(config, spec)
  state, _ = jax.eval_shape(agent.init, jax.random.PRNGKey(0))
  return agent, state.params


@pytest.fixture(scope="module")
def acting(debug_agent):
  """The cost of the debug agent's acting search: 8 roots, 4 simulations."""
  agent, params = debug_agent
  return cost.acting_cost(agent, params, agent.config.num_envs)


def test_search_cost_puts_the_simulations_back(debug_agent, acting):
  agent, params = debug_agent
  settings = {**search_lib.settings(agent.config), "num_simulations": 2}
  two = cost.search_cost(agent.model, params, cost.observations(agent, 8), settings=settings)
  assert acting.simulations == 4 and two.step == acting.step and two.root == acting.root and two.step.flops > 0
  assert acting.model.flops - two.model.flops == 2 * two.step.flops
  assert acting.model == acting.root + acting.step * 4 and acting.total == acting.model + acting.tree


def test_search_pieces_add_up_to_an_unrolled_search(debug_agent, acting):
  """root + S steps, compiled apart, against the same S model steps written out in one program (no loop)."""
  agent, params = debug_agent
  s, c = acting.simulations, agent.config
  recurrent = search_lib.make_recurrent_fn(agent.model, discount=c.discount, horizon=c.value_prefix_horizon)

  def written_out(p, o, actions):
    root = search_lib.make_root(agent.model, p, o)
    outs, embedding = [root], root.embedding
    for k in range(s):
      out, embedding = recurrent(p, jax.random.PRNGKey(0), actions[k], embedding)
      outs.append(out)
    return outs

  actions = jax.ShapeDtypeStruct((s, 8), jnp.int32)
  reference = cost.xla_cost(written_out, params, cost.observations(agent, 8), actions).flops
  assert abs(acting.model.flops - reference) / reference < 0.05


def test_raw_xla_count_of_the_acting_search_is_about_one_simulation(debug_agent, acting):
  agent, params = debug_agent
  compiled = cost.compile_acting(agent, params)
  raw, loops = cost.of_compiled(compiled), cost.control_flow(compiled)
  one_simulation = acting.root + acting.step
  assert 0.95 * one_simulation.flops <= raw.flops < acting.total.flops / 2
  assert ("while", acting.simulations) in [(f.kind, f.trip_count) for f in loops]


def test_roofline_on_hand_numbers():
  flops_bound = cost.roofline(cost.Cost(1e12, 1e9), peak_tflops=100.0, bandwidth_gbs=1000.0)
  assert flops_bound == {"seconds": pytest.approx(0.01), "bound": "compute", "flops_per_byte": 1000.0}
  memory_bound = cost.roofline(cost.Cost(1e9, 1e10), peak_tflops=100.0, bandwidth_gbs=1000.0)
  assert memory_bound == {"seconds": pytest.approx(0.01), "bound": "memory", "flops_per_byte": 0.1}


def test_data_parallel_projection_on_hand_numbers():
  link = cost.Link(bandwidth_gbs=100.0, latency_us=10.0, source="hand")
  # All-reduce of 8e9 bytes over 4 devices: 6 ring steps of 2e9 bytes at 1e11 B/s plus 10 us each.
  assert cost.ring_seconds(8e9, 4, link, reduce=True) == pytest.approx(6 * (0.02 + 1e-5))
  assert cost.ring_seconds(8e9, 4, link, reduce=False) == pytest.approx(3 * (0.02 + 1e-5))
  assert cost.ring_seconds(8e9, 1, link, reduce=True) == 0.0
  acc = cost.Accelerator({"bfloat16": 100.0}, 1000.0, "hand")
  update, moved = cost.Cost(1e12, 1e9), cost.UpdateTraffic(gradients=4e8, windows=0, priorities=0)
  rows = cost.scaling_table(update, moved, batch_size=256, counts=(1, 8, 16), accelerator=acc, dtype="bfloat16")
  one, eight, sixteen = rows
  assert one["update_s"] == pytest.approx(0.01) and one["speedup"] == 1.0 and one["communication_fraction"] == 0
  nvlink, ib = cost.LINKS["nvlink4"], cost.LINKS["ib-ndr"]
  assert eight["compute_s"] == pytest.approx(0.01 / 8) and eight["per_device_batch"] == 32
  assert eight["gradients_s"] == pytest.approx(cost.ring_seconds(4e8, 8, nvlink, reduce=True))
  assert sixteen["gradients_s"] == pytest.approx(cost.ring_seconds(4e8, 16, ib, reduce=True))  # across nodes
  assert sixteen["speedup"] == pytest.approx(0.01 / (0.01 / 16 + sixteen["gradients_s"]))


def test_run_counts_and_totals_on_hand_numbers():
  config = config_lib.load("debug", [])  # 4000 env steps, 8 envs, 0.25 updates per env step from 200, eval 400
  counts = cost.run_counts(config)
  # 500 acting steps; 2 updates owed per step from the step that reaches 200 (the 25th): 476 x 2, in chunks of 8.
  assert counts == {"acting_steps": 500, "updates": 952, "evaluations": 10}
  slow = dataclasses.replace(config, updates_per_chunk=100)  # 952 owed, paid in whole chunks of 100
  assert cost.run_counts(slow)["updates"] == 900
  total = cost.run_total(
    update=cost.Cost(10.0, 1.0), acting=cost.Cost(2.0, 1.0), evaluation=cost.Cost(3.0, 0.0), counts=counts,
    episode_length=7,
  )  # fmt: skip
  assert total["learning"] == cost.Cost(9520.0, 952.0)
  assert total["evaluation"] == cost.Cost(10 * 7 * 3.0, 0.0)
  assert total["total"] == cost.Cost(9520.0 + 1000.0 + 210.0, 952.0 + 500.0)


def test_projected_seconds_on_hand_numbers():
  config = config_lib.load("debug", [])  # 952 updates, 4000 env steps (above)
  out = cost.projected_seconds(config, updates_per_s=4.0, acting_env_steps_per_s=100.0)
  assert out["learning"] == 238.0 and out["acting"] == 40.0 and out["total_without_eval"] == 278.0
  assert out["updates"] == 952 and out["evaluations"] == 10 and out["total_env_steps"] == 4000


def test_script_prints_the_cost_json():
  small = ["--set", "unroll_steps=1", "--set", "td_steps=1", "--set", "batch_size=8"]  # a quick compile
  small += ["--set", "reanalyze_fraction=0.5"]  # 4 samples x (K+1) = 8 roots searched in each update
  command = [sys.executable, str(ROOT / "scripts" / "cost.py"), "--config", "debug", *small, "--no-time"]
  done = subprocess.run(
    [*command, "--accelerator", "h200", "--dtype", "bfloat16"], capture_output=True, text=True, timeout=600
  )
  assert done.returncode == 0, done.stderr[-2000:]
  out = json.loads(done.stdout)
  for key in ("commit", "update", "acting_step", "evaluation_step", "xla_raw_acting_search", "run", "roofline"):
    assert key in out, key
  update, search = out["update"], out["update"]["reanalysis_search"]
  assert search["batch"] == 8 and search["simulations"] == 8
  assert update["flops"] == update["without_reanalysis"]["flops"] + search["total"]["flops"]
  assert out["acting_step"]["flops"] > out["xla_raw_acting_search"]["flops"]
  assert out["run"]["total_tflop"] == pytest.approx(out["run"]["total"]["flops"] / 1e12)
  assert list(out["roofline"]) == ["h200"] and out["roofline"]["h200"]["peak_tflops"] == 989.4
  assert out["roofline"]["h200"]["update"]["seconds"] > 0 and out["achieved"] is None
  scaling = out["scaling"]["by_accelerator"]["h200"]["rows"]
  assert [r["devices"] for r in scaling] == [1, 8, 64] and scaling[0]["speedup"] == 1.0
  moved = out["scaling"]["collectives"]  # debug: 8 samples x (1 + 1 + 1) rows of a 6-float obs and the rest
  assert moved["priorities"] == 8000 * 4 and moved["windows"] == 8 * 3 * (6 * 4 + 4 + 4 + 2 * 4 + 4 + 1 + 1 + 4)
