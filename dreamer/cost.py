"""A cost model: floating-point operations and bytes of one learner update, one acting step and one evaluation
step, from XLA's compiled cost analysis with the loops' trip counts put back in; the totals of a whole run and
a roofline (lower-bound seconds on an accelerator from its peak FLOP/s and memory bandwidth).

XLA's cost analysis counts the body of a while loop once, whatever its trip count. The search runs
`num_simulations` model steps in mctx's loop, so we compile loop-free pieces and multiply ourselves:

  search(B)  = root(B) + num_simulations x step(B) + tree(B)
  update     = the learner update with reanalysis off + search(R (K+1))   R = reanalysed samples, K = unroll
  acting     = search(num_envs)                 (search 'none': the act function, the policy network alone)
  evaluation = search(eval_episodes) + policy network(eval_episodes)

root: representation + prediction; step: one call of the search's recurrent function (dynamics + prediction,
value decoding); tree: mctx's own work, from the whole search compiled with a stand-in model that does no work
(`Idle`), each loop body counted once: about a lower bound, since every simulation walks down and back up at
least one edge (the stand-in's one recurrent call still decodes values, a sliver that `step` counts too).
What XLA still counts once: the rng's and searchsorted's small loops inside the update (`control_flow` lists
them with their trip counts). Every count is the compiler's of this backend: other backends fuse differently,
so bytes especially are indicative.
"""

from __future__ import annotations

import dataclasses
import functools
import re
import statistics
import time
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from dreamer import dream_ratio
from dreamer import learner as learner_lib
from dreamer import replay as replay_lib
from dreamer import search as search_lib
from dreamer import train as train_lib
from dreamer.agent import Agent
from dreamer.config import Config
from dreamer.networks import Model, Params


@dataclasses.dataclass(frozen=True)
class Cost:
  """Floating-point operations, bytes accessed and transcendentals (exp, log, tanh: XLA counts them apart from
  the flops, one per element), as XLA's cost analysis counts them: an elementwise op is one flop per output
  element, a matmul two per multiply-add. Costs add, and scale by a count."""

  flops: float = 0.0
  bytes: float = 0.0
  transcendentals: float = 0.0

  def __add__(self, other: Cost) -> Cost:
    return Cost(self.flops + other.flops, self.bytes + other.bytes, self.transcendentals + other.transcendentals)

  def __mul__(self, n: float) -> Cost:
    return Cost(self.flops * n, self.bytes * n, self.transcendentals * n)

  __rmul__ = __mul__

  def as_dict(self) -> dict[str, float]:
    return dataclasses.asdict(self)


_KEYS = {"flops": "flops", "bytes": "bytes accessed", "transcendentals": "transcendentals"}


def of_compiled(compiled: jax.stages.Compiled) -> Cost:
  """XLA's count for a compiled function (each loop body once)."""
  analysis = compiled.cost_analysis()
  if isinstance(analysis, list | tuple):  # older jax: one dict per program
    analysis = {k: sum(a.get(k, 0.0) for a in analysis) for k in _KEYS.values()}
  return Cost(**{field: float(analysis.get(key, 0.0)) for field, key in _KEYS.items()})


def compile_fn(fn: Callable, *args: Any) -> jax.stages.Compiled:
  """fn compiled for these arguments (arrays or jax.ShapeDtypeStruct: nothing is allocated or run)."""
  return jax.jit(fn).lower(*args).compile()


def xla_cost(fn: Callable, *args: Any) -> Cost:
  return of_compiled(compile_fn(fn, *args))


class Flow(NamedTuple):
  """A while loop or conditional in compiled HLO: its kind, jax's op name, and XLA's known trip count (loops
  whose count XLA could not prove, and conditionals, have None)."""

  kind: str
  name: str
  trip_count: int | None


_OP = re.compile(r"\s(while|conditional)\(")
_NAME = re.compile(r'op_name="([^"]*)"')
_TRIPS = re.compile(r'"known_trip_count":\{"n":"(\d+)"\}')


def control_flow(compiled: jax.stages.Compiled) -> list[Flow]:
  """Every while loop and conditional of the compiled program (nested ones too): what XLA counts once."""
  found = []
  for line in compiled.as_text().splitlines():
    op = _OP.search(line)
    if op is None:
      continue
    name, trips = _NAME.search(line), _TRIPS.search(line)
    found.append(Flow(op.group(1), name.group(1) if name else "", int(trips.group(1)) if trips else None))
  return found


