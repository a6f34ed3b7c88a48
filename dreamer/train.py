"""The training loop: a thin host loop around jitted acting, replay insertion and chunks of learner updates.

One iteration is a few steps with one job each (`act`, `learn`, `record`, `evaluate_if_due`, `save_if_due`)
over the run's fixed `Parts` (config, agent, worlds, logger, checkpoints) and its changing `Carry` (learner
and replay state, rng key, observations, counters). Per iteration the actor runs one batched search for all
envs and steps them; the replay-ratio clock owes `updates_per_env_step` updates per env step and pays them in
jitted chunks of `updates_per_chunk`. Evaluation (with search and with the policy network alone) runs every
`eval_every` env steps and at the end.

A run survives being stopped. The full state (learner, replay, host counters and rng, the worlds' episodes in
progress) is checkpointed every `checkpoint_every_updates` updates, at the end, and on SIGINT/SIGTERM, and
`train` on a run directory continues from its newest readable checkpoint: on CPU bit-identically to a run
that was never stopped. A non-finite loss stops the run before anything from it is saved.
"""

from __future__ import annotations

import collections
import dataclasses
import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

import worlds
from dreamer import actor as actor_lib
from dreamer import checkpoint as ckpt_lib
from dreamer import config as config_lib
from dreamer import devices as devices_lib
from dreamer import distributed, dream_ratio, frames, schedule
from dreamer import replay as replay_lib
from dreamer import video as video_lib
from dreamer.agent import Agent, check_network, checkpoint_state, spec_dict
from dreamer.config import Config
from dreamer.logger import Logger
from dreamer.runlock import RunLock
from dreamer.signals import StopSignals

LOSS_KEYS = ("loss/total", "loss/value", "loss/policy", "loss/value_prefix", "loss/consistency")


class Diverged(RuntimeError):
  """A loss became NaN or infinite; the message names which, when, and the last good checkpoint."""


@dataclasses.dataclass
class Progress:
  """The host loop's counters: saved in every checkpoint's meta so a resumed run continues the schedule."""

  env_steps: int = 0
  updates: int = 0
  episodes: int = 0
  owed: float = 0.0  # updates owed by the replay-ratio scheduler, not yet run
  next_eval: int = 0  # env steps at which the next evaluation runs
  next_checkpoint: int = 0  # updates at which the next periodic checkpoint is written (0: none)
  wall_s: float = 0.0  # wall-clock seconds of the run up to the checkpoint, over all its segments
  recent_returns: list[float] = dataclasses.field(default_factory=list)  # the last 20 training episodes
  dreams: dict[str, int] = dataclasses.field(default_factory=dict)  # model steps so far (dream_ratio.Dreams)
  last_eval: dict[str, Any] = dataclasses.field(default_factory=dict)

  @classmethod
  def from_meta(cls, data: Any, where: str) -> Progress:
    """The counters a checkpoint's meta holds (untrusted): exactly this class's keys, each of its type and
    non-negative; CheckpointError naming the first problem."""
    fields = {f.name: f for f in dataclasses.fields(cls)}
    if not isinstance(data, dict) or set(data) != set(fields):
      got = sorted(data) if isinstance(data, dict) else type(data).__name__
      raise ckpt_lib.CheckpointError(f"{where} has damaged counters: expected keys {sorted(fields)}, got {got}")
    defaults = cls()
    for name, value in data.items():
      kind = type(getattr(defaults, name))  # int, float, list or dict
      if kind in (list, dict):
        ok = isinstance(value, kind)
      else:  # a float counter may be saved as a whole number; bool is never a number here
        ok = type(value) in ((int, float) if kind is float else (int,)) and math.isfinite(value) and value >= 0
      if not ok:
        raise ckpt_lib.CheckpointError(f"{where} has damaged counters: {name!r} is {str(value)[:60]}")
    return cls(**data)


def rss_bytes() -> int:
  """Resident memory of this process now (Linux /proc), or its peak where /proc is missing."""
  try:
    with open("/proc/self/statm") as f:
      return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
  except OSError:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


# What a start that failed or was killed before config.json was written can leave in a run directory: the
# write probe (a full disk), the run lock (dreamer/runlock.py) and a torn config. Not someone else's files.
START_LEFTOVERS = (".write-probe", ".lock", "config.json.tmp")


def prepare_run_dir(logdir: str | Path) -> Path:
  """Creates the run directory and proves it writable (the probe file is removed whether or not that works);
  StorageError or ConfigError (one line) otherwise."""
  run_dir = Path(logdir)
  probe = run_dir / ".write-probe"
  if run_dir.exists() and not run_dir.is_dir():
    raise config_lib.ConfigError(f"--logdir {str(run_dir)!r} is a file; give a directory")
  try:
    run_dir.mkdir(parents=True, exist_ok=True)
    foreign = [p.name for p in run_dir.iterdir() if p.name not in START_LEFTOVERS]
    if foreign and not (run_dir / "config.json").exists():
      raise config_lib.ConfigError(
        f"--logdir {str(run_dir)!r} is a non-empty directory that holds no run; "
        f"give a new or empty directory, or a run directory to resume"
      )
    probe.write_text("ok")
    probe.unlink()
  except OSError as e:
    try:
      probe.unlink(missing_ok=True)  # a full disk still lets the name be made: never leave it behind
    except OSError:
      pass
    raise ckpt_lib.StorageError(f"cannot write to --logdir {str(run_dir)!r}: {e.strerror or e}") from None
  return run_dir


