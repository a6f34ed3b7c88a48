"""GPU check: what a developer with an accelerator runs once (8 minutes on one H200); prints one JSON document and
writes the same to OUT/gpu_check.json.

  device      backend, device name and memory, jax and jaxlib versions
  throughput  atari100k and atari100k-fast on Breakout, each in float32 and bfloat16: compile seconds, learner
              updates/s, acting env steps/s, search nodes/s, peak device memory, the projected seconds of a
              whole run; the cost model's FLOPs of one update and one acting step (dreamer/cost.py, counted on
              the host's CPU while the device works) and the achieved fraction of the device's peak
  train       a few minutes of atari100k-fast on Breakout, stopped by SIGINT as a user would stop it; its run
              directory is OUT/train (metrics.jsonl, checkpoint)

Each part runs in a process of its own with its own share of the time budget, so a crash, an out-of-memory or a
hang costs that part alone: its entry then holds an "error", and the others are kept. --smoke runs the same code
at tiny sizes on a CPU (tests/test_gpu_check.py). The fields and the budget are described in docs/atari100k.md,
"GPU check". A machine without network installs what it lacks from wheels/, made by scripts/wheels.sh.

  python scripts/gpu_check.py --out DIR [--smoke] [--train-minutes 2] [--budget-minutes 8]
                              [--parts device throughput train] [--presets ...] [--dtypes ...]
"""

from __future__ import annotations

import argparse
import collections
import importlib.util
import json
import os
import platform
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import NamedTuple

# Only the standard library up here: the parent must run without the project's dependencies (to say how to
# install them) and must not start an accelerator client, which would hold memory its children need.
ROOT = Path(__file__).resolve().parent.parent
# The cheaper first: time it leaves unused passes to the next. On an H200 (jax 0.11.2) atari100k's learner chunk
# compiled in 30 s and atari100k-fast's (Gumbel search in its reanalysis) in 55 s.
PRESETS = ("atari100k", "atari100k-fast")
DTYPES = ("float32", "bfloat16")
WORLD = "atari:Breakout"
TRAIN_PRESET = "atari100k-fast"
NEEDED = ("jax", "flax", "optax", "chex", "orbax.checkpoint", "mctx", "gymnasium", "ale_py", "tensorboard")
INSTALL = (
  "install them from the wheels folder that scripts/wheels.sh makes on a networked machine: "
  "pip install --no-index --find-links wheels -r wheels/requirements.txt && "
  "pip install --no-index --find-links wheels --no-deps -e ."
)
# Tiny sizes for a CPU: the same code paths (resnet, BatchNorm, search, reanalysis, Atari frames), little work.
# total_env_steps is for the training run, which ends itself after 64 env steps (16 chunks of updates after
# learning_starts, then one evaluation); the throughput runs have it too, since the training run reuses the
# compiled programs of its preset's and dtype's throughput run only when it differs from it in host settings alone.
SMOKE = [
  "atari_frame_size=32", "channels=8", "res_blocks=1", "head_channels=4", "head_hidden=8", "lstm_dim=16",
  "proj_dim=32", "value_support=10", "reward_support=5", "batch_size=8", "unroll_steps=1", "replay_capacity=2000",
  "num_simulations=4", "num_envs=2", "learning_starts=32", "updates_per_chunk=2", "eval_episodes=2",
  "eval_max_steps=20", "total_env_steps=64",
]  # fmt: skip
MARK = "@gpu_check "  # starts each JSON line a part's process prints; anything else on its stdout is ignored
STOP_GRACE_S = 45.0  # a stopped run writes its checkpoint (atari100k's replay holds 3.3 GB) before it exits
EXIT_GRACE_S = 15.0  # after a second SIGINT or a kill
TIMED_OUT = "timed out"  # wait_or_stop's answer when it killed a part at its deadline


def emit(**values) -> None:
  """Hands figures to the parent as soon as they are known, so a part cut short still reports them."""
  print(MARK + json.dumps(values), flush=True)


def merge(into: dict, values: dict) -> None:
  for key, value in values.items():
    if isinstance(value, dict) and isinstance(into.get(key), dict):
      merge(into[key], value)
    else:
      into[key] = value


def missing_modules(names: tuple[str, ...]) -> list[str]:
  missing = []
  for name in names:
    try:
      found = importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):  # a parent package missing, or a module set to None
      found = False
    if not found:
      missing.append(name)
  return missing


