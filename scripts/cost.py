"""Cost model of a preset; prints one JSON document.

Floating-point operations and bytes of one learner update, one acting step and one evaluation step, from XLA's
compiled cost analysis with the loops' trip counts put back in (dreamer/cost.py: XLA counts a loop body once, so
the search's simulations are multiplied in here); the totals of a whole run (updates x update + acting steps x
acting step + evaluations x an assumed episode length x evaluation step); lower-bound seconds on accelerators
from their peak FLOP/s and memory bandwidth (a roofline); and, unless --no-time, the achieved fraction on this
machine: one jitted learner update's flops over its median seconds, over the machine's peak (--cpu-peak-gflops,
or measured with a large float32 matmul). Records the git commit.

  python scripts/cost.py [--config cartpole] [--set key=value ...] [--accelerator h100-sxm]
                         [--peak-tflops X --bandwidth-gbs Y] [--dtype bfloat16] [--no-time]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from dreamer import agent as agent_lib  # noqa: E402
from dreamer import config as config_lib  # noqa: E402
from dreamer import cost, dream_ratio  # noqa: E402
from dreamer import replay as replay_lib  # noqa: E402
from dreamer.suites import commit  # noqa: E402

LEFT_OUT = [
  "mctx's tree work counts each loop body once (tree_once): a lower bound of it; the network calls are exact",
  "loops inside the update besides the search (rng rounds, searchsorted) count once; see update.counted_once",
  "an evaluation's length is data dependent: eval_episode_length is assumed (--eval-length)",
  "a run stopped early at stop_return costs less; host work (worlds, replay insertion, logging) is not counted",
  "bytes are this backend's compiler's (its fusion); another backend's fusion moves them",
  "the roofline ignores kernel launches and the search's sequential simulations: real time is far above it",
]


START = time.perf_counter()


def progress(phase: str, **values) -> None:
  """One JSON line per finished phase on stderr, so a slow compile shows where it is."""
  print(
    json.dumps({"phase": phase, "elapsed_s": round(time.perf_counter() - START, 1), **values}),
    file=sys.stderr,
    flush=True,
  )


def filled_replay(agent: agent_lib.Agent, rb: replay_lib.ReplayState, steps: int, seed: int):
  """The replay with `steps` synthetic steps per env (random observations and actions, an episode end every 20
  steps), so a timed update samples real rows; the values do not change the work, NaNs would."""
  rng = np.random.default_rng(seed)
  spec, e = agent.spec, agent.config.num_envs

  def frames() -> np.ndarray:
    shape = (e, *spec.obs_shape)
    if np.dtype(spec.obs_dtype) == np.uint8:
      return rng.integers(0, 256, shape, np.uint8)
    if np.dtype(spec.obs_dtype) == np.bool_:
      return rng.random(shape) < 0.2
    return rng.normal(size=shape).astype(spec.obs_dtype)

  a = spec.num_actions
  for t in range(steps):
    ended = np.full(e, t % 20 == 19)
    row = replay_lib.Rows(
      frames(), rng.integers(0, a, e), rng.normal(size=e).astype(np.float32), np.full((e, a), 1.0 / a, np.float32),
      np.zeros(e, np.float32), np.zeros(e, bool), np.zeros(e, bool), np.full(e, t * e, np.int32),
    )  # fmt: skip
    rb = agent.add(rb, row, frames(), ended, ended)
  return rb


def rooflines(parts: dict[str, cost.Cost], run: list[tuple[cost.Cost, int]], accelerators: dict, dtype: str) -> dict:
  """Lower-bound seconds of each part on each accelerator, and of the whole run: the sum over its parts of
  count x bound (tighter than one bound of the summed costs, and still a lower bound)."""
  out = {}
  for name, acc in accelerators.items():
    peak = acc["peak_tflops"][dtype] if isinstance(acc["peak_tflops"], dict) else acc["peak_tflops"]

    def bound(c: cost.Cost, peak: float = peak, bandwidth: float = acc["bandwidth_gbs"]) -> dict:
      return cost.roofline(c, peak_tflops=peak, bandwidth_gbs=bandwidth)

    out[name] = {
      "dtype": dtype,
      "peak_tflops": peak,
      "bandwidth_gbs": acc["bandwidth_gbs"],
      "source": acc["source"],
      **{part: bound(c) for part, c in parts.items()},
      "run_s": sum(bound(c)["seconds"] * n for c, n in run),
    }
  return out


def data_parallel(agent, state, rb, update: cost.Cost, chosen: dict, dtype: str, counts: list[int]) -> dict:
  """Projected data-parallel update time on 1..N accelerators of each built-in class (`cost.scaling`), the bytes
  each update moves between devices, and the first count at which adding devices gains under 10% per doubling."""
  moved = cost.traffic(agent, state, rb)
  out = {"collectives": moved._asdict(), "by_accelerator": {}}
  for name in chosen:
    if name not in cost.ACCELERATORS:
      continue  # a custom accelerator has no interconnect to model
    rows = cost.scaling_table(
      update, moved, batch_size=agent.config.batch_size, counts=tuple(counts), accelerator=cost.ACCELERATORS[name],
      dtype=dtype,
    )  # fmt: skip
    doubling = cost.scaling_table(
      update, moved, batch_size=agent.config.batch_size, counts=(1, 2, 4, 8, 16, 32, 64, 128),
      accelerator=cost.ACCELERATORS[name], dtype=dtype,
    )  # fmt: skip
    stops = next((b["devices"] for a, b in zip(doubling, doubling[1:]) if b["speedup"] < 1.1 * a["speedup"]), None)
    out["by_accelerator"][name] = {"rows": rows, "stops_scaling_at": stops}
  return out


def accelerators(args: argparse.Namespace) -> dict[str, dict]:
  """The accelerators asked for: a custom one from --peak-tflops and --bandwidth-gbs, one built-in, or all."""
  if args.peak_tflops is not None or args.bandwidth_gbs is not None:
    if args.peak_tflops is None or args.bandwidth_gbs is None:
      raise SystemExit("cost.py: --peak-tflops and --bandwidth-gbs go together")
    return {"custom": {"peak_tflops": args.peak_tflops, "bandwidth_gbs": args.bandwidth_gbs, "source": "options"}}
  names = [args.accelerator] if args.accelerator else list(cost.ACCELERATORS)
  return {n: cost.ACCELERATORS[n]._asdict() for n in names}


def achieved(agent, compiled_update, compiled_act, parts: dict[str, cost.Cost], args: argparse.Namespace) -> dict:
  """The achieved fraction of this machine's peak: flops over the median seconds of one learner update and of one
  acting step (on a replay of synthetic rows), over the peak (--cpu-peak-gflops, or measured)."""
  config = agent.config
  state, rb = agent.init(jax.random.PRNGKey(config.seed))
  rb = filled_replay(agent, rb, 64, config.seed)
  if dream_ratio.reanalysed_samples(config) > 0:  # the compiled one left the search out
    compiled_update = cost.compile_fn(cost.update_fn(agent), state, rb, jnp.int32(0))
  env_step = jnp.int32(config.learning_starts)
  update_s = cost.median_seconds(compiled_update, state, rb, env_step, repeats=args.repeats)
  progress("time_update", seconds=update_s)
  obs = jnp.zeros((config.num_envs, *agent.obs_shape), agent.spec.obs_dtype)
  key, temperature = jax.random.PRNGKey(1), jnp.float32(1.0)
  act_s = cost.median_seconds(compiled_act, state.params, obs, key, temperature, repeats=args.repeats)
  progress("time_act", seconds=act_s)
  peak, source = args.cpu_peak_gflops, "--cpu-peak-gflops"
  if peak is None:
    peak, source = cost.matmul_gflops(), "measured practical peak: median of a jitted 2048^3 float32 matmul"
  out = {"peak_gflops": peak, "peak_source": source, "device": str(jax.devices()[0])}
  for name, seconds in (("update", update_s), ("acting_step", act_s)):
    gflops = parts[name].flops / seconds / 1e9
    out[name] = {"median_s": seconds, "achieved_gflops": gflops, "achieved_fraction": gflops / peak}
  return out


def settings(config: config_lib.Config) -> dict:
  names = ["search", "num_simulations", "num_envs", "batch_size", "unroll_steps", "eval_episodes", "updates_per_chunk"]
  return {**{n: getattr(config, n) for n in names}, "reanalysed_samples": dream_ratio.reanalysed_samples(config)}


def step_costs(agent: agent_lib.Agent, state, rb) -> tuple[dict, dict[str, cost.Cost], tuple]:
  """The JSON of one update, acting step and evaluation step and of XLA's raw count of the acting search; their
  totals by name; and the compiled update (without reanalysis) and acting function, to time."""
  config = agent.config
  update, compiled_update = cost.update_cost(agent, state, rb)
  progress("update", flops=update.total.flops)
  acting = cost.acting_cost(agent, state.params, config.num_envs)
  progress("acting_step", flops=acting.total.flops)
  same = config.eval_episodes == config.num_envs and config.train_search
  eval_search = acting if same else cost.acting_cost(agent, state.params, config.eval_episodes, training=False)
  eval_policy = cost.policy_cost(agent, state.params, config.eval_episodes)
  compiled_act = cost.compile_acting(agent, state.params)
  raw = cost.of_compiled(compiled_act)
  parts = {"update": update.total, "acting_step": acting.total, "evaluation_step": eval_search.total + eval_policy}
  progress("evaluation_step", flops=parts["evaluation_step"].flops)
  out = {
    "update": {
      **update.total.as_dict(),
      "without_reanalysis": update.base.as_dict(),
      "reanalysis_search": update.reanalysis.as_dict() if update.reanalysis else None,
      "counted_once": [f._asdict() for f in update.flow],
    },
    "acting_step": {**acting.total.as_dict(), "search": acting.as_dict()},
    "evaluation_step": {
      **parts["evaluation_step"].as_dict(),
      "search": eval_search.as_dict(),
      "policy": eval_policy.as_dict(),
    },
    "xla_raw_acting_search": {
      **raw.as_dict(),
      "loops": [f._asdict() for f in cost.control_flow(compiled_act)],
      "trip_counted_over_raw_flops": acting.total.flops / raw.flops if raw.flops else None,
    },
  }
  return out, parts, (compiled_update, compiled_act)


def whole_run(config: config_lib.Config, parts: dict[str, cost.Cost], length: int) -> tuple[dict, list]:
  """The JSON of a whole run's counts and cost by part, and (cost, count) pairs for its roofline."""
  counts = cost.run_counts(config)
  run = cost.run_total(
    update=parts["update"], acting=parts["acting_step"], evaluation=parts["evaluation_step"], counts=counts,
    episode_length=length,
  )  # fmt: skip
  out = {
    **counts,
    "eval_episode_length": length,
    "assumption": f"every evaluation steps its envs {length} times with search and {length} times with the policy "
    "network (its longest episode); the run goes to total_env_steps",
    **{part: c.as_dict() for part, c in run.items()},
    "total_tflop": run["total"].flops / 1e12,
  }
  pairs = [
    (parts["update"], counts["updates"]),
    (parts["acting_step"], counts["acting_steps"]),
    (parts["evaluation_step"], counts["evaluations"] * length),
  ]
  return out, pairs