def first_non_finite(chunks: list[dict[str, np.ndarray]]) -> tuple[int, str] | None:
  """(index among the chunks' updates, the non-finite losses named) of the first update whose loss is NaN or
  infinite, or None. chunks: metrics of consecutive chunks, f32[updates_per_chunk] each."""
  for c, metrics in enumerate(chunks):
    bad = np.zeros(len(metrics[LOSS_KEYS[0]]), bool)
    for k in LOSS_KEYS:
      bad |= ~np.isfinite(metrics[k])
    if bad.any():
      i = int(np.argmax(bad))
      losses = ", ".join(f"{k}={metrics[k][i]:.4g}" for k in LOSS_KEYS if not np.isfinite(metrics[k][i]))
      return c * len(bad) + i, losses
  return None


def _note(console: bool, text: str, *, always: bool = False) -> None:
  """Prints `text` on the console; `always`: even when quiet (warnings the user must see)."""
  if console or always:
    print(f"dreamer: {text}", file=sys.stderr, flush=True)


def _check_run_dir(run_dir: Path, config: Config, *, resume: bool) -> dict[str, Any]:
  """The changes `config` makes to the run already in `run_dir` ({} for a new run); ConfigError when there is
  a run and `resume` is False, or when the changes would change what the run is."""
  if not (run_dir / "config.json").exists():
    return {}
  if not resume:
    raise config_lib.ConfigError(
      f"--logdir {str(run_dir)!r} already holds a run; resume it, or use --fresh to replace it, or choose a new "
      f"directory"
    )
  saved = config_lib.load_saved(run_dir / "config.json")
  return config_lib.check_resumable(saved, config, repr(str(run_dir)))


def _write_config(run_dir: Path, config: Config) -> None:
  # Written before any long work: a directory with config.json is a run (a kill from here on leaves a
  # resumable one). Atomic: never a torn config.
  tmp = run_dir / "config.json.tmp"
  tmp.write_text(json.dumps(config.to_dict(), indent=2) + "\n")
  os.replace(tmp, run_dir / "config.json")


def check_trainable(config: Config) -> None:
  """ConfigError (one line) for a network that training cannot continue: one whose search keeps a prior head of
  its own (`prior_head`), which the learner, training one policy head, would leave stale."""
  if config.prior_head:
    raise config_lib.ConfigError(
      "prior_head: this network's search reads a prior head of its own (written by dreamer dream with "
      "search_prior 'kept'), which training does not learn: train the checkpoint it came from, or dream "
      "with search_prior 'distilled'"
    )


def train(
  config: Config,
  logdir: str | Path,
  *,
  console: bool = True,
  resume: bool = True,
  stop_after_updates: int | None = None,
) -> dict[str, Any]:
  """Trains in `logdir`, continuing the run there if it has one (unless `resume` is False, when an existing
  run is an error). Stops at `total_env_steps`, at `stop_return`, on SIGINT/SIGTERM, or once
  `stop_after_updates` updates are done (checkpointing first). Returns a summary, also the last record of
  metrics.jsonl. Raises ConfigError (a resume that would change the run's meaning), CheckpointError,
  StorageError (the run directory cannot be written), RunInUse (another process trains there) and Diverged.
  Over several processes (dreamer/distributed.py) every process calls this with the same arguments; process 0
  prepares the run directory and holds its lock, the others wait for it."""
  check_trainable(config)
  devices_lib.layout(config)  # before anything is made or written: a device count that does not fit loses nothing
  start = distributed.Start()
  if not distributed.primary():
    if start.agree():
      raise config_lib.ConfigError("process 0 could not start the run (its output says why); nothing was changed")
    if not (Path(logdir) / "config.json").exists():
      raise ckpt_lib.StorageError(
        f"--logdir {str(logdir)!r} does not hold the run process 0 prepared: every process needs the run "
        f"directory on a filesystem they share"
      )
    return _train_in(Path(logdir), config, console=False, resume=True, stop_after_updates=stop_after_updates)
  try:
    run_dir = prepare_run_dir(logdir)
    with RunLock(run_dir):
      return _train_in(
        run_dir, config, console=console, resume=resume, stop_after_updates=stop_after_updates, starting=start
      )
  except BaseException:
    start.agree(failed=True)  # no-op once the others were told the run started
    raise