def overrides(*, dtype: str, smoke: bool, train: bool = False) -> list[str]:
  """The `key=value` settings over a preset: Breakout, the dtype, tiny sizes for --smoke; a training run
  evaluates only at total_env_steps (0: never within a few minutes of atari100k-fast)."""
  out = [f"world={WORLD}", f"compute_dtype={dtype}", *(SMOKE if smoke else [])]
  if train:
    out.append("eval_every=0")
  return out


# --- the parts' processes ---------------------------------------------------------------------------------------


def accelerator_name(kind: str) -> str | None:
  """The accelerator of dreamer/cost.py's table that jax's device_kind names ('NVIDIA H200', 'NVIDIA H100 80GB
  HBM3', 'TPU v5 lite'), or None. The table's H100 and H200 figures are the SXM parts': PCIe and NVL ones differ."""
  from dreamer import cost

  words = kind.lower().replace("-", " ").replace("v5 lite", "v5e").split()
  for name in cost.ACCELERATORS:
    chip = name.split("-")[0]
    if chip in words and not (chip in ("h100", "h200") and {"pcie", "nvl"} & set(words)):
      return name
  return None


def peaks(kind: str) -> dict:
  """The accelerator of dreamer/cost.py's table that jax's `device_kind` names, its vendor peaks by dtype and
  their source (all None when it names none): what the device part and every throughput run report."""
  from dreamer import cost

  name = accelerator_name(kind)
  acc = cost.ACCELERATORS.get(name)
  return {"accelerator": name, "peak_tflops": acc and acc.peak_tflops, "peak_source": acc and acc.source}


def dtype_peak(device: dict, dtype: str) -> dict | None:
  """The peak TFLOP/s for `dtype` from a `peaks` entry, or None when it matched no accelerator. At jax's default
  precision float32 matmuls may run on TF32 tensor cores, so float32 gets both peaks."""
  if not device.get("peak_tflops"):
    return None
  names = ["tfloat32", "float32"] if dtype == "float32" else [dtype]
  tflops = {n: device["peak_tflops"][n] for n in names}
  return {"accelerator": device["accelerator"], "tflops": tflops, "source": device["peak_source"]}


def peak_memory() -> dict:
  import jax

  stats = jax.local_devices()[0].memory_stats()
  if stats and "peak_bytes_in_use" in stats:
    return {"bytes": stats["peak_bytes_in_use"], "limit_bytes": stats.get("bytes_limit"), "source": "device"}
  rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB
  return {"bytes": rss, "source": "peak RSS of the process: this backend reports no device memory"}


def nvidia_smi() -> str | None:
  if shutil.which("nvidia-smi") is None:
    return None
  query = ["nvidia-smi", "--query-gpu=name,memory.total,driver_version", "--format=csv,noheader"]
  done = subprocess.run(query, capture_output=True, text=True, timeout=30)
  return done.stdout.strip() or None


def device_part(_: argparse.Namespace) -> None:
  import jax
  import jaxlib

  devices = jax.devices()
  stats = devices[0].memory_stats() or {}
  emit(
    backend=jax.default_backend(),
    name=devices[0].device_kind,
    count=len(devices),
    memory_bytes=stats.get("bytes_limit"),
    host_memory_bytes=os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"),
    **peaks(devices[0].device_kind),
    jax=jax.__version__,
    jaxlib=jaxlib.__version__,
    python=platform.python_version(),
    nvidia_smi=nvidia_smi(),
  )


def compile_timed(fn, *args):
  start = time.perf_counter()
  compiled = fn.lower(*args).compile()
  return compiled, time.perf_counter() - start


def time_acting(agent, params, obs, *, steps: int, world_s: float) -> float:
  """Compiles the acting search and emits its seconds, then the median of `steps` searches as rates; returns it."""
  import jax

  config, key = agent.config, jax.random.PRNGKey(1)
  act, seconds = compile_timed(agent.act, params, obs, key, 1.0)
  emit(compile_s={"act": seconds})
  act_seconds = []
  for i in range(steps):
    start = time.perf_counter()
    jax.block_until_ready(act(params, obs, jax.random.fold_in(key, i), 1.0))
    act_seconds.append(time.perf_counter() - start)
  act_s, b = statistics.median(act_seconds), config.num_envs
  emit(
    act_search_s_median=act_s,
    search_nodes_per_s=b * config.num_simulations / act_s,
    acting_env_steps_per_s_search_only=b / act_s,
    acting_env_steps_per_s=b / (act_s + world_s),
  )
  return act_s