class SearchCost(NamedTuple):
  """One batched search of `batch` roots: root (representation + prediction), step (one recurrent-function call
  at batch B: dynamics + prediction + value decoding), `simulations` steps, and mctx's tree work (stand-in model,
  loops counted once). With search 'none', root is the whole act function and there are no steps."""

  batch: int
  simulations: int
  root: Cost
  step: Cost
  tree: Cost

  @property
  def model(self) -> Cost:
    return self.root + self.step * self.simulations

  @property
  def total(self) -> Cost:
    return self.model + self.tree

  def as_dict(self) -> dict[str, Any]:
    parts = {"root": self.root, "step": self.step, "tree_once": self.tree, "model": self.model, "total": self.total}
    return {"batch": self.batch, "simulations": self.simulations, **{k: v.as_dict() for k, v in parts.items()}}


_KEY = jax.ShapeDtypeStruct((2,), jnp.uint32)  # a raw PRNGKey
_SCALAR = jax.ShapeDtypeStruct((), jnp.float32)


class Idle:
  """A stand-in for `Model` in the search that does no work, so that a search with it costs mctx's own work:
  dynamics returns its latent and LSTM state as they are, and the heads' logits are read from `params` (inputs,
  so XLA cannot fold them away)."""

  has_terminal = False  # a terminal head is the model's work, counted with the model's calls

  def dynamics(self, params: Params, latent: jax.Array, action: jax.Array, lstm: Any):
    del action
    return latent, lstm, params["prefix"]

  def predict(self, params: Params, latent: jax.Array):
    del latent
    return params["policy"], params["value"]

  def search_predict(self, params: Params, latent: jax.Array):
    return self.predict(params, latent)


def search_cost(model: Model, params: Params, obs: Any, *, settings: dict[str, Any]) -> SearchCost:
  """The cost of one search from observations obs [B, *obs_shape] (arrays or ShapeDtypeStructs) with the
  keyword settings of `search.run_search` (`search.settings(config)`)."""
  batch = obs.shape[0]
  root_fn = functools.partial(search_lib.make_root, model)
  root = jax.eval_shape(root_fn, params, obs)
  recurrent = search_lib.make_recurrent_fn(model, discount=settings["discount"], horizon=settings["horizon"])
  action = jax.ShapeDtypeStruct((batch,), jnp.int32)
  prefix = jax.eval_shape(model.dynamics, params, root.embedding.latent, action, root.embedding.lstm)[2]
  value = jax.eval_shape(model.predict, params, root.embedding.latent)[1]
  idle_params = {"policy": root.prior_logits, "value": value, "prefix": prefix}

  def idle_search(p, key, r, temperature):
    return search_lib.run_search(Idle(), p, key, r, temperature=temperature, noise=True, **settings)

  return SearchCost(
    batch=batch,
    simulations=settings["num_simulations"],
    root=xla_cost(root_fn, params, obs),
    step=xla_cost(recurrent, params, _KEY, action, root.embedding),
    tree=xla_cost(idle_search, idle_params, _KEY, root, _SCALAR),
  )


class UpdateCost(NamedTuple):
  """One learner update: `base`, the update compiled whole with reanalysis off, plus its reanalysis search
  (None when the config reanalyses nothing); `flow`: the loops and conditionals XLA counted once in `base`."""

  base: Cost
  reanalysis: SearchCost | None
  flow: list[Flow]

  @property
  def total(self) -> Cost:
    return self.base + (self.reanalysis.total if self.reanalysis is not None else Cost())


def update_fn(agent: Agent, *, reanalysis: bool = True) -> Callable:
  """learner.update(state, replay, env_step) for the agent's config; reanalysis=False: with reanalyze_fraction 0
  (and the n-step value target, which needs no reanalysis), the same update less its search."""
  config = agent.config
  if not reanalysis:
    config = dataclasses.replace(config, reanalyze_fraction=0.0, value_target="td")
  return functools.partial(learner_lib.update, model=agent.model, config=config, optimizer=agent.optimizer)