def _train_in(
  run_dir: Path,
  config: Config,
  *,
  console: bool,
  resume: bool,
  stop_after_updates: int | None,
  starting: distributed.Start | None = None,
) -> dict[str, Any]:
  """`train` in a prepared run directory whose lock this process holds (process 0 of several: the others
  enter once it has written the run's config)."""
  primary = distributed.primary()
  changed = _check_run_dir(run_dir, config, resume=resume) if primary else {}
  layout = devices_lib.layout(config)
  rows = layout.local_rows(config.num_envs)  # this process's envs; env i is seeded from seed + i
  world = worlds.make(
    config.world,
    num_envs=rows.stop - rows.start,
    seed=config.seed + rows.start,
    **config_lib.world_kwargs(config, train=True),
  )
  eval_world = log = ckpts = None
  # Stop signals are taken before the run's metrics.jsonl exists: a Ctrl-C while the agent is built (its
  # first compiles take seconds) stops the run after its first step, like one at any later time.
  with StopSignals() as signals:
    try:
      check_network(config, world.spec)
      eval_world = worlds.make(
        config.world,
        num_envs=config.eval_episodes,
        seed=config.seed + 10_000,
        **config_lib.world_kwargs(config, train=False),
      )
      if primary:
        _write_config(run_dir, config)
        log = Logger(run_dir, total_env_steps=config.total_env_steps, console=console, tensorboard=config.tensorboard)
        if starting is not None:
          starting.agree()  # the other processes may enter
      else:
        log = Silent(run_dir / "metrics.jsonl")
      ckpts = ckpt_lib.Checkpoints(run_dir, keep=config.checkpoints_kept)
      parts = Parts(config, Agent(config, world.spec), world, eval_world, log, ckpts, run_dir, console, rows)
      if layout.count > 1:
        platforms = "/".join(sorted({d.platform for d in layout.mesh.devices.flat}))
        over = f" of {layout.processes} processes" if layout.processes > 1 else ""
        _note(console, f"data parallel over {layout.count} {platforms} devices{over}")
      return run_loop(parts, changed=changed, signals=signals, stop_after_updates=stop_after_updates)
    except OSError as e:
      if isinstance(e, ckpt_lib.StorageError):
        raise
      last = f"; {ckpts.last_complete()}" if ckpts else ""
      raise ckpt_lib.StorageError(f"cannot write to run directory {str(run_dir)!r}: {e.strerror or e}{last}") from None
    finally:
      # Over several processes, closing the checkpoints waits for the others: not after an error (one of them
      # may be gone), when the write in flight is abandoned (orbax writes to a temporary directory).
      done = sys.exc_info()[0] is None or distributed.count() == 1
      closers = (done and ckpts and ckpts.close, log and log.close, world.close, eval_world and eval_world.close)
      for close in closers:
        try:
          close and close()
        except Exception:  # noqa: BLE001 - the error that got here is the one to report
          pass


class Silent:
  """The logger of a process other than 0 in a run over several: process 0 writes the run's logs."""

  def __init__(self, path: Path):
    self.path = path

  def write(self, record: dict[str, Any]) -> None:
    pass

  def video(self, *args: Any, **kwargs: Any) -> None:
    pass

  def close(self) -> None:
    pass


@dataclasses.dataclass(frozen=True)
class Parts:
  """What a run is made of and never replaces: built once, read by every step of the loop."""

  config: Config
  agent: Agent  # or anything with its init / act / add / train_chunk / evaluate
  world: worlds.World  # num_envs envs, training mode
  eval_world: worlds.World  # eval_episodes envs, evaluation mode
  log: Logger  # or anything with write(record) and video(name, frames, step, fps=)
  ckpts: ckpt_lib.Checkpoints
  run_dir: Path
  console: bool = True
  rows: slice | None = None  # the env rows this process steps (over several processes); None: all of them

  @property
  def own(self) -> slice:
    """This process's env rows among every process's."""
    return self.rows if self.rows is not None else slice(None)

  @property
  def first_env(self) -> int:
    """The global index of this process's first env: its worlds are seeded from seed + first_env."""
    return self.rows.start if self.rows is not None else 0


@dataclasses.dataclass
class Carry:
  """What the loop changes: device state, the observations it acts on, the counters, and host timers."""

  state: Any  # learner.TrainState
  rb: Any  # replay.ReplayState
  key: jax.Array
  obs: np.ndarray  # [B, *agent.obs_shape], B: this process's envs
  progress: Progress
  dreams: dream_ratio.Dreams
  recent: collections.deque  # returns of the last 20 training episodes
  start: float  # perf_counter() at which the run's wall-clock (over all its segments) began
  window: dict[str, float]  # the speed window: its start time and counters then
  repeats: actor_lib.Repeats  # this process's envs' exploratory repeats (ez-greedy)
  timers: dict[str, float] = dataclasses.field(
    default_factory=lambda: {"act": 0.0, "learn": 0.0, "eval": 0.0, "checkpoint": 0.0}
  )
  world_state_ok: bool = True  # False once the world said it cannot save its episodes
  video_ok: bool = True  # False once a video could not be made: the run goes on without them
  solved: bool = False
  resumed_from: int | None = None
  explored: int = 0  # actions taken by exploratory repeats in this segment of the run (every process's envs)
  flat: int = 0  # acting steps whose search's q_spread was under noise_hold_spread, this segment (every env)
  held: np.ndarray | None = None  # f32[B, A]: the Gumbel noise this process's envs hold (noise_hold 'episode')


