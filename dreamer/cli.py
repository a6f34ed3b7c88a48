"""The `dreamer` command: train, eval, bench, report, compare, play and dream.

User mistakes print one line, never a traceback.

Exit codes: 0 done; 1 the run stopped on a failure it reports (non-finite loss, unwritable run directory);
2 a user mistake; 128 + signal number when SIGINT/SIGTERM stopped training after its checkpoint was written.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import math
import os
import signal
import sys
import time
from pathlib import Path

from dreamer import config as config_lib

DESCRIPTION = """\
dreamer: an EfficientZero-style model-based RL agent in JAX.

  dreamer train --config cartpole --logdir runs/cp --seed 1 --set num_simulations=32
  dreamer train --logdir runs/cp                       # resume (also after a crash or kill)
  dreamer train --logdir runs/cp --set total_env_steps=20000   # resume and train longer
  dreamer eval --checkpoint runs/cp --episodes 32
  dreamer bench atari100k --games Pong Breakout --seeds 0 1 2 --config atari100k-fast --logdir runs/bench
  dreamer report runs/bench --out runs/bench/report
  dreamer compare --config cartpole --grid num_simulations=2,8,32 --seeds 0 1 2 --logdir runs/cmp --jobs 2
  dreamer play --checkpoint runs/cp --world cartpole:long-pole --steps 2000 --out runs/rec-long
  dreamer dream --checkpoint runs/cp --experience runs/rec-long --anchor runs/rec-base --out runs/dream