def update_cost(
  agent: Agent, state: learner_lib.TrainState, rb: replay_lib.ReplayState
) -> tuple[UpdateCost, jax.stages.Compiled]:
  """The cost of one update of `agent` (an agent.Agent) on learner state and replay (arrays or abstract), and the
  compiled update without reanalysis (the whole update when the config reanalyses nothing)."""
  config = agent.config
  compiled = compile_fn(update_fn(agent, reanalysis=False), state, rb, jax.ShapeDtypeStruct((), jnp.int32))
  num_re = dream_ratio.reanalysed_samples(config)
  search = None
  if num_re > 0:  # the reanalysis searches every root of the K+1 unrolled rows of each reanalysed sample
    obs = jax.ShapeDtypeStruct((num_re * (config.unroll_steps + 1), *agent.obs_shape), agent.spec.obs_dtype)
    search = search_cost(agent.model, state.params, obs, settings=search_lib.settings(config))
  return UpdateCost(of_compiled(compiled), search, control_flow(compiled)), compiled


def observations(agent: Agent, batch: int) -> jax.ShapeDtypeStruct:
  """What the networks see for `batch` envs: [batch, *obs_shape] (stacked frames included)."""
  return jax.ShapeDtypeStruct((batch, *agent.obs_shape), agent.spec.obs_dtype)


def acting_cost(agent: Agent, params: Params, batch: int, *, training: bool = True) -> SearchCost:
  """One acting step for `batch` envs: one batched search (where no search acts, search 'none' or in training
  with `train_search` off: the act function, the policy network and sampling). `training` False: evaluation's."""
  obs = observations(agent, batch)
  searching = dream_ratio.trains_with_search(agent.config) if training else agent.config.search != "none"
  if not searching:
    return SearchCost(batch, 0, xla_cost(agent.act, params, obs, _KEY, _SCALAR), Cost(), Cost())
  return search_cost(agent.model, params, obs, settings=search_lib.settings(agent.config))


def policy_cost(agent: Agent, params: Params, batch: int) -> Cost:
  """One step of the policy network acting alone (evaluation's second set of episodes) for `batch` envs."""
  return xla_cost(agent.policy_act, params, observations(agent, batch))


def compile_acting(agent: Agent, params: Params) -> jax.stages.Compiled:
  """The whole jitted acting function (search loop and all) compiled for `num_envs` envs: XLA's own count of it
  (`of_compiled`) takes each loop body once; it is called (params, obs, key, f32 temperature)."""
  return compile_fn(agent.act, params, observations(agent, agent.config.num_envs), _KEY, _SCALAR)


def run_counts(config: Config) -> dict[str, int]:
  """Acting steps, learner updates and evaluations of a whole run to `total_env_steps` (one not stopped early at
  `stop_return`), by the training loop's own clocks: updates owed per env step once `learning_starts` steps are
  done, paid in whole chunks; an evaluation every `eval_every` env steps and at the last."""
  evals, _, ratio = train_lib.clocks(config)
  env_steps = acting = updates = evaluations = 0
  owed, next_eval = 0.0, evals.first()
  while env_steps < config.total_env_steps:
    env_steps += config.num_envs
    acting += 1
    owed = ratio.owe(owed, config.num_envs, done=env_steps)
    chunks, owed = ratio.pay(owed)
    updates += chunks * config.updates_per_chunk
    if evals.due(env_steps, next_eval) or env_steps >= config.total_env_steps:
      evaluations += 1
      next_eval = evals.following(env_steps)
  return {"acting_steps": acting, "updates": updates, "evaluations": evaluations}


def projected_seconds(config: Config, *, updates_per_s: float, acting_env_steps_per_s: float) -> dict[str, float]:
  """Seconds of a whole run at measured rates: its updates (run_counts) over updates/s plus its env steps over
  acting env steps/s (search and world step), the two alternating in the training loop. Evaluation, whose length
  depends on the games, is left out; its count is given."""
  counts = run_counts(config)
  learning = counts["updates"] / updates_per_s
  acting = config.total_env_steps / acting_env_steps_per_s
  return {**counts, "total_env_steps": config.total_env_steps, "learning": learning, "acting": acting,
          "total_without_eval": learning + acting}  # fmt: skip


def run_total(
  *, update: Cost, acting: Cost, evaluation: Cost, counts: dict[str, int], episode_length: int
) -> dict[str, Cost]:
  """A whole run's cost by part: updates x update, acting steps x acting step, and evaluations x
  `episode_length` evaluation steps (an evaluation steps all its envs until its longest episode ends, once
  with search and once with the policy network; that length is data dependent, so it is assumed)."""
  parts = {
    "learning": update * counts["updates"],
    "acting": acting * counts["acting_steps"],
    "evaluation": evaluation * (counts["evaluations"] * episode_length),
  }
  return {**parts, "total": sum(parts.values(), Cost())}