def clocks(config: Config) -> tuple[schedule.Every, schedule.Every, schedule.Ratio]:
  """The loop's schedules: evaluation (env steps), periodic checkpoints (updates), updates owed."""
  return (
    schedule.Every(config.eval_every),
    schedule.Every(config.checkpoint_every_updates),
    schedule.Ratio(config.updates_per_env_step, config.updates_per_chunk, start=config.learning_starts),
  )


def start(p: Parts) -> Carry:
  """A new run's carry, or the newest readable checkpoint's when the run directory has one."""
  config = p.config
  key = jax.random.PRNGKey(config.seed)
  key, init_key = jax.random.split(key)
  state, rb = p.agent.init(init_key)
  obs = frames.start(p.world.reset(config.seed + p.first_env), config.frame_stack)
  evals, saves, _ = clocks(config)
  progress = Progress(next_eval=evals.first(), next_checkpoint=saves.first())
  recent, repeats = collections.deque(maxlen=20), actor_lib.Repeats.none(len(obs))
  carry = Carry(state, rb, key, obs, progress, dream_ratio.Dreams(), recent, 0.0, {}, repeats)
  if actor_lib.holds_noise(config):  # the key is split only then: runs without it keep their stream
    carry.key, _, carry.held = _draw_held(p, carry.key)
  steps = p.ckpts.steps()
  if distributed.joined() and any(seen != steps for seen in distributed.gather_json(steps)):
    raise ckpt_lib.CheckpointError(
      f"the run's processes see different checkpoints in {str(p.ckpts.dir)!r}: every process needs the run "
      f"directory on a filesystem they share"
    )
  if steps:
    carry = restore(p, carry)
  progress = carry.progress
  carry.start = time.perf_counter() - progress.wall_s
  carry.window = {"t": time.perf_counter(), "env_steps": progress.env_steps, "updates": progress.updates}
  carry.window |= {"explored": 0, "flat": 0}
  carry.recent.extend(progress.recent_returns)
  carry.solved = bool(progress.last_eval) and progress.last_eval["eval/search_return"] >= config.stop_return
  if progress.dreams or not progress.env_steps:
    carry.dreams = dream_ratio.Dreams(**progress.dreams)
  else:  # older checkpoints: rebuilt from the counters
    carry.dreams = dream_ratio.Dreams.rebuilt(config, progress.env_steps, progress.updates)
  return carry


def restore(p: Parts, c: Carry) -> Carry:
  """`c` with the state of the newest readable checkpoint (unreadable newer ones are reported and set aside);
  `c` as it is when none reads."""

  def unreadable(step: int, error: ckpt_lib.CheckpointError) -> None:
    _note(p.console, f"warning: {error}; trying the previous checkpoint", always=True)
    p.log.write({"event": "checkpoint_unreadable", "step": step, "error": str(error)})

  every_obs = jax.ShapeDtypeStruct((p.config.num_envs, *c.obs.shape[1:]), c.obs.dtype)  # every process's envs
  abstract = checkpoint_state(c.state, c.rb, c.key, every_obs)
  saved = p.ckpts.restore_latest(c.state.params, abstract, on_unreadable=unreadable)
  if saved is None:
    return c
  spec = spec_dict(p.world.spec)
  if saved.meta["spec"] != spec:
    raise ckpt_lib.CheckpointError(
      f"checkpoint {p.ckpts.path(saved.step)!r} was trained on {saved.meta['spec']}, but {p.config.world!r} now "
      f"gives {spec}"
    )
  learner = saved.state["learner"]._replace(params=saved.params)
  c.state, c.rb = p.agent.place(learner, saved.state["replay"])  # on this run's devices, whatever saved them
  c.key = jax.device_put(saved.state["key"])
  c.obs = np.asarray(saved.state["obs"])[p.own]
  c.progress = Progress.from_meta(saved.meta["progress"], f"checkpoint {p.ckpts.path(saved.step)!r}")
  own, problem = _own_world_state(saved.meta.get("world_state"))
  problem = problem or _restore_world(p.world, own)
  if problem:
    where = p.ckpts.path(saved.step)
    _note(p.console, f"warning: checkpoint {where!r}: {problem}; the run resumes with new episodes", always=True)
  if problem or own is None:  # no episodes to continue: start new ones
    c.obs = frames.start(p.world.reset(p.config.seed + p.first_env + c.progress.env_steps), p.config.frame_stack)
  else:
    c.repeats = _saved_repeats(saved.meta.get("repeats"), p, f"checkpoint {p.ckpts.path(saved.step)!r}")
  if c.held is not None:
    continued = None if problem or own is None else saved.meta.get("held")
    c.key, c.held = _restored_held(p, c.key, continued, f"checkpoint {p.ckpts.path(saved.step)!r}")
  if p.config.checkpoint_every_updates != saved.meta["config"].get("checkpoint_every_updates"):
    c.progress.next_checkpoint = clocks(p.config)[1].following(c.progress.updates)
  c.resumed_from = saved.step
  return c