def main() -> None:
  args = parse_args()
  chosen = accelerators(args)  # before the compiling, so a bad option fails at once
  config = config_lib.load(args.config, args.overrides)
  spec = agent_lib.check_world(config.world, "world", **config_lib.world_kwargs(config, train=True))
  agent = agent_lib.Agent(config, spec)
  state, rb = jax.eval_shape(agent.init, jax.random.PRNGKey(config.seed))  # shapes only: nothing is allocated
  per_step, parts, (compiled_update, compiled_act) = step_costs(agent, state, rb)
  run, pairs = whole_run(config, parts, args.eval_length or config.eval_max_steps)
  dtype = args.dtype or config.compute_dtype
  result = {
    "config": args.config,
    "overrides": args.overrides,
    "commit": commit(),
    "world": config.world,
    "backend": jax.default_backend(),
    "jax": jax.__version__,
    "settings": settings(config),
    **per_step,
    "run": run,
    "roofline": rooflines(parts, pairs, chosen, dtype),
    "scaling": data_parallel(agent, state, rb, parts["update"], chosen, dtype, args.devices),
    "achieved": None if args.no_time else achieved(agent, compiled_update, compiled_act, parts, args),
    "left_out": LEFT_OUT,
  }
  print(json.dumps(result, indent=2))