class Accelerator(NamedTuple):
  """Vendor peak dense TFLOP/s by dtype and memory bandwidth in GB/s, with where the figures come from."""

  peak_tflops: dict[str, float]
  bandwidth_gbs: float
  source: str


# Dense figures (no 2:4 sparsity): NVIDIA quotes its tensor-core figures "with sparsity", twice the dense ones.
# 'float32' is the CUDA-core FP32 peak; 'tfloat32' the TF32 tensor cores, which XLA may use for float32 matmuls
# at jax's default precision on these GPUs. TPUs publish no float32 peak: at jax's default precision XLA runs
# float32 matmuls as one bfloat16 pass on the MXU, so the bfloat16 peak stands for all three.
ACCELERATORS = {
  "h100-sxm": Accelerator(
    peak_tflops={"float32": 67.0, "tfloat32": 494.7, "bfloat16": 989.4},
    bandwidth_gbs=3350.0,
    source="NVIDIA H100 datasheet, SXM5: FP32 67, TF32 989 and BF16 1979 TFLOPS with sparsity, HBM3 3.35 TB/s",
  ),
  "h200": Accelerator(
    peak_tflops={"float32": 67.0, "tfloat32": 494.7, "bfloat16": 989.4},
    bandwidth_gbs=4800.0,
    source="NVIDIA H200 datasheet, SXM: FP32 67, TF32 989 and BF16 1979 TFLOPS with sparsity, HBM3e 4.8 TB/s",
  ),
  "a100-80gb": Accelerator(
    peak_tflops={"float32": 19.5, "tfloat32": 156.0, "bfloat16": 312.0},
    bandwidth_gbs=2039.0,
    source="NVIDIA A100 datasheet, 80GB SXM: FP32 19.5, TF32 156 and BF16 312 TFLOPS dense, HBM2e 2039 GB/s",
  ),
  "v5e": Accelerator(
    peak_tflops={"float32": 197.0, "tfloat32": 197.0, "bfloat16": 197.0},
    bandwidth_gbs=819.0,
    source="Google Cloud TPU v5e docs: 197 TFLOPS bf16 per chip, HBM2 819 GB/s; no float32 figure published",
  ),
}


def roofline(cost: Cost, *, peak_tflops: float, bandwidth_gbs: float) -> dict[str, Any]:
  """Lower-bound seconds of `cost` on an accelerator: max(flops / peak, bytes / bandwidth), which of the two
  bounds it, and its arithmetic intensity (flops per byte)."""
  compute_s = cost.flops / (peak_tflops * 1e12)
  memory_s = cost.bytes / (bandwidth_gbs * 1e9)
  return {
    "seconds": max(compute_s, memory_s),
    "bound": "compute" if compute_s >= memory_s else "memory",
    "flops_per_byte": cost.flops / cost.bytes if cost.bytes else None,
  }


def median_seconds(fn: Callable, *args: Any, repeats: int = 5) -> float:
  """Median wall-clock seconds of fn(*args) over `repeats` calls, after one warm-up call."""
  jax.block_until_ready(fn(*args))
  seconds = []
  for _ in range(repeats):
    start = time.perf_counter()
    jax.block_until_ready(fn(*args))
    seconds.append(time.perf_counter() - start)
  return statistics.median(seconds)


def matmul_gflops(*, n: int = 2048, repeats: int = 5) -> float:
  """A measured practical float32 peak of this machine's default device: 2 n^3 flops of an n x n matmul over
  its median seconds."""
  x = jax.random.normal(jax.random.PRNGKey(0), (n, n), jnp.float32)
  return 2 * n**3 / median_seconds(jax.jit(jnp.matmul), x, x, repeats=repeats) / 1e9


class Link(NamedTuple):
  """An interconnect: per-device bandwidth in one direction (GB/s), latency per ring step (us), and source."""

  bandwidth_gbs: float
  latency_us: float
  source: str