def _saved_repeats(saved: Any, p: Parts, where: str) -> actor_lib.Repeats:
  """This process's envs' exploratory repeats from a checkpoint's meta (untrusted: every env's action in the
  action set, its steps left a non-negative int32); none running when it has none (older checkpoints). A
  repeat longer than today's explore_max_repeat (changed on resume) is cut to it. CheckpointError naming the
  problem."""
  n = p.config.num_envs
  if saved is None:
    return actor_lib.Repeats.none(len(range(n)[p.own]))
  ok = isinstance(saved, dict) and set(saved) == set(actor_lib.Repeats._fields)
  ok = ok and all(isinstance(v, list) and len(v) == n and all(type(x) is int for x in v) for v in saved.values())
  ok = ok and all(0 <= a < p.world.spec.num_actions for a in saved["action"])
  ok = ok and all(0 <= s < 2**31 for s in saved["left"])
  if not ok:
    raise ckpt_lib.CheckpointError(f"{where} has damaged exploratory repeats: {json.dumps(saved)[:80]}")
  left = np.minimum(np.asarray(saved["left"], np.int64), p.config.explore_max_repeat).astype(np.int32)
  return actor_lib.Repeats(np.asarray(saved["action"], np.int32)[p.own], left[p.own])


def _restored_held(p: Parts, key: jax.Array, saved: Any, where: str) -> tuple[jax.Array, np.ndarray]:
  """(the loop's key, the noise f32[B, A] this process's envs hold on resume): `saved`, the checkpoint's, where
  it continues their episodes, else (None: new episodes, or a checkpoint without it) fresh noise from `key`,
  which every process then splits alike (whichever needed it), so all keep one key."""
  need = saved is None
  if distributed.gather(np.array([need])).any():
    key, _, fresh = _draw_held(p, key)
    if need:
      return key, fresh
  return key, _saved_held(saved, p, where)


def _draw_held(p: Parts, key: jax.Array) -> tuple[jax.Array, np.ndarray, np.ndarray]:
  """(`key` after one split, which of this process's envs redraw mid-episode bool[B], fresh Gumbel noise
  f32[B, A] for them): every process draws every env's from the same key and keeps its own rows."""
  key, held_key = jax.random.split(key)
  redraw, noise = (np.asarray(x)[p.own] for x in p.agent.held_draw(held_key))
  return key, redraw, noise


def _saved_held(saved: Any, p: Parts, where: str) -> np.ndarray:
  """This process's envs' held Gumbel noise f32[B, A] from a checkpoint's meta (untrusted: num_envs rows of
  num_actions finite numbers). CheckpointError naming the problem."""
  n, a = p.config.num_envs, p.world.spec.num_actions
  ok = isinstance(saved, list) and len(saved) == n
  ok = ok and all(isinstance(row, list) and len(row) == a for row in saved)
  ok = ok and all(type(x) is float for row in saved for x in row)
  with np.errstate(over="ignore"):  # too large for float32: inf, refused below
    noise = np.asarray(saved, np.float32) if ok else None
  if not ok or not np.isfinite(noise).all():  # finite as float32 too (1e300 is not)
    raise ckpt_lib.CheckpointError(f"{where} has damaged held noise: {json.dumps(saved)[:80]}")
  return noise[p.own]


def _own_world_state(saved: Any) -> tuple[Any, str | None]:
  """(this process's part of a checkpoint's world state, None), or (None, why it cannot be continued): over
  several processes the saved state is a list, one entry per process, usable with the same process count."""
  processes = distributed.count()
  if isinstance(saved, list):
    if len(saved) == processes:
      return saved[jax.process_index()], None
    return None, f"its episodes were saved by {len(saved)} processes, this run has {processes}"
  if saved is not None and processes > 1:
    return None, f"its episodes were saved by one process, this run has {processes}"
  return saved, None


def _restore_world(world: worlds.World, saved: Any) -> str | None:
  """Restores the episodes `save` wrote as `{"crc32", "data"}` (plain data: nothing in it can run code); None
  when done or when none were saved, else what stopped it (one line). Older checkpoints hold a pickle (base64
  text): it is never loaded."""
  if saved is None:
    return None
  if isinstance(saved, str):
    return "its world state is in the old pickled format, which is never loaded"
  try:
    if not isinstance(saved, dict) or set(saved) != {"crc32", "data"}:
      raise worlds.WorldStateError("its world state is malformed")
    if worlds.state_checksum(saved["data"]) != saved["crc32"]:
      raise worlds.WorldStateError("its world state does not match the checksum written with it")
    world.set_state(saved["data"])
  except worlds.WorldStateError as e:
    return str(e)
  return None