"""


class _Parser(argparse.ArgumentParser):
  """argparse, but a mistake is one line (no usage block) that points at --help, and options are never
  abbreviated (`--episode 3` is a mistake, not `--episodes 3`)."""

  def __init__(self, *args, **kwargs):
    super().__init__(*args, allow_abbrev=False, **kwargs)

  def error(self, message: str):
    raise config_lib.ConfigError(f"{message} (see '{self.prog} --help')")


def _parser() -> argparse.ArgumentParser:
  parser = _Parser(prog="dreamer", description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
  sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=_Parser)

  train = sub.add_parser(
    "train",
    help="train an agent from a preset or a TOML config file, or resume a run",
    description="Train an agent. Writes metrics.jsonl, config.json and checkpoints/ to the run directory. "
    "On a directory that already holds a run, training resumes from its newest readable "
    "checkpoint (use --fresh to replace the run instead).",
  )
  train.add_argument(
    "--config",
    metavar="PRESET_OR_PATH",
    help=f"a preset name ({', '.join(config_lib.presets())}) or a path to a .toml file; "
    f"required for a new run; when resuming, defaults to the run's saved config",
  )
  train.add_argument(
    "--logdir", metavar="DIR", help="run directory (default: runs/<preset>-seed<N>-<time>); an existing run is resumed"
  )
  train.add_argument(
    "--fresh",
    action="store_true",
    help="replace the run in --logdir: it is moved aside to DIR.replaced-<time>, not deleted",
  )
  train.add_argument("--seed", type=int, metavar="N", help="random seed (overrides the config's seed)")
  train.add_argument(
    "--set",
    action="append",
    default=[],
    metavar="KEY=VALUE",
    dest="overrides",
    help="override one config key, e.g. --set batch_size=128 (repeatable); values are TOML "
    "(numbers, true/false, [lists]) or bare strings",
  )
  train.add_argument(
    "--stop-after-updates",
    type=int,
    metavar="N",
    help="checkpoint and exit once N updates are done (for time-sliced jobs); resume later",
  )
  train.add_argument(
    "--quiet", action="store_true", help="no console progress lines (warnings still printed; metrics.jsonl written)"
  )
  hosts = train.add_argument_group(
    "a run over several processes (hosts)",
    "every process runs the same command with its own --process-id; each option defaults to the environment "
    "variable named (see docs/devices.md)",
  )
  hosts.add_argument("--coordinator", metavar="HOST:PORT", help="process 0's address (JAX_COORDINATOR_ADDRESS)")
  hosts.add_argument("--num-processes", type=int, metavar="N", help="how many processes (JAX_NUM_PROCESSES)")
  hosts.add_argument("--process-id", type=int, metavar="K", help="this process, 0..N-1 (JAX_PROCESS_ID)")
  hosts.add_argument(
    "--join-timeout", type=int, default=300, metavar="S", help="seconds to wait for every process to join (300)"
  )

  ev = sub.add_parser(
    "eval",
    help="evaluate a checkpoint with search and with the policy network alone",
    description="Evaluate a checkpoint: prints JSON with the mean return acting with search "
    "and acting with the policy network alone.",
  )
  ev.add_argument(
    "--checkpoint",
    required=True,
    metavar="DIR",
    help="a run directory (its newest readable checkpoint is used) or a checkpoints/<step> directory",
  )
  ev.add_argument(
    "--world",
    metavar="ID",
    help="evaluate on this world instead of the training one (same observation shape and actions)",
  )
  ev.add_argument("--episodes", type=int, default=32, metavar="N", help="episodes per mode (default: 32)")
  ev.add_argument("--seed", type=int, default=12345, metavar="N", help="seed of the evaluation worlds")
  ev.add_argument(
    "--temperature",
    type=_finite,
    default=0.0,
    metavar="T",
    help="0 (default, the protocol): greedy; above 0 both modes sample as acting does at T (search with its "
    "noise scaled by T, the policy from softmax(logits / T))",
  )
  ev.add_argument(
    "--search-set",
    action="append",
    default=[],
    metavar="KEY=VALUE",
    help="evaluate with other search settings over the checkpoint's own networks (repeatable; only "
    f"{', '.join(SEARCH_KEYS)}), e.g. a search=none run searched with search=gumbel",
  )
  ev.add_argument(
    "--video",
    metavar="FILE",
    help="also write the first episode acting with search as an mp4 (needs the 'video' extra)",
  )

  bench = sub.add_parser(
    "bench",
    help="run a benchmark suite: one training run per game and seed, each writing result.json",
    description="Run a benchmark suite (or a subset). Runs go to LOGDIR/<Game>/seed<N>; finished runs are "
    "skipped and stopped ones resume, so the same command can be re-issued until all are done.",
  )
  bench.add_argument("suite", metavar="SUITE", help="the suite: atari100k")
  bench.add_argument("--games", nargs="+", metavar="GAME", help="games to run (default: the whole suite)")
  bench.add_argument(
    "--seeds", nargs="+", type=int, default=[0, 1, 2], metavar="N", help="seeds per game (default: 0 1 2)"
  )
  bench.add_argument(
    "--config",
    default="atari100k",
    metavar="PRESET_OR_PATH",
    help="preset or .toml file for every run (default: atari100k); world and seed are set per run",
  )
  bench.add_argument(
    "--set",
    action="append",
    default=[],
    metavar="KEY=VALUE",
    dest="overrides",
    help="override one config key for every run (repeatable)",
  )
  bench.add_argument("--logdir", required=True, metavar="DIR", help="directory holding the suite's runs")
  bench.add_argument("--method", metavar="LABEL", help="label of these runs in reports (default: the preset name)")
  bench.add_argument(
    "--devices",
    type=int,
    default=0,
    metavar="N",
    help="train N runs at once as separate processes, each on a device of its own (default: one at a time, here)",
  )
  bench.add_argument("--quiet", action="store_true", help="no console progress line")

  rep = sub.add_parser(
    "report",
    help="write a Markdown + PNG report of benchmark runs beside published baselines",
    description="Per-game scores, human-normalised scores, and mean, median, IQM and optimality gap with "
    "stratified-bootstrap 95% confidence intervals, for the runs found under RUN_DIRS (searched "
    "for result.json) and for the published baselines shipped with dreamer.",
  )
  rep.add_argument("runs", nargs="+", metavar="RUN_DIR", help="run directories, or directories holding them")
  rep.add_argument("--out", required=True, metavar="DIR", help="where report.md, the PNGs and summary.json go")
  rep.add_argument("--reps", type=int, default=2000, metavar="N", help="bootstrap repetitions (default: 2000)")
  rep.add_argument("--seed", type=int, default=0, metavar="N", help="seed of the bootstrap (default: 0)")
  rep.add_argument(
    "--baselines", nargs="+", metavar="METHOD", help="published methods to show (default: all shipped ones)"
  )
  cmp = sub.add_parser(
    "compare",
    help="run a grid of configurations x seeds (or take finished runs) and compare them",
    description="Trains every configuration of --grid (each key's values crossed with the others') on each of "
    "--worlds with each of --seeds, --jobs runs at a time, into LOGDIR/<world>/<config>/seed<N>; "
    "finished runs are skipped and interrupted ones resume. Then writes a report of these and any "
    "--runs: returns against real env steps and against wall-clock with 95% bootstrap bands over "
    "seeds, final returns with CIs, env steps to --threshold, and each configuration's dream ratio.",
  )
  cmp.add_argument("--config", metavar="PRESET_OR_PATH", help="preset or .toml file of the grid's runs")
  cmp.add_argument(
    "--grid",
    nargs="+",
    default=[],
    metavar="KEY=V1,V2",
    help="config keys to vary, e.g. num_simulations=2,8,32 search=none,gumbel",
  )
  cmp.add_argument("--worlds", nargs="+", metavar="ID", help="worlds to run on (default: the config's world)")
  cmp.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2], metavar="N", help="seeds (default: 0 1 2)")
  cmp.add_argument(
    "--set",
    action="append",
    default=[],
    metavar="KEY=VALUE",
    dest="overrides",
    help="override one config key for every run (repeatable)",
  )
  cmp.add_argument("--logdir", metavar="DIR", help="directory holding the grid's runs")
  cmp.add_argument("--jobs", type=int, default=1, metavar="N", help="runs trained at once (default: 1)")
  cmp.add_argument(
    "--devices",
    type=int,
    default=0,
    metavar="N",
    help="train N runs at once, each on a device of its own (the first N devices JAX sees; instead of --jobs)",
  )
  cmp.add_argument(
    "--runs",
    nargs="+",
    default=[],
    metavar="RUN_DIR",
    help="finished run directories (or directories holding them) to include in the report",
  )
  cmp.add_argument(
    "--out", metavar="DIR", help="where report.md, curves.png and summary.json go (default: LOGDIR/report)"
  )
  cmp.add_argument(
    "--threshold",
    type=_finite,
    metavar="RETURN",
    help="report the env steps and seconds each run took to reach this evaluation return",
  )
  cmp.add_argument("--reps", type=int, default=2000, metavar="N", help="bootstrap repetitions (default: 2000)")
  cmp.add_argument("--quiet", action="store_true", help="no line per started run")

  play = sub.add_parser(
    "play",
    help="act in a world with a checkpoint and record what happened (for dreamer dream)",
    description="Act in a real world with a checkpoint (with search, or with the policy network alone) and "
    "record observations, actions, rewards, episode ends and search statistics to an experience "
    "directory (format: dreamer/experience.py). Worlds run in training mode (Atari: clipped "
    "rewards, a lost life ends an episode).",
  )
  play.add_argument("--checkpoint", required=True, metavar="DIR", help="a run directory or checkpoints/<step>")
  play.add_argument("--world", metavar="ID", help="the world to play (default: the checkpoint's)")
  play.add_argument(
    "--steps",
    type=int,
    required=True,
    metavar="N",
    help="real env steps to record, in all (rounded up to a multiple of --envs)",
  )
  play.add_argument("--envs", type=int, default=8, metavar="N", help="envs stepped together (default: 8)")
  play.add_argument("--policy", action="store_true", help="act with the policy network alone, not search")
  play.add_argument(
    "--temperature",
    type=_finite,
    metavar="T",
    help="acting temperature (default: the checkpoint's last training temperature)",
  )
  play.add_argument("--seed", type=int, default=0, metavar="N", help="seed of the world and the search")
  play.add_argument("--out", required=True, metavar="DIR", help="the experience directory to write (new)")

  dr = sub.add_parser(
    "dream",
    help="consolidate recorded experience into the policy weights through imagined search",
    description="Adapt the checkpoint's model to the recorded experience, rehearse inside it with Gumbel "
    "search from recorded states, distil the search targets into the policy head (search keeps its "
    "prior in a second head by default), and accept the new weights only if the experience world's "
    "policy-only return rose, the anchor world's kept anchor_keep (95%%) of its baseline and both "
    "worlds' search returns kept search_keep (90%%). Writes a checkpoint and a report "
    "(report.md, report.json, PNGs) to --out; re-issue the same command to resume.",
  )
  dr.add_argument("--checkpoint", required=True, metavar="DIR", help="a run directory or checkpoints/<step>")
  dr.add_argument("--experience", required=True, metavar="DIR", help="an experience recorded by dreamer play")
  dr.add_argument("--anchor", metavar="DIR", help="an experience of the task to keep (recorded by dreamer play)")
  dr.add_argument(
    "--budget",
    type=_finite,
    metavar="RATIO",
    help="imagined model steps per real recorded env step (default: 1000; the setting dream_ratio)",
  )
  dr.add_argument(
    "--control",
    action="store_true",
    help="the compute-matched control: real-data fine-tuning of the same compute, no imagination",
  )
  dr.add_argument("--seed", type=int, metavar="N", help="seed (default: 0)")
  dr.add_argument(
    "--set",
    action="append",
    default=[],
    metavar="KEY=VALUE",
    dest="overrides",
    help="override one dream setting (see dreamer/dream.py:DreamConfig), e.g. --set train=all",
  )
  dr.add_argument("--out", required=True, metavar="DIR", help="output directory (new, or this job's, to resume)")
  dr.add_argument("--quiet", action="store_true", help="no progress lines")

  runs = sub.add_parser(
    "runs",
    help="list the training runs under a folder with their status and latest numbers",
    description="List every run directory (one holding config.json and metrics.jsonl) at or under DIR, sorted "
    "by path: world, env steps, updates, best and last evaluation return (with search and with the policy "
    "alone), wall-clock seconds, dream ratio, and status (running, finished, stopped (reason), diverged, "
    "unreadable (reason)).",
  )
  runs.add_argument("dir", metavar="DIR", help="a folder holding runs (searched recursively), or a run directory")
  runs.add_argument("--json", action="store_true", help="print a JSON list of objects, one per run, for scripts")
  return parser


def _check_count(name: str, value: int | None, low: int) -> None:
  """ConfigError unless the integer option `name` is None or in [low, INT_MAX] (see config.INT_MAX)."""
  if value is not None and value < low:
    raise config_lib.ConfigError(f"{name} must be >= {low}, got {value}")
  if value is not None and value > config_lib.INT_MAX:
    raise config_lib.ConfigError(f"{name} must be at most {config_lib.INT_MAX} (2**31 - 1), got {value}")


def _finite(text: str) -> float:
  """argparse type of a float option: a finite number (NaN and +-inf mean nothing for any of them)."""
  try:
    value = float(text)
  except ValueError:
    raise argparse.ArgumentTypeError(f"must be a number, got {text!r}") from None
  if not math.isfinite(value):
    raise argparse.ArgumentTypeError(f"must be a finite number, got {text!r}")
  return value


def _check_fresh(logdir: Path) -> None:
  """ConfigError when --fresh could not move `logdir` aside: the current directory or one holding it."""
  where, cwd = logdir.resolve(), Path.cwd().resolve()
  if where == cwd or where in cwd.parents:
    raise config_lib.ConfigError(
      f"--fresh cannot move --logdir {str(logdir)!r} aside: it is the current directory or holds it; run the "
      f"command from outside the run directory"
    )


def _train_config(args: argparse.Namespace) -> tuple[config_lib.Config, Path]:
  """The config and run directory of `dreamer train`, every argument checked (nothing is changed on disk)."""
  _check_count("--stop-after-updates", args.stop_after_updates, 1)
  seed = {"seed": args.seed} if args.seed is not None else {}
  if args.logdir is None:
    if args.config is None:
      raise config_lib.ConfigError("give --config PRESET_OR_PATH to start a run, or --logdir DIR to resume one")
    config = config_lib.load(args.config, args.overrides, **seed)
    args.logdir = f"runs/{Path(args.config).stem}-seed{config.seed}-{time.strftime('%Y%m%d-%H%M%S')}"
  logdir = Path(args.logdir)
  saved = logdir / "config.json"
  if args.fresh:
    _check_fresh(logdir)
    if saved.exists() and args.config is None:
      raise config_lib.ConfigError("--fresh starts a new run: give --config PRESET_OR_PATH too")
  if args.config is not None:
    return config_lib.load(args.config, args.overrides, **seed), logdir
  if not saved.exists():
    raise config_lib.ConfigError(
      f"--logdir {str(logdir)!r} holds no run to resume; give --config PRESET_OR_PATH to start one"
    )
  table = config_lib.load_saved(saved).to_dict()
  overrides = args.overrides + [f"seed={args.seed}"] * bool(seed)
  return config_lib.from_dict(table, f"the saved config {str(saved)!r}", overrides), logdir


def _move_aside(logdir: Path) -> None:
  """--fresh: the run in `logdir` (if any) moved to DIR.replaced-<time>, once no other process trains in it."""
  from dreamer.checkpoint import StorageError
  from dreamer.runlock import RunLock

  if not (logdir / "config.json").exists():
    return
  aside = logdir.with_name(f"{logdir.name}.replaced-{time.strftime('%Y%m%d-%H%M%S')}")
  try:
    with RunLock(logdir):
      logdir.rename(aside)
  except OSError as e:
    raise StorageError(f"cannot move the run {str(logdir)!r} aside to {str(aside)!r}: {e.strerror or e}") from None
  print(f"dreamer: moved the previous run to {str(aside)!r}", file=sys.stderr)


def _join(args: argparse.Namespace) -> None:
  """Joins the run's other processes when the options or the environment name a coordinator (before anything
  touches JAX's devices); a run over several processes needs its --logdir spelled out, and --fresh is refused
  (each process would move the run aside)."""
  from dreamer import distributed

  join = distributed.settings(
    coordinator=args.coordinator,
    num_processes=args.num_processes,
    process_id=args.process_id,
    timeout_s=args.join_timeout,
  )
  if join is None or join.num_processes == 1:
    return
  if args.logdir is None or args.fresh:
    what = "--fresh is not allowed" if args.fresh else "give --logdir DIR"
    raise config_lib.ConfigError(
      f"a run over {join.num_processes} processes needs one run directory that every process names: {what} "
      f"(start a new run in a new directory)"
    )
  distributed.initialize(join)


def _train(args: argparse.Namespace) -> int:
  from dreamer import agent, limits  # heavy imports only when needed
  from dreamer import train as train_lib

  # Everything is checked before anything on disk changes (--fresh moves the run aside only then).
  _join(args)
  config, logdir = _train_config(args)
  train_lib.check_trainable(config)
  spec = agent.check_world(config.world, "config key 'world'", **config_lib.world_kwargs(config, train=True))
  agent.check_network(config, spec)
  limits.check(limits.training(config, spec))
  if args.fresh:
    _move_aside(logdir)
  summary = train_lib.train(config, logdir, console=not args.quiet, stop_after_updates=args.stop_after_updates)
  print(json.dumps({"logdir": str(logdir), **summary}))
  if summary["stopped"] in ("SIGINT", "SIGTERM"):
    print(
      f"dreamer: stopped by {summary['stopped']} at env step {summary['env_steps']}; checkpoint written; "
      f"resume with: dreamer train --logdir {logdir}",
      file=sys.stderr,
    )
    return 128 + signal.Signals[summary["stopped"]].value
  return 0


def _bench(args: argparse.Namespace) -> int:
  from dreamer import suites

  paths, stopped = suites.run_suite(
    args.suite,
    games=args.games,
    seeds=args.seeds,
    logdir=args.logdir,
    preset=args.config,
    overrides=args.overrides,
    method=args.method,
    devices=args.devices,
    console=not args.quiet,
  )
  print(json.dumps({"logdir": args.logdir, "results": [str(p) for p in paths if p.exists()], "stopped": stopped}))
  if stopped:
    print(
      f"dreamer: stopped by {stopped}; the run in progress is checkpointed; re-issue the same dreamer bench "
      f"command to resume the suite",
      file=sys.stderr,
    )
    return 128 + signal.Signals[stopped].value
  return 0


def _report(args: argparse.Namespace) -> int:
  from dreamer import report

  _check_count("--reps", args.reps, 1)
  _check_count("--seed", args.seed, 0)
  summary = report.write_report(
    args.runs, args.out, reps=args.reps, seed=args.seed, baselines=tuple(args.baselines) if args.baselines else None
  )
  print(json.dumps({"out": args.out, "report": str(Path(args.out) / "report.md"), **summary}))
  return 0


def _compare(args: argparse.Namespace) -> int:
  from dreamer import compare

  if args.config is None and args.out is None and args.runs:
    raise config_lib.ConfigError("give --out DIR for the report of --runs")
  _check_count("--jobs", args.jobs, 1)
  _check_count("--devices", args.devices, 0)
  _check_count("--reps", args.reps, 1)
  result = compare.compare(
    args.config,
    run_dirs=args.runs,
    overrides=args.overrides,
    grid=args.grid,
    worlds=args.worlds,
    seeds=args.seeds,
    logdir=args.logdir,
    out=args.out,
    jobs=args.jobs,
    devices=args.devices,
    threshold=args.threshold,
    reps=args.reps,
    console=not args.quiet,
  )
  summary = result.pop("summary")
  print(
    json.dumps({**result, "configurations": {w: list(e) for w, e in summary["worlds"].items()} if summary else None})
  )
  if result["stopped"]:
    print(
      f"dreamer: stopped by {result['stopped']}; the runs in progress are checkpointed; re-issue the same "
      f"dreamer compare command to resume the grid",
      file=sys.stderr,
    )
    return 128 + signal.Signals[result["stopped"]].value
  if result["failed"]:
    for run_dir, log, code in result["failed"]:
      print(f"dreamer: error: run {run_dir!r} exited with code {code}; see {log!r}", file=sys.stderr)
    return 1
  return 0


def _eval(args: argparse.Namespace) -> int:
  import numpy as np

  from dreamer import agent, stats
  from dreamer import video as video_lib

  _check_count("--episodes", args.episodes, 1)
  _check_count("--seed", args.seed, 0)
  if args.temperature < 0:
    raise config_lib.ConfigError(f"--temperature must be >= 0 (0: greedy), got {args.temperature}")
  search_set = _search_settings(args.search_set)
  _check_acting_memory(args.checkpoint, envs=args.episodes, envs_flag="--episodes")
  if args.video is not None:
    _check_video_path(args.video)
  config, world, world_id, net, params, path = agent.load_acting(
    args.checkpoint, args.world, num_envs=args.episodes, seed=args.seed, train=False, render=args.video is not None
  )
  try:
    config = dataclasses.replace(config, **search_set)  # the combination is checked as every config is
  except config_lib.ConfigError:
    world.close()
    raise
  recorder = None if args.video is None else video_lib.Recorder(world, args.video, fps=config.video_fps)
  try:
    res = _evaluate_checkpoint(
      config, world, net, params, seed=args.seed, recorder=recorder, temperature=args.temperature
    )
  except BaseException:
    if recorder is not None:
      recorder.abandon()
    raise
  finally:
    world.close()
  out = {"checkpoint": path, "world": world_id, "episodes": args.episodes, "temperature": args.temperature}
  if search_set:
    out["search_set"] = search_set
  for name, r in res.items():
    out[f"{name}_return"] = float(np.mean(r.returns))
    out[f"{name}_return_std"] = float(np.std(r.returns))
    # Each game's score and the mean's 95% percentile-bootstrap interval over them (seeded by --seed): what a
    # claim such as "above random play" needs.
    _, low, high = stats.mean_ci(np.asarray(r.returns), rng=np.random.default_rng(args.seed))
    out[f"{name}_return_ci95"] = [low, high]
    out[f"{name}_returns"] = [float(x) for x in r.returns]
  if recorder is not None:
    try:
      recorder.finish()
      out.update(video=args.video, video_frames=recorder.count)
    except video_lib.VideoError as e:  # the returns stand; only the video is missing
      print(f"dreamer: warning: no video: {e}", file=sys.stderr)
      out.update(video=None, video_error=str(e))
  print(json.dumps(out))
  return 0


# The settings `dreamer eval --search-set` may change: the search's own (search.settings), not the model's
# discount or value-prefix horizon, which the networks were trained for.
SEARCH_KEYS = (
  "search",
  "num_simulations",
  "max_considered_actions",
  "q_normalization",
  "q_range_floor",
  "dirichlet_fraction",
  "dirichlet_alpha",
  "pb_c_init",
  "pb_c_base",
)


def _search_settings(items: list[str]) -> dict:
  """`--search-set KEY=VALUE` items as checked config values; ConfigError (one line) for a key that is not one
  of SEARCH_KEYS or a value of the wrong type, before any checkpoint is read."""
  out = {}
  for item in items:
    key, value = config_lib.parse_override(item)
    if key not in SEARCH_KEYS:
      raise config_lib.ConfigError(
        f"--search-set {item!r}: only the search's settings can change at evaluation ({', '.join(SEARCH_KEYS)})"
      )
    out[key] = config_lib.coerce(key, value, "--search-set")
  return out


def _evaluate_checkpoint(config, world, net, params, *, seed: int, recorder, temperature: float = 0.0) -> dict:
  """dreamer eval's episodes: with search and with the policy network alone (actor.evaluate), greedy at
  temperature 0, else sampled at it."""
  import jax

  from dreamer import actor as actor_lib
  from dreamer.networks import Model

  model = Model(net)
  if temperature == 0:  # keys as before the option existed: greedy evaluations stay what they were
    search_key, policy_act = jax.random.PRNGKey(seed), actor_lib.make_policy_act(model)
  else:
    search_key, policy_key = jax.random.split(jax.random.PRNGKey(seed))
    policy_act = actor_lib.make_sampled_policy_act(model, config, policy_key, temperature, config.eval_max_steps)
  return actor_lib.evaluate(
    world,
    params,
    actor_lib.make_act(model, config),
    policy_act,
    search_key,
    seed=seed,
    max_steps=config.eval_max_steps,
    stack=config.frame_stack,
    record=recorder,
    temperature=temperature,
  )


def _check_video_path(path: str) -> None:
  """ConfigError (one line) unless `path` names an .mp4 file that can be made; checked before any work."""
  target = Path(path)
  if target.suffix.lower() != ".mp4":
    raise config_lib.ConfigError(f"--video {path!r} must name an .mp4 file")
  if target.is_dir():
    raise config_lib.ConfigError(f"--video {path!r} is a directory; give an .mp4 file name")
  parent = next((p for p in [target.parent, *target.parent.parents] if p.exists()), Path("."))
  if not parent.is_dir() or not os.access(parent, os.W_OK):
    raise config_lib.ConfigError(f"--video {path!r} cannot be written: {str(parent)!r} is not a writable folder")


def _check_acting_memory(checkpoint: str, *, envs: int, envs_flag: str, steps: int = 0) -> None:
  """ConfigError when acting with `envs` envs (recording `steps` env steps) cannot fit in memory; run before
  the worlds are built. A checkpoint whose metadata does not read is left to the loading to report."""
  from dreamer import limits

  found = limits.checkpoint_config(checkpoint)
  if found is not None:
    limits.check(limits.acting(*found, envs=envs, envs_flag=envs_flag, steps=steps))


def _check_play_args(args: argparse.Namespace) -> Path:
  """The recording's directory, once every `dreamer play` argument is known to be usable (ConfigError else)."""
  for name, value, low in (("--steps", args.steps, 1), ("--envs", args.envs, 1), ("--seed", args.seed, 0)):
    _check_count(name, value, low)
  if args.temperature is not None and args.temperature < 0:
    raise config_lib.ConfigError(f"--temperature must be >= 0, got {args.temperature}")
  out = Path(args.out)
  if out.exists() and (not out.is_dir() or any(out.iterdir())):
    raise config_lib.ConfigError(
      f"--out {args.out!r} already exists and is not an empty directory; recordings are never overwritten"
    )
  _check_writable(out, "--out")
  return out