# Within one 8-GPU node a ring runs over NVLink; across nodes the ring's slowest hop is each GPU's network port.
LINKS = {
  "nvlink4": Link(450.0, 3.0, "NVIDIA H100/H200 SXM: NVLink 4, 900 GB/s per GPU, both directions together"),
  "ib-ndr": Link(50.0, 8.0, "NVIDIA ConnectX-7 InfiniBand NDR: 400 Gb/s per GPU, one port per GPU as in DGX H100"),
}
NODE = 8  # accelerators per node, over which a ring stays on NVLink


class UpdateTraffic(NamedTuple):
  """Bytes one data-parallel update moves between devices (see `dreamer/devices.py`)."""

  gradients: int  # all-reduce of the gradients: every learned parameter, float32
  windows: int  # all-reduce of the sampled windows, gathered where their rows live: B x W rows
  priorities: int  # all-gather of the replay's priorities for the global cumulative sum: E x T float32


def traffic(agent: Agent, state: Any, rb: replay_lib.ReplayState) -> UpdateTraffic:
  """The collective volume of one update of `agent` (shapes of `state` and `rb` suffice)."""
  config = agent.config
  nbytes = lambda tree: sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(tree))  # noqa: E731
  rows = rb.priority.size
  frame = nbytes(rb.rows.obs) // rows
  other = nbytes(rb.rows._replace(obs=())) // rows  # action, reward, policy, value, flags, step of one row
  window = config.batch_size * (config.unroll_steps + config.td_steps + 1) * (other + config.frame_stack * frame)
  return UpdateTraffic(gradients=nbytes(state.params), windows=window, priorities=rows * 4)


def ring_seconds(size: int, devices: int, link: Link, *, reduce: bool) -> float:
  """Seconds of a ring all-reduce (`reduce`: 2 (D-1) steps, each moving size / D) or all-gather (D-1 steps) of
  `size` bytes over `devices` devices on `link`: the bandwidth term plus a latency per step."""
  if devices == 1 or size == 0:
    return 0.0
  steps = (2 if reduce else 1) * (devices - 1)
  return steps * (size / devices / (link.bandwidth_gbs * 1e9) + link.latency_us * 1e-6)


def scaling(
  update: Cost, moved: UpdateTraffic, *, batch_size: int, devices: int, accelerator: Accelerator, dtype: str
) -> dict[str, Any]:
  """Projected seconds of one data-parallel update over `devices` accelerators: each computes 1/D of the update
  (its roofline bound; the replicated sampling, a few hundred kB, is left out) and then the collectives run
  (rings, on NVLink within a node of NODE and on InfiniBand across nodes; not overlapped with compute, as XLA's
  all-reduce follows the backward pass). A lower bound on compute and a fair estimate of communication."""
  link = LINKS["nvlink4"] if devices <= NODE else LINKS["ib-ndr"]
  share = Cost(update.flops / devices, update.bytes / devices, update.transcendentals / devices)
  compute = roofline(share, peak_tflops=accelerator.peak_tflops[dtype], bandwidth_gbs=accelerator.bandwidth_gbs)
  comm = {
    "gradients_s": ring_seconds(moved.gradients, devices, link, reduce=True),
    "windows_s": ring_seconds(moved.windows, devices, link, reduce=True),
    "priorities_s": ring_seconds(moved.priorities, devices, link, reduce=False),
  }
  total = compute["seconds"] + sum(comm.values())
  return {
    "devices": devices,
    "per_device_batch": batch_size / devices,
    "link": link.source if devices > 1 else None,
    "compute_s": compute["seconds"],
    "compute_bound": compute["bound"],
    **comm,
    "collective_bytes": sum(moved) if devices > 1 else 0,
    "update_s": total,
    "speedup": None,  # filled in by `scaling_table` against one device
    "communication_fraction": sum(comm.values()) / total,
  }


def scaling_table(
  update: Cost, moved: UpdateTraffic, *, batch_size: int, counts: tuple[int, ...], accelerator: Accelerator, dtype: str
) -> list[dict[str, Any]]:
  """`scaling` at each device count, with the speedup over one device."""
  rows = [
    scaling(update, moved, batch_size=batch_size, devices=d, accelerator=accelerator, dtype=dtype) for d in counts
  ]
  one = scaling(update, moved, batch_size=batch_size, devices=1, accelerator=accelerator, dtype=dtype)["update_s"]
  for row in rows:
    row["speedup"] = one / row["update_s"]
  return rows