def announce(p: Parts, c: Carry, changed: dict[str, Any]) -> None:
  """Marks a resume in metrics.jsonl (so readers drop what it supersedes) and prints the planned dream ratio
  (process 0 of several)."""
  if not distributed.primary():
    return
  progress = c.progress
  if c.resumed_from is not None or changed or p.log.path.stat().st_size > 0:
    p.log.write({
      "event": "resume",
      "env_steps": progress.env_steps,
      "updates": progress.updates,
      "checkpoint": p.ckpts.path(c.resumed_from) if c.resumed_from is not None else None,
      "changed": {k: list(v) for k, v in changed.items()} or None,
    })  # fmt: skip
    changes = ", ".join(f"{k} {a!r} -> {b!r}" for k, (a, b) in changed.items())
    _note(
      p.console,
      f"resuming {str(p.run_dir)!r} at env step {progress.env_steps}, update {progress.updates}"
      + (f" with changes: {changes}" if changed else ""),
    )
  plan = dream_ratio.planned_ratio(p.config)
  _note(
    p.console,
    f"dream ratio (imagined model steps per real env step) once learning: {plan['total']:.1f} = "
    + " + ".join(f"{plan[k]:.1f} {k}" for k in dream_ratio.KINDS),
  )


def act(p: Parts, c: Carry) -> None:
  """One acting step of every env: search, step the worlds, add the rows to the replay."""
  t = time.perf_counter()
  config, stack = p.config, p.config.frame_stack
  c.key, act_key = jax.random.split(c.key)
  temperature = actor_lib.temperature(config, c.progress.env_steps)
  out = p.agent.act(c.state.params, c.obs, act_key, temperature, c.held)
  action = np.asarray(out.action)
  if config.explore_epsilon > 0:  # the key is split only then: runs without exploration keep their stream
    c.key, explore_key = jax.random.split(c.key)
    epsilon = actor_lib.explore_epsilon(config, c.progress.env_steps)
    start, held, duration = (np.asarray(x)[p.own] for x in p.agent.explore_draw(explore_key, epsilon))
    action, c.repeats, explored = actor_lib.explore(action, c.repeats, start=start, action=held, duration=duration)
    c.explored += int(distributed.gather(explored).sum())  # every process's envs: the same count everywhere
  b = len(action)  # this process's envs
  step = p.world.step(action)
  ended = step.terminated | step.truncated
  if config.explore_epsilon > 0:  # a repeat ends with its game
    c.repeats = actor_lib.Repeats(*(np.where(ended, 0, x).astype(np.int32) for x in c.repeats))
  if c.held is not None:  # an ended episode hands its env fresh noise, as does a redraw (noise_redraw)
    c.key, redraw, fresh = _draw_held(p, c.key)
    if config.noise_hold_spread > 0:  # and a search that told the actions apart (noise_hold_spread)
      flat = np.asarray(out.q_spread) < config.noise_hold_spread
      redraw = redraw | ~flat
      c.flat += int(distributed.gather(flat).sum())
    c.held = np.where((ended | redraw)[:, None], fresh, c.held)
  row = replay_lib.Rows(
    obs=frames.newest(c.obs, stack),
    action=action,
    reward=step.reward,
    policy=out.policy,
    value=out.value,
    last=np.zeros(b, bool),
    terminal=np.zeros(b, bool),
    step=np.full(b, c.progress.env_steps, np.int32),
  )
  c.rb = p.agent.add(c.rb, row, step.final_obs, ended, step.terminated)
  c.obs = frames.push(c.obs, step.obs, ended, stack)
  c.progress.env_steps += config.num_envs
  c.dreams.acted(config)
  returns = distributed.gather(step.episode_return)  # every process's envs: the same counters everywhere
  for r in returns[~np.isnan(returns)]:  # whole games, true scores
    c.recent.append(float(r))
    c.progress.episodes += 1
  c.timers["act"] += time.perf_counter() - t


def learn(p: Parts, c: Carry) -> list[dict[str, np.ndarray]]:
  """Pays the updates owed in whole chunks; returns each chunk's metrics (on the host). Diverged, logged
  first, when a loss is not finite."""
  t = time.perf_counter()
  config, progress = p.config, c.progress
  ratio = clocks(config)[2]
  progress.owed = ratio.owe(progress.owed, config.num_envs, done=progress.env_steps)
  due, progress.owed = ratio.pay(progress.owed)
  chunks = []
  for _ in range(due):
    c.state, c.rb, metrics = p.agent.train_chunk(c.state, c.rb, jnp.int32(progress.env_steps))
    chunks.append(metrics)
    progress.updates += config.updates_per_chunk
    c.dreams.updated(config, config.updates_per_chunk)
  chunks = [{k: np.asarray(v) for k, v in m.items()} for m in chunks]  # waits, so the timer below is true
  c.timers["learn"] += time.perf_counter() - t
  bad = first_non_finite(chunks)
  if bad is not None:
    first = progress.updates - len(chunks) * config.updates_per_chunk
    what = f"non-finite loss at update {first + bad[0] + 1} (env step {progress.env_steps}): {bad[1]}"
    error = diverged(p, what=what)
    p.log.write(
      {"event": "diverged", "env_steps": progress.env_steps, "updates": progress.updates, "error": str(error)}
    )
    raise error
  return chunks