def time_learning(agent, state, rb, *, chunks: int) -> float:
  """Compiles a learner chunk and emits its seconds, then the median of `chunks` chunks; returns updates/s."""
  import jax
  import jax.numpy as jnp

  env_step = jnp.int32(agent.config.learning_starts)
  chunk, seconds = compile_timed(agent.train_chunk, state, rb, env_step)
  emit(compile_s={"train_chunk": seconds})
  chunk_seconds = []
  for _ in range(chunks):
    start = time.perf_counter()
    state, rb, metrics = chunk(state, rb, env_step)
    jax.block_until_ready(metrics)
    chunk_seconds.append(time.perf_counter() - start)
  updates_per_s = agent.config.updates_per_chunk / statistics.median(chunk_seconds)
  emit(learner_chunk_s_median=statistics.median(chunk_seconds), learner_updates_per_s=updates_per_s)
  return updates_per_s


def measure(config, *, act_steps: int, chunks: int):
  """Times acting and learning as scripts/throughput.py does (its replay filling reused: random actions on the
  real world), emitting each figure when it is known. Returns learner updates/s and acting env steps/s (search
  plus world step)."""
  import jax

  import worlds
  from dreamer import config as config_lib
  from dreamer.agent import Agent

  sys.path.insert(0, str(ROOT / "scripts"))
  import throughput

  b = config.num_envs
  world = worlds.make(config.world, num_envs=b, seed=config.seed, **config_lib.world_kwargs(config, train=True))
  agent = Agent(config, world.spec)
  state, rb = agent.init(jax.random.PRNGKey(config.seed))
  with world:
    rb, obs, world_s = throughput.fill_replay(agent, world, rb, max(200, config.learning_starts // b), config.seed)
  emit(world_env_steps_per_s=b / world_s)
  act_s = time_acting(agent, state.params, obs, steps=act_steps, world_s=world_s)
  updates_per_s = time_learning(agent, state, rb, chunks=chunks)
  emit(peak_memory=peak_memory(), device=peaks(jax.devices()[0].device_kind))
  return updates_per_s, b / (act_s + world_s)


def throughput_part(args: argparse.Namespace) -> None:
  from dreamer import config as config_lib
  from dreamer import cost, dream_ratio

  sets = overrides(dtype=args.dtype, smoke=args.smoke)
  config = config_lib.load(args.preset, sets)
  names = ["search", "num_simulations", "num_envs", "batch_size", "unroll_steps", "updates_per_chunk"]
  emit(
    overrides=sets,
    settings={
      **{n: getattr(config, n) for n in names},
      "frame_size": config.atari_frame_size,
      "reanalysed_samples": dream_ratio.reanalysed_samples(config),
    },
  )
  updates_per_s, acting_per_s = measure(config, act_steps=args.act_steps, chunks=args.chunks)
  emit(projected_run_s=cost.projected_seconds(config, updates_per_s=updates_per_s, acting_env_steps_per_s=acting_per_s))


def cost_part(args: argparse.Namespace) -> None:
  """The cost model's flops and bytes of one update and one acting step of `args.preset` in each of `args.dtypes`,
  emitted by dtype. The parent runs it on the host's CPU (JAX_PLATFORMS=cpu) beside the device's parts, so that
  compiling it costs the device's time nothing. The flops are the programs' (the CPU compiler counts the same
  matmuls and convolutions); the bytes follow the CPU compiler's fusion and are indicative only. It runs at the
  normal priority: niced, it starved for 17 minutes on a loaded 2-core machine and ran past the smoke's budget."""
  import jax

  from dreamer import agent as agent_lib
  from dreamer import config as config_lib
  from dreamer import cost

  for dtype in args.dtypes:
    config = config_lib.load(args.preset, overrides(dtype=dtype, smoke=args.smoke))
    spec = agent_lib.check_world(config.world, "world", **config_lib.world_kwargs(config, train=True))
    agent = agent_lib.Agent(config, spec)
    state, rb = jax.eval_shape(agent.init, jax.random.PRNGKey(0))  # shapes only: nothing is allocated
    update, _ = cost.update_cost(agent, state, rb)
    acting = cost.acting_cost(agent, state.params, config.num_envs)
    counted = {"update": update.total, "acting_step": acting.total}
    emit(**{dtype: {part: {"flops": c.flops, "bytes": c.bytes} for part, c in counted.items()}})


def achieved(counts: dict, *, run: dict, peak: dict | None) -> dict:
  """The cost model's counts of one update and one acting step (`counts`, from cost_part) times how many of them
  ran per second in the throughput `run`, over the device's `peak` (dtype_peak) when it has one."""
  out = {"peak": peak, "counted_on": "the host CPU's XLA compiler (JAX_PLATFORMS=cpu)"}
  act_s = run.get("act_search_s_median")
  rates = {"update": run.get("learner_updates_per_s"), "acting_step": act_s and 1.0 / act_s}
  for part, per_s in rates.items():
    out[part] = dict(counts[part])
    if per_s is None:  # the throughput run did not get that far
      continue
    tflops = counts[part]["flops"] * per_s / 1e12
    out[part].update(per_s=per_s, achieved_tflops=tflops)
    if peak is not None:
      out[part]["fraction_of_peak"] = {name: tflops / p for name, p in peak["tflops"].items()}
  return out


def train_part(args: argparse.Namespace) -> None:
  from dreamer import config as config_lib
  from dreamer.train import train

  sets = overrides(dtype=args.dtype, smoke=args.smoke, train=True)
  emit(preset=TRAIN_PRESET, overrides=sets)
  summary = train(config_lib.load(TRAIN_PRESET, sets), args.run_dir, console=False, resume=False)
  keys = ["env_steps", "updates", "episodes", "wall_s", "stopped", "checkpoint"]
  emit(
    summary={k: summary.get(k) for k in keys},
    time_split_s={k[5:-2]: v for k, v in summary.items() if k.startswith("time/")},
  )


def part(args: argparse.Namespace) -> None:
  """One part, in its own process: its figures go to stdout as MARK lines; an exception becomes its error."""
  try:
    {"device": device_part, "throughput": throughput_part, "cost": cost_part, "train": train_part}[args.part](args)
  except Exception as e:  # noqa: BLE001 - reported to the parent, which keeps the other parts
    emit(error=f"{type(e).__name__}: {e}")
    raise SystemExit(1) from None


# --- the parent: runs the parts, keeps the budget, writes the document ------------------------------------------


def exited(proc: subprocess.Popen, seconds: float) -> bool:
  try:
    proc.wait(timeout=max(seconds, 0.0))
    return True
  except subprocess.TimeoutExpired:
    return False


def wait_or_stop(proc: subprocess.Popen, *, timeout: float, stop_after: float | None) -> str | None:
  """Waits for `proc`; returns what cut it short, or None. With `stop_after`: a SIGINT then, as a user stops a
  training run (it checkpoints and exits: not an error); if it has not exited within STOP_GRACE_S, a second
  SIGINT (it exits at once). Else it is killed at `timeout`, and the answer is TIMED_OUT."""
  if stop_after is not None:
    if exited(proc, stop_after):
      return None
    proc.send_signal(signal.SIGINT)
    if exited(proc, STOP_GRACE_S):
      return None
    proc.send_signal(signal.SIGINT)
    if exited(proc, EXIT_GRACE_S):
      return f"did not exit within {STOP_GRACE_S:.0f} s of a SIGINT; a second SIGINT stopped it at once"
    why = "did not exit after two SIGINTs; killed"
  elif exited(proc, timeout):
    return None
  else:
    why = TIMED_OUT
  proc.kill()
  proc.wait()
  return why


class Running(NamedTuple):
  """A part's process under way: its reader threads merge what it prints into `result` and set `result["wall_s"]`
  when its output ends (its exit)."""

  proc: subprocess.Popen
  readers: list[threading.Thread]
  result: dict
  tail: collections.deque
  start: float


def start_part(command: list[str], *, label: str, limit: str, env=None) -> Running:
  """Starts one part's process; its MARK lines are merged into the result as they come, its stderr relayed."""
  print(f"[{label}] starts, {limit}", file=sys.stderr, flush=True)
  start = time.monotonic()
  proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT)
  result: dict = {}
  tail: collections.deque[str] = collections.deque(maxlen=8)

  def collect() -> None:
    for line in proc.stdout:  # read to the end, whatever comes: a full pipe would block the part
      if not line.startswith(MARK):
        continue
      try:
        merge(result, json.loads(line[len(MARK) :]))
      except json.JSONDecodeError:  # a line torn by a kill
        continue
      print(f"[{label}] {line[len(MARK) :]}", end="", file=sys.stderr, flush=True)  # progress, as it comes
    result["wall_s"] = time.monotonic() - start

  def relay() -> None:
    for line in proc.stderr:
      tail.append(line.rstrip())
      print(f"[{label}] {line}", end="", file=sys.stderr, flush=True)

  readers = [threading.Thread(target=collect, daemon=True), threading.Thread(target=relay, daemon=True)]
  for reader in readers:
    reader.start()
  return Running(proc, readers, result, tail, start)


def finish_part(running: Running, *, timeout: float, stop_after: float | None = None) -> dict:
  """Waits for a started part (wait_or_stop); returns the merge of the JSON objects it printed, its wall seconds
  and, when it failed or was cut short, an "error" (its own, else why, with the end of its stderr)."""
  cut = wait_or_stop(running.proc, timeout=timeout, stop_after=stop_after)
  for reader in running.readers:
    reader.join(timeout=10)
  result = running.result
  elapsed = time.monotonic() - running.start
  result.setdefault("wall_s", elapsed)
  if cut == TIMED_OUT:  # since the part started: a part collected late (the cost counts) waited longer than this
    cut = f"timed out after {elapsed:.0f} s, its share of the time budget; killed"
  if cut or running.proc.returncode:
    why = cut or f"exit status {running.proc.returncode}"
    said = " | ".join(running.tail)[-1500:]  # XLA's warnings can be long
    result["error"] = result.get("error") or (f"{why}; stderr ends: {said}" if said else why)
  return result


def run_part(command: list[str], *, label: str, timeout: float, stop_after: float | None = None, env=None) -> dict:
  """Runs one part's process to its end, its deadline or its SIGINT (finish_part)."""
  limit = f"SIGINT after {stop_after:.0f} s" if stop_after is not None else f"up to {timeout:.0f} s"
  return finish_part(start_part(command, label=label, limit=limit, env=env), timeout=timeout, stop_after=stop_after)


class Plan:
  """The time budget. The training run's share is set aside first (its minutes, then the time to checkpoint and
  exit); the device part gets at most a minute; each throughput run gets what is left over the runs still to
  go, so time one leaves unused passes to the next."""

  def __init__(self, *, budget_s: float, train_s: float | None):
    self.budget_s, self.train_s = budget_s, train_s
    self.end = time.monotonic() + budget_s
    self.reserve = 0.0 if train_s is None else train_s + STOP_GRACE_S + 2 * EXIT_GRACE_S

  def left(self) -> float:
    return self.end - time.monotonic()

  def share(self, runs_left: int) -> float:
    return max((self.left() - self.reserve) / runs_left, 0.0)

  def train_stop(self) -> float:
    return max(min(self.train_s, self.left() - STOP_GRACE_S - 2 * EXIT_GRACE_S), 0.0)


def command(*options: str) -> list[str]:
  return [sys.executable, str(Path(__file__).resolve()), *options]


def throughput_pairs(args: argparse.Namespace) -> list[tuple[str, str]]:
  """(preset, dtype) of each throughput run: every pair; --smoke: each preset once, the dtypes in turn (each
  code path runs, at half the compiling), turned so that the training run's preset gets the training run's dtype
  (the training then reuses that run's compiled programs: it compiles no learner of its own)."""
  if not args.smoke:
    return [(p, d) for p in args.presets for d in args.dtypes]
  turn = 0
  if TRAIN_PRESET in args.presets and args.train_dtype in args.dtypes:
    turn = args.dtypes.index(args.train_dtype) - args.presets.index(TRAIN_PRESET)
  return [(p, args.dtypes[(i + turn) % len(args.dtypes)]) for i, p in enumerate(args.presets)]


def throughput_runs(args: argparse.Namespace, plan: Plan, run) -> dict:
  pairs = throughput_pairs(args)
  out: dict = {p: {} for p in args.presets}
  sizes = ["--act-steps", str(args.act_steps), "--chunks", str(args.chunks), *(["--smoke"] if args.smoke else [])]
  for i, (preset, dtype) in enumerate(pairs):
    seconds = plan.share(len(pairs) - i)
    if seconds < 5:
      out[preset][dtype] = {"error": "skipped: the time budget is spent"}
      continue
    options = ["--part", "throughput", "--preset", preset, "--dtype", dtype, *sizes]
    out[preset][dtype] = {**run(command(*options), label=f"{preset} {dtype}", timeout=seconds), "limit_s": seconds}
  return out


def start_costs(args: argparse.Namespace) -> dict[str, Running]:
  """One cost_part per preset, for the dtypes of its throughput runs, on the host's CPU: started first, it counts
  while the device's parts run, and costs the device nothing."""
  dtypes: dict[str, list[str]] = collections.defaultdict(list)
  for preset, dtype in throughput_pairs(args):
    dtypes[preset].append(dtype)
  env = {**os.environ, "JAX_PLATFORMS": "cpu"}  # no accelerator client: the device's memory stays the parts'
  smoke = ["--smoke"] if args.smoke else []
  return {
    preset: start_part(
      command("--part", "cost", "--preset", preset, "--dtypes", *names, *smoke),
      label=f"{preset} cost (cpu)",
      limit="until the budget ends",
      env=env,
    )
    for preset, names in dtypes.items()
  }


def attach_costs(throughput: dict, *, counted: dict[str, dict]) -> None:
  """Puts each throughput run's `cost` (achieved, over the peaks its run reported) in place from its preset's
  counts, or the count's error; `count_s`: how long its preset's counting ran."""
  for preset, by_dtype in throughput.items():
    for dtype, run in by_dtype.items():
      counts = counted[preset].get(dtype)
      if counts is None:
        run["cost"] = {"error": counted[preset].get("error") or "not counted"}
      else:
        run["cost"] = achieved(counts, run=run, peak=dtype_peak(run.get("device", {}), dtype))
      run["cost"]["count_s"] = counted[preset].get("wall_s")


def count_costs(args: argparse.Namespace, plan: Plan, device_parts) -> dict:
  """Runs `device_parts()` (the device's parts, returning the document's sections) while the cost processes
  count on the host, then puts the costs into the throughput runs. The counters are killed if anything fails."""
  costs = start_costs(args) if "throughput" in args.parts else {}
  try:
    result = device_parts()
    if costs:
      counted = {preset: finish_part(c, timeout=max(plan.left(), 10.0)) for preset, c in costs.items()}
      attach_costs(result["throughput"], counted=counted)
    return result
  finally:
    for running in costs.values():
      if running.proc.poll() is None:
        running.proc.kill()
        running.proc.wait()


def training_run(args: argparse.Namespace, plan: Plan, run, run_dir: Path) -> dict:
  """The training run, stopped at its minutes, and what its metrics.jsonl holds: the count of its records, of
  its training records (one per learner chunk) and the last of them."""
  from dreamer.logger import read_metrics

  stop = plan.train_stop()
  if stop < 30:
    return {"error": "skipped: the time budget is spent", "run_dir": str(run_dir)}
  options = ["--part", "train", "--run-dir", str(run_dir), "--dtype", args.train_dtype]
  result = run(command(*options, *(["--smoke"] if args.smoke else [])), label="train", timeout=stop, stop_after=stop)
  result.update(run_dir=str(run_dir), stop_after_s=stop)
  if (run_dir / "metrics.jsonl").exists():
    records = read_metrics(run_dir)
    learning = [r for r in records if "speed/updates_per_s" in r]
    result["metrics"] = {
      "path": str(run_dir / "metrics.jsonl"),
      "records": len(records),
      "training_records": len(learning),
      "last_training_record": learning[-1] if learning else None,
    }
  return result


def errors(result: dict, where: str = "") -> list[str]:
  """Every "error" in the document, by its path."""
  found = [f"{where or '/'}: {result['error']}"] if isinstance(result.get("error"), str) else []
  for key, value in result.items():
    if isinstance(value, dict):
      found += errors(value, f"{where}/{key}")
  return found


def check(args: argparse.Namespace) -> int:
  out = Path(args.out)
  if (out / "gpu_check.json").exists() or (out / "train").exists():
    raise SystemExit(f"gpu_check: {out} already holds a check; give a new --out")
  out.mkdir(parents=True, exist_ok=True)
  from dreamer.suites import commit

  start = time.monotonic()
  plan = Plan(budget_s=args.budget_minutes * 60, train_s=args.train_minutes * 60 if "train" in args.parts else None)
  result: dict = {"commit": commit(), "smoke": args.smoke, "world": WORLD, "out": str(out)}
  result["budget"] = {"seconds": plan.budget_s, "train_s": plan.train_s, "train_reserve_s": plan.reserve}
  # A compilation cache shared by the parts, new for this check (compile seconds are cold): the training run
  # then reuses the programs the throughput run of its preset and dtype compiled.
  with tempfile.TemporaryDirectory(prefix="gpu-check-xla-") as cache:
    env = {**os.environ, "JAX_COMPILATION_CACHE_DIR": cache, "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0"}
    env["JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES"] = "0"

    def run(cmd, **kwargs):
      return run_part(cmd, env=env, **kwargs)

    def device_parts() -> dict:
      sections = {}
      if "device" in args.parts:
        runs = 1 + len(throughput_pairs(args)) * ("throughput" in args.parts)
        sections["device"] = run(command("--part", "device"), label="device", timeout=min(60.0, plan.share(runs)))
      if "throughput" in args.parts:
        sections["throughput"] = throughput_runs(args, plan, run)
      if "train" in args.parts:
        sections["train"] = training_run(args, plan, run, out / "train")
      return sections

    result.update(count_costs(args, plan, device_parts))
  result["wall_s"] = time.monotonic() - start
  result["errors"] = errors(result)
  text = json.dumps(result, indent=2)
  (out / "gpu_check.json").write_text(text + "\n")
  print(text)
  return 1 if result["errors"] else 0


def parse_args() -> argparse.Namespace:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--out", type=Path, help="folder for gpu_check.json and the training run (train/)")
  parser.add_argument(
    "--smoke", action="store_true", help="tiny sizes, for a CPU: the code runs, the figures mean little"
  )
  parser.add_argument("--train-minutes", type=float, help="the training run's minutes (default 2; --smoke: 10, a cap)")
  parser.add_argument("--budget-minutes", type=float, help="the whole check's minutes (default 8; --smoke: 30)")
  parser.add_argument(
    "--parts", nargs="+", choices=["device", "throughput", "train"], default=["device", "throughput", "train"]
  )
  parser.add_argument("--presets", nargs="+", choices=PRESETS, default=list(PRESETS))
  parser.add_argument("--dtypes", nargs="+", choices=DTYPES, default=list(DTYPES))
  parser.add_argument("--train-dtype", choices=DTYPES, default="float32", help="the training run's compute_dtype")
  parser.add_argument("--act-steps", type=int, help="acting searches timed per run (default 20; --smoke: 3)")
  parser.add_argument("--chunks", type=int, help="learner chunks timed per run (default 3; --smoke: 2)")
  # A part's own process: set by the parent, not by hand.
  parser.add_argument("--part", choices=["device", "throughput", "cost", "train"], help=argparse.SUPPRESS)
  parser.add_argument("--preset", choices=PRESETS, help=argparse.SUPPRESS)
  parser.add_argument("--dtype", choices=DTYPES, help=argparse.SUPPRESS)
  parser.add_argument("--run-dir", type=Path, help=argparse.SUPPRESS)
  args = parser.parse_args()
  if args.part is None and args.out is None:
    parser.error("--out is required")
  defaults = {"train_minutes": (2.0, 10.0), "budget_minutes": (8.0, 30.0), "act_steps": (20, 3), "chunks": (3, 2)}
  for name, (full, smoke) in defaults.items():
    if getattr(args, name) is None:
      setattr(args, name, smoke if args.smoke else full)
  return args


def main() -> None:
  args = parse_args()
  missing = missing_modules(NEEDED)
  if missing:
    print(f"gpu_check: missing {', '.join(missing)}: {INSTALL}", file=sys.stderr)
    raise SystemExit(2)
  if args.part:
    part(args)
    return
  raise SystemExit(check(args))


if __name__ == "__main__":
  main()