def parse_args() -> argparse.Namespace:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--config", default="cartpole")
  parser.add_argument("--set", action="append", default=[], dest="overrides", metavar="KEY=VALUE")
  parser.add_argument(
    "--accelerator", choices=sorted(cost.ACCELERATORS), help="one built-in accelerator (default: all)"
  )
  parser.add_argument("--peak-tflops", type=float, help="a custom accelerator's peak TFLOP/s (with --bandwidth-gbs)")
  parser.add_argument("--bandwidth-gbs", type=float, help="a custom accelerator's memory bandwidth, GB/s")
  parser.add_argument(
    "--dtype",
    choices=["float32", "tfloat32", "bfloat16"],
    help="which peak to use (default: the config's compute_dtype)",
  )
  parser.add_argument("--eval-length", type=int, help="assumed longest evaluation episode (default: eval_max_steps)")
  parser.add_argument("--no-time", action="store_true", help="skip timing on this machine (the achieved fraction)")
  parser.add_argument("--cpu-peak-gflops", type=float, help="this machine's peak (default: measured with a matmul)")
  parser.add_argument("--repeats", type=int, default=5, help="timed calls, after a warm-up, of which the median")
  parser.add_argument(
    "--devices", type=int, nargs="+", default=[1, 8, 64], help="device counts of the data-parallel projection"
  )
  return parser.parse_args()


if __name__ == "__main__":
  main()