def diverged(p: Parts, *, what: str) -> Diverged:
  """Diverged naming `what` went wrong, when, and the last good checkpoint (after any pending write)."""
  p.ckpts.wait()
  done = p.ckpts.steps()
  good = f"the last good checkpoint is {p.ckpts.path(done[-1])!r}" if done else "no checkpoint was written yet"
  return Diverged(f"{what}; the run stopped without saving this state; {good}")


@jax.jit
def _all_finite(leaves: list[jax.Array]) -> jax.Array:
  return jnp.stack([jnp.all(jnp.isfinite(x)) for x in leaves]) if leaves else jnp.ones((0,), bool)


def first_non_finite_leaf(tree: Any) -> str | None:
  """The path of the first leaf of `tree` (floating arrays) holding a NaN or an infinity, or None. One
  jitted reduction and one transfer of a bool per leaf, not a round trip per leaf."""
  floats = [(p, x) for p, x in jax.tree_util.tree_flatten_with_path(tree)[0] if jnp.issubdtype(x.dtype, jnp.inexact)]
  finite = np.asarray(_all_finite([x for _, x in floats]))
  bad = np.flatnonzero(~finite)
  return jax.tree_util.keystr(floats[bad[0]][0]) if bad.size else None


def check_saveable(p: Parts, c: Carry) -> None:
  """Diverged (logged first) unless every parameter, target parameter and optimizer statistic is finite: an
  update with a finite loss can still leave non-finite weights, and a checkpoint of them must never be
  written, nor named good."""
  bad = first_non_finite_leaf({"params": c.state.params, "target": c.state.target_params, "opt": c.state.opt_state})
  if bad is not None:
    progress = c.progress
    what = f"non-finite weights at {bad} after update {progress.updates} (env step {progress.env_steps})"
    error = diverged(p, what=what)
    p.log.write(
      {"event": "diverged", "env_steps": progress.env_steps, "updates": progress.updates, "error": str(error)}
    )
    raise error


def record(p: Parts, c: Carry, chunks: list[dict[str, np.ndarray]]) -> None:
  """Writes a training record (the last chunk's mean metrics, speeds, memory, dreams) after updates."""
  if not chunks:
    return
  progress, now = c.progress, time.perf_counter()
  dt = now - c.window["t"]
  rec = {
    "env_steps": progress.env_steps,
    "updates": progress.updates,
    "episodes": progress.episodes,
    "wall_s": now - c.start,
    **{k: float(np.mean(v)) for k, v in chunks[-1].items()},
    "speed/env_steps_per_s": (progress.env_steps - c.window["env_steps"]) / dt,
    "speed/updates_per_s": (progress.updates - c.window["updates"]) / dt,
    "replay/bytes": replay_lib.nbytes(c.rb),
    "sys/rss_bytes": rss_bytes(),
    **c.dreams.record(progress.env_steps),
  }
  if c.recent:
    rec["train/episode_return"] = float(np.mean(c.recent))
  acted = max(progress.env_steps - c.window["env_steps"], 1)  # env steps since the window opened
  if p.config.explore_epsilon > 0:
    rec["train/explore_epsilon"] = actor_lib.explore_epsilon(p.config, progress.env_steps)
    rec["train/explored"] = (c.explored - c.window["explored"]) / acted  # share of actions taken by repeats
  if p.config.noise_hold_spread > 0 and c.held is not None:
    rec["train/noise_flat"] = (c.flat - c.window["flat"]) / acted  # share of env steps under the threshold
  if dt > 2.0:
    c.window = {"t": now, "env_steps": progress.env_steps, "updates": progress.updates}
    c.window |= {"explored": c.explored, "flat": c.flat}
  p.log.write(rec)


def evaluate_if_due(p: Parts, c: Carry) -> None:
  """Evaluates every `eval_every` env steps and at the last one; a search return of `stop_return` solves."""
  progress, config = c.progress, p.config
  evals = clocks(config)[0]
  final = progress.env_steps >= config.total_env_steps
  if not (evals.due(progress.env_steps, progress.next_eval) or final):
    return
  progress.next_eval = evals.following(progress.env_steps)
  t = time.perf_counter()
  c.key, eval_key = jax.random.split(c.key)
  recorder = None
  if config.video and c.video_ok and distributed.primary():
    path = p.run_dir / "videos" / f"eval_{progress.env_steps}.mp4"
    recorder = video_lib.Recorder(p.eval_world, path, fps=config.video_fps)
  try:
    last_eval = p.agent.evaluate(p.eval_world, c.state.params, eval_key, record=recorder)
  except BaseException:
    if recorder is not None:
      recorder.abandon()
    raise
  if recorder is not None:
    keep_video(p, c, recorder)
  c.timers["eval"] += time.perf_counter() - t
  last_eval.update({
    "env_steps": progress.env_steps,
    "updates": progress.updates,
    "episodes": progress.episodes,
    "wall_s": time.perf_counter() - c.start,
  })  # fmt: skip
  progress.last_eval = last_eval
  p.log.write(last_eval)
  c.solved = last_eval["eval/search_return"] >= config.stop_return