def _check_writable(path: Path, flag: str) -> None:
  """ConfigError unless `path` (which may not exist yet) could be created and written, found out before a long
  job rather than after it: its nearest existing ancestor must be a directory that takes a file. Leaves
  nothing behind."""
  import tempfile

  base = path.resolve()
  while not base.exists():
    base = base.parent
  try:
    if not base.is_dir():
      raise NotADirectoryError(f"{str(base)!r} is not a directory")
    with tempfile.TemporaryFile(dir=base):
      pass
  except OSError as e:
    raise config_lib.ConfigError(
      f"{flag} {str(path)!r} cannot be written ({e.strerror or e}); choose a writable place (nothing was recorded)"
    ) from None


def _play(args: argparse.Namespace) -> int:
  import jax

  from dreamer import actor as actor_lib
  from dreamer import agent, experience
  from dreamer.networks import Model

  out = _check_play_args(args)
  steps = -(-args.steps // args.envs)  # per env, rounded up
  _check_acting_memory(args.checkpoint, envs=args.envs, envs_flag="--envs", steps=steps * args.envs)
  config, world, world_id, net, params, path = agent.load_acting(
    args.checkpoint, args.world, num_envs=args.envs, seed=args.seed, train=True
  )
  model = Model(net)
  last = actor_lib.temperature(config, config.total_env_steps)  # the checkpoint's last training temperature
  config = actor_lib.policy_only(config) if args.policy else config
  act = actor_lib.make_act(model, config)
  temperature = last if args.temperature is None else args.temperature
  keys = iter(jax.random.split(jax.random.PRNGKey(args.seed), steps))

  def choose(obs):
    o = act(params, obs, next(keys), temperature)
    return o.action, o.policy, o.value

  t = time.perf_counter()
  arrays = experience.record(world, choose, steps=steps, seed=args.seed, stack=config.frame_stack)
  world.close()
  games = arrays["game_returns"]
  meta = {
    "world": world_id,
    "spec": agent.spec_dict(world.spec),
    "frame_stack": config.frame_stack,
    "acting": "policy" if args.policy else "search",
    "temperature": temperature,
    "seed": args.seed,
    "checkpoint": path,
  }
  experience.save(out, arrays, meta)
  print(
    json.dumps(
      {
        "out": str(out),
        "world": world_id,
        "env_steps": int(arrays["action"].size),
        "games": int(games.size),
        "mean_game_return": float(games.mean()) if games.size else None,
        "seconds": time.perf_counter() - t,
      }
    )
  )
  return 0


def _dream(args: argparse.Namespace) -> int:
  from dreamer import dream

  extra = {
    k: v
    for k, v in (("dream_ratio", args.budget), ("seed", args.seed), ("control", args.control or None))
    if v is not None
  }
  settings = dream.dream_config(args.overrides, **extra)
  report = dream.run(
    args.checkpoint, args.experience, args.out, anchor=args.anchor, settings=settings, console=not args.quiet
  )
  print(
    json.dumps(
      {
        "out": args.out,
        "accepted": report["accepted"],
        "checkpoint": report["checkpoint"],
        "returns": report["returns"],
      }
    )
  )
  return 0


def _runs(args: argparse.Namespace) -> int:
  from dreamer import runs

  rows = runs.listing(args.dir)
  print(json.dumps(rows) if args.json else runs.table(rows))
  return 0


def _quiet_closed_loop(unraisable) -> None:
  if not (isinstance(unraisable.exc_value, RuntimeError) and "Event loop is closed" in str(unraisable.exc_value)):
    sys.__unraisablehook__(unraisable)


def main(argv: list[str] | None = None) -> int:
  # After a failed write, orbax logs its writer threads' tracebacks through absl and tensorstore's late
  # callbacks hit orbax's closed event loop, and asyncio reports its abandoned write tasks when they are
  # collected; the one-line errors below say what matters.
  for name in ("absl", "asyncio"):
    logging.getLogger(name).setLevel(logging.CRITICAL)
  sys.unraisablehook = _quiet_closed_loop
  try:
    return _exit_alone(_dispatch(argv))
  except BaseException as e:  # over several processes: one line, then out at once (see _exit_alone)
    from dreamer import distributed

    if not distributed.joined():
      raise
    if distributed.is_lost_peer(e):
      _lost_peer(e)
    code = 130 if isinstance(e, KeyboardInterrupt) else 2 if isinstance(e, config_lib.ConfigError) else 1
    text = str(e) if isinstance(e, (config_lib.ConfigError, OSError)) else f"{type(e).__name__}: {e}"
    print(f"dreamer: error: {' '.join(text.split())}", file=sys.stderr, flush=True)
    _exit_alone(code)
    raise


def _exit_alone(code: int) -> int:
  """`code`, or over several processes, when it is not 0, the end of this one with it at once: JAX's shutdown
  would wait for the others (minutes, then abort with a core dump) when one of them is gone or still in a
  collective. A run that ended well ends every process together, through JAX's own shutdown."""
  from dreamer import distributed

  if code and distributed.joined():
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
  return code


def _dispatch(argv: list[str] | None) -> int:
  from dreamer import distributed
  from dreamer.checkpoint import CheckpointError, StorageError

  try:
    args = _parser().parse_args(argv)
    return {
      "train": _train,
      "eval": _eval,
      "bench": _bench,
      "report": _report,
      "compare": _compare,
      "play": _play,
      "dream": _dream,
      "runs": _runs,
    }[args.command](args)
  except (config_lib.ConfigError, CheckpointError, StorageError) as e:
    if distributed.is_lost_peer(e):  # a checkpoint's read or write failed because another process went away
      _lost_peer(e)
    print(f"dreamer: error: {e}", file=sys.stderr)
    return 1 if isinstance(e, StorageError) else 2
  except KeyboardInterrupt:  # Ctrl-C before a run took its stop signals, or in a command that takes none
    signal.signal(signal.SIGINT, lambda *_: os._exit(130))  # a second one while shutting down: out at once
    print(
      "dreamer: interrupted; what was complete is kept (resume with dreamer train --logdir DIR, or re-issue "
      "the same dreamer dream command)",
      file=sys.stderr,
    )
    return 130
  except Exception as e:  # anything else escapes to main, which reports a lost peer over several processes
    from dreamer.train import Diverged  # the training code is imported only when needed

    if not isinstance(e, Diverged):
      raise
    print(f"dreamer: error: {e}", file=sys.stderr)
    return 1


def _lost_peer(error: BaseException) -> None:
  """Says that another process of the run went away, and ends this one at once: JAX's own shutdown would wait
  for the missing process and then abort with a core dump."""
  import jax

  first = " ".join(str(error).split())[:200]
  print(
    f"dreamer: error: process {jax.process_index()} of {jax.process_count()} lost contact with the run's other "
    f"processes ({first}); one of them stopped or its host went away. Completed checkpoints are kept: start every "
    f"process again with the same command to resume from the last one",
    file=sys.stderr,
    flush=True,
  )
  sys.stdout.flush()
  os._exit(1)


if __name__ == "__main__":
  sys.exit(main())