def keep_video(p: Parts, c: Carry, recorder: video_lib.Recorder) -> None:
  """Logs the evaluation's video (its file and frame count; the first frames also go to TensorBoard), or says
  once why there is none and turns videos off for the rest of the run."""
  step = c.progress.env_steps
  try:
    preview = recorder.finish()
  except video_lib.VideoError as e:
    c.video_ok = False
    _note(p.console, f"warning: no evaluation videos in this run: {e}", always=True)
    p.log.write({"event": "video_failed", "env_steps": step, "error": str(e)})
    return
  p.log.write({"event": "video", "env_steps": step, "path": str(recorder.path), "frames": recorder.count})
  p.log.video("eval/video", preview, step, fps=p.config.video_fps)


def save_if_due(p: Parts, c: Carry) -> None:
  saves = clocks(p.config)[1]
  if saves.due(c.progress.updates, c.progress.next_checkpoint):
    c.progress.next_checkpoint = saves.following(c.progress.updates)
    save(p, c)


def save(p: Parts, c: Carry) -> None:
  """Starts writing the whole state as checkpoint `env_steps` (the world's episodes too, where it can), once
  it is known to be finite (check_saveable)."""
  check_saveable(p, c)
  t = time.perf_counter()
  progress = c.progress
  progress.wall_s = t - c.start
  progress.recent_returns = list(c.recent)
  progress.dreams = dataclasses.asdict(c.dreams)
  world_state = None
  if c.world_state_ok:
    try:
      data = p.world.get_state()  # plain JSON data, with a checksum as the arrays have
      world_state = {"crc32": worlds.state_checksum(data), "data": data}
    except worlds.WorldStateError as e:
      c.world_state_ok = False
      _note(p.console, f"warning: {e}; a resumed run will start new episodes")
  if distributed.count() > 1:  # one entry per process, each its own envs' episodes
    world_state = distributed.gather_json(world_state)
  meta = {
    "config": p.config.to_dict(),
    "spec": spec_dict(p.world.spec),
    "progress": dataclasses.asdict(progress),
    "world_state": world_state,
    "repeats": {k: distributed.gather(v).tolist() for k, v in c.repeats._asdict().items()},  # every env's
    "held": None if c.held is None else distributed.gather(c.held).tolist(),  # every env's
  }
  every_obs = distributed.gather(c.obs)  # every process's envs, as one process would have them
  p.ckpts.save(progress.env_steps, c.state.params, checkpoint_state(c.state, c.rb, c.key, every_obs), meta)
  c.timers["checkpoint"] += time.perf_counter() - t


STOP_REASONS = ("SIGINT", "SIGTERM", "stop_after_updates")


def stop_reason(c: Carry, signals: StopSignals, stop_after_updates: int | None) -> str | None:
  """Why the loop stops now, or None. Over several processes they agree: a signal to any one stops them all
  (the first of STOP_REASONS any process has), so all save the same checkpoint together."""
  reason = signals.received
  if not reason and stop_after_updates is not None and c.progress.updates >= stop_after_updates:
    reason = "stop_after_updates"
  if distributed.count() == 1:
    return reason
  codes = distributed.gather(np.array([STOP_REASONS.index(reason) + 1 if reason else 0]))
  return STOP_REASONS[min(codes[codes > 0]) - 1] if codes.any() else None


def run_loop(
  p: Parts, *, changed: dict[str, Any], signals: StopSignals, stop_after_updates: int | None = None
) -> dict[str, Any]:
  """Runs the loop until the run is done, solved or stopped; saves; returns (and logs) the summary."""
  c = start(p)
  announce(p, c, changed)
  stopped = None
  while c.progress.env_steps < p.config.total_env_steps and not c.solved:
    act(p, c)
    record(p, c, learn(p, c))
    evaluate_if_due(p, c)
    save_if_due(p, c)
    stopped = stop_reason(c, signals, stop_after_updates)
    if stopped:
      break
  save(p, c)
  p.ckpts.wait()
  return summarize(p, c, stopped)


def summarize(p: Parts, c: Carry, stopped: str | None) -> dict[str, Any]:
  progress = c.progress
  summary = {
    "summary": True,
    "env_steps": progress.env_steps,
    "updates": progress.updates,
    "episodes": progress.episodes,
    "wall_s": time.perf_counter() - c.start,
    "solved": c.solved,
    "stopped": stopped,
    "resumed_from": c.resumed_from,
    "checkpoint": p.ckpts.path(progress.env_steps),
    "sys/rss_bytes": rss_bytes(),
    "replay/bytes": replay_lib.nbytes(c.rb),
    "devices": [str(d) for d in devices_lib.layout(p.config).mesh.devices.flat],
    **c.dreams.record(progress.env_steps),
    **{f"time/{k}_s": v for k, v in c.timers.items()},
    **{k: v for k, v in progress.last_eval.items() if k.startswith("eval/")},
  }
  p.log.write(summary)
  return summary
