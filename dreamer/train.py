"""The training loop: a thin host loop around jitted acting, replay insertion and chunks of learner updates.

Per iteration the actor runs one batched search for all envs and steps them; the replay-ratio scheduler
owes `updates_per_env_step` updates per env step and pays them in jitted chunks of `updates_per_chunk`.
Evaluation (with search and with the policy network alone) runs every `eval_every` env steps.

A run survives being stopped. The full state (learner, replay, host counters and rng, the worlds' episodes in
progress) is checkpointed every `checkpoint_every_updates` updates, at the end, and on SIGINT/SIGTERM, and
`train` on a run directory continues from its newest readable checkpoint: on CPU bit-identically to a run
that was never stopped. A non-finite loss stops the run before anything from it is saved.
"""

from __future__ import annotations

import base64
import collections
import dataclasses
import json
import os
import signal
import sys
import threading
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
from dreamer import dream_ratio, frames
from dreamer import replay as replay_lib
from dreamer.agent import Agent, check_network, checkpoint_state
from dreamer.config import Config
from dreamer.logger import Logger

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


def _eval_record(world, agent: Agent, params, rng_key, config: Config) -> dict[str, Any]:
  start = time.perf_counter()
  res = actor_lib.evaluate(
    world,
    params,
    agent.act,
    agent.policy_act,
    rng_key,
    seed=config.seed + 10_000,
    max_steps=config.eval_max_steps,
    stack=config.frame_stack,
  )
  record = {"eval/seconds": time.perf_counter() - start}
  for name, r in res.items():
    record[f"eval/{name}_return"] = float(np.mean(r.returns))
    record[f"eval/{name}_return_std"] = float(np.std(r.returns))
    record[f"eval/{name}_length"] = float(np.mean(r.lengths))
  return record


def rss_bytes() -> int:
  """Resident memory of this process now (Linux /proc), or its peak where /proc is missing."""
  try:
    with open("/proc/self/statm") as f:
      return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
  except OSError:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def prepare_run_dir(logdir: str | Path) -> Path:
  """Creates the run directory and proves it writable; StorageError or ConfigError (one line) otherwise."""
  run_dir = Path(logdir)
  if run_dir.exists() and not run_dir.is_dir():
    raise config_lib.ConfigError(f"--logdir {str(run_dir)!r} is a file; give a directory")
  if run_dir.is_dir() and any(run_dir.iterdir()) and not (run_dir / "config.json").exists():
    raise config_lib.ConfigError(
      f"--logdir {str(run_dir)!r} is a non-empty directory that holds no run; "
      f"give a new or empty directory, or a run directory to resume"
    )
  try:
    run_dir.mkdir(parents=True, exist_ok=True)
    probe = run_dir / ".write-probe"
    probe.write_text("ok")
    probe.unlink()
  except OSError as e:
    raise ckpt_lib.StorageError(f"cannot write to --logdir {str(run_dir)!r}: {e.strerror or e}") from None
  return run_dir


class _Signals:
  """SIGINT/SIGTERM ask the loop to checkpoint and stop; a second one stops at once (KeyboardInterrupt)."""

  def __init__(self):
    self.received: str | None = None
    self.previous: dict[int, Any] = {}

  def __enter__(self) -> _Signals:
    if threading.current_thread() is threading.main_thread():
      for sig in (signal.SIGINT, signal.SIGTERM):
        self.previous[sig] = signal.signal(sig, self._handle)
    return self

  def _handle(self, signum, frame) -> None:
    if self.received is not None:
      raise KeyboardInterrupt
    self.received = signal.Signals(signum).name

  def __exit__(self, *exc) -> None:
    for sig, handler in self.previous.items():
      signal.signal(sig, handler)


def _check_finite(
  chunks: list[dict[str, np.ndarray]], progress: Progress, ckpts: ckpt_lib.Checkpoints, config: Config
) -> None:
  """Raises Diverged naming the first update (and every loss) that is not finite."""
  first = progress.updates - len(chunks) * config.updates_per_chunk
  for c, metrics in enumerate(chunks):
    bad = np.zeros(config.updates_per_chunk, bool)
    for k in LOSS_KEYS:
      bad |= ~np.isfinite(metrics[k])
    if bad.any():
      i = int(np.argmax(bad))
      losses = ", ".join(f"{k}={metrics[k][i]:.4g}" for k in LOSS_KEYS if not np.isfinite(metrics[k][i]))
      ckpts.wait()
      done = ckpts.steps()
      good = f"the last good checkpoint is {ckpts.path(done[-1])!r}" if done else "no checkpoint was written yet"
      raise Diverged(
        f"non-finite loss at update {first + c * config.updates_per_chunk + i + 1} "
        f"(env step {progress.env_steps}): {losses}; the run stopped without saving this state; "
        f"{good}"
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
  StorageError (the run directory cannot be written) and Diverged."""
  run_dir = prepare_run_dir(logdir)
  changed: dict[str, Any] = {}
  if (run_dir / "config.json").exists():
    if not resume:
      raise config_lib.ConfigError(
        f"--logdir {str(run_dir)!r} already holds a run; resume it, or use --fresh "
        f"to replace it, or choose a new directory"
      )
    saved = config_lib.from_dict(json.loads((run_dir / "config.json").read_text()), str(run_dir / "config.json"))
    changed = config_lib.check_resumable(saved, config, repr(str(run_dir)))
  world = worlds.make(
    config.world, num_envs=config.num_envs, seed=config.seed, **config_lib.world_kwargs(config, train=True)
  )
  eval_world = log = ckpts = None
  try:
    check_network(config, world.spec)
    eval_world = worlds.make(
      config.world,
      num_envs=config.eval_episodes,
      seed=config.seed + 10_000,
      **config_lib.world_kwargs(config, train=False),
    )
    # Written before any long work: a directory with config.json is a run (a kill from here on leaves a
    # resumable one).
    tmp = run_dir / "config.json.tmp"
    tmp.write_text(json.dumps(config.to_dict(), indent=2) + "\n")
    os.replace(tmp, run_dir / "config.json")  # atomic: never a torn config
    log = Logger(run_dir, total_env_steps=config.total_env_steps, console=console)
    ckpts = ckpt_lib.Checkpoints(run_dir, keep=config.checkpoints_kept)
    with _Signals() as signals:
      return _run(
        config,
        run_dir,
        world,
        eval_world,
        log,
        ckpts,
        signals,
        changed,
        console=console,
        stop_after_updates=stop_after_updates,
      )
  except OSError as e:
    if isinstance(e, ckpt_lib.StorageError):
      raise
    last = f"; {ckpts.last_complete()}" if ckpts else ""
    raise ckpt_lib.StorageError(f"cannot write to run directory {str(run_dir)!r}: {e.strerror or e}{last}") from None
  finally:
    for close in (
      ckpts.close if ckpts else None,
      log.close if log else None,
      world.close,
      eval_world.close if eval_world else None,
    ):
      try:
        close and close()
      except Exception:  # noqa: BLE001 - the error that got here is the one to report
        pass


def _note(console: bool, text: str) -> None:
  if console:
    print(f"dreamer: {text}", file=sys.stderr, flush=True)


def _run(
  config: Config,
  run_dir: Path,
  world,
  eval_world,
  log: Logger,
  ckpts: ckpt_lib.Checkpoints,
  signals: _Signals,
  changed: dict[str, Any],
  *,
  console: bool,
  stop_after_updates: int | None,
) -> dict[str, Any]:
  agent = Agent(config, world.spec)
  key = jax.random.PRNGKey(config.seed)
  key, init_key = jax.random.split(key)
  state, rb = agent.init(init_key)
  stack = config.frame_stack
  obs = frames.start(world.reset(config.seed), stack)  # [B, *agent.obs_shape]
  progress = Progress(
    next_eval=config.eval_every if config.eval_every > 0 else config.total_env_steps,
    next_checkpoint=config.checkpoint_every_updates,
  )
  spec_dict = {
    "obs_shape": list(world.spec.obs_shape),
    "obs_dtype": np.dtype(world.spec.obs_dtype).name,
    "num_actions": world.spec.num_actions,
  }

  def unreadable(step: int, error: ckpt_lib.CheckpointError) -> None:
    _note(console, f"warning: {error}; trying the previous checkpoint")
    log.write({"event": "checkpoint_unreadable", "step": step, "error": str(error)})

  resumed_from = None
  if ckpts.steps():
    saved = ckpts.restore_latest(state.params, checkpoint_state(state, rb, key, obs), on_unreadable=unreadable)
    if saved is not None:
      if saved.meta["spec"] != spec_dict:
        raise ckpt_lib.CheckpointError(
          f"checkpoint {ckpts.path(saved.step)!r} was trained on {saved.meta['spec']}, "
          f"but {config.world!r} now gives {spec_dict}"
        )
      dev = jax.device_put(saved.state)
      state = dev["learner"]._replace(params=jax.device_put(saved.params))
      rb, key, obs = dev["replay"], dev["key"], np.asarray(saved.state["obs"])
      progress = Progress(**saved.meta["progress"])
      if saved.meta["world_state"] is not None:
        world.set_state(base64.b64decode(saved.meta["world_state"]))
      else:  # this world cannot save its episodes: start new ones
        obs = frames.start(world.reset(config.seed + progress.env_steps), stack)
      if config.checkpoint_every_updates != saved.meta["config"]["checkpoint_every_updates"]:
        progress.next_checkpoint = (
          progress.updates // max(config.checkpoint_every_updates, 1) + 1
        ) * config.checkpoint_every_updates
      resumed_from = saved.step
  if resumed_from is not None or changed or log.path.stat().st_size > 0:
    log.write(
      {
        "event": "resume",
        "env_steps": progress.env_steps,
        "updates": progress.updates,
        "checkpoint": ckpts.path(resumed_from) if resumed_from is not None else None,
        "changed": {k: list(v) for k, v in changed.items()} or None,
      }
    )
    _note(
      console,
      f"resuming {str(run_dir)!r} at env step {progress.env_steps}, update {progress.updates}"
      + (f" with changes: {', '.join(f'{k} {a!r} -> {b!r}' for k, (a, b) in changed.items())}" if changed else ""),
    )

  world_state_ok = True
  dreams = (
    dream_ratio.Dreams(**progress.dreams)
    if progress.dreams or not progress.env_steps  # older checkpoints:
    else dream_ratio.Dreams.rebuilt(config, progress.env_steps, progress.updates)
  )  # rebuilt from counters
  plan = dream_ratio.planned_ratio(config)
  _note(
    console,
    f"dream ratio (imagined model steps per real env step) once learning: {plan['total']:.1f} = "
    + " + ".join(f"{plan[k]:.1f} {k}" for k in dream_ratio.KINDS),
  )
  start = time.perf_counter() - progress.wall_s
  b = config.num_envs
  recent = collections.deque(progress.recent_returns, maxlen=20)
  solved = bool(progress.last_eval) and progress.last_eval["eval/search_return"] >= config.stop_return
  timers = {"act": 0.0, "learn": 0.0, "eval": 0.0, "checkpoint": 0.0}
  window = {"t": time.perf_counter(), "env_steps": progress.env_steps, "updates": progress.updates}
  stopped = None

  def save() -> None:
    nonlocal world_state_ok
    t = time.perf_counter()
    progress.wall_s = t - start
    progress.recent_returns = list(recent)
    progress.dreams = dataclasses.asdict(dreams)
    world_state = None
    if world_state_ok:
      try:
        world_state = base64.b64encode(world.get_state()).decode()
      except worlds.WorldStateError as e:
        world_state_ok = False
        _note(console, f"warning: {e}; a resumed run will start new episodes")
    ckpts.save(
      progress.env_steps,
      state.params,
      checkpoint_state(state, rb, key, obs),
      {
        "config": config.to_dict(),
        "spec": spec_dict,
        "progress": dataclasses.asdict(progress),
        "world_state": world_state,
      },
    )
    timers["checkpoint"] += time.perf_counter() - t

  while progress.env_steps < config.total_env_steps and not solved:
    t0 = time.perf_counter()
    key, act_key = jax.random.split(key)
    out = agent.act(state.params, obs, act_key, actor_lib.temperature(config, progress.env_steps))
    action = np.asarray(out.action)
    step = world.step(action)
    ended = step.terminated | step.truncated
    row = replay_lib.Rows(
      obs=frames.newest(obs, stack),
      action=action,
      reward=step.reward,
      policy=out.policy,
      value=out.value,
      last=np.zeros(b, bool),
      terminal=np.zeros(b, bool),
      step=np.full(b, progress.env_steps, np.int32),
    )
    rb = agent.add(rb, row, step.final_obs, ended, step.terminated)
    obs = frames.push(obs, step.obs, ended, stack)
    progress.env_steps += b
    dreams.acted(config)
    for r in step.episode_return[~np.isnan(step.episode_return)]:  # whole games, true scores
      recent.append(float(r))
      progress.episodes += 1
    t1 = time.perf_counter()
    timers["act"] += t1 - t0

    if progress.env_steps >= config.learning_starts:
      progress.owed += b * config.updates_per_env_step
    chunks = []
    while progress.owed >= config.updates_per_chunk:
      state, rb, metrics = agent.train_chunk(state, rb, jnp.int32(progress.env_steps))
      chunks.append(metrics)
      progress.owed -= config.updates_per_chunk
      progress.updates += config.updates_per_chunk
      dreams.updated(config, config.updates_per_chunk)
    chunks = [{k: np.asarray(v) for k, v in m.items()} for m in chunks]  # waits, so the timer below is true
    timers["learn"] += time.perf_counter() - t1
    if chunks:
      try:
        _check_finite(chunks, progress, ckpts, config)
      except Diverged as e:
        log.write({"event": "diverged", "env_steps": progress.env_steps, "updates": progress.updates, "error": str(e)})
        raise
      now = time.perf_counter()
      dt = now - window["t"]
      record = {
        "env_steps": progress.env_steps,
        "updates": progress.updates,
        "episodes": progress.episodes,
        "wall_s": now - start,
        **{k: float(np.mean(v)) for k, v in chunks[-1].items()},
        "speed/env_steps_per_s": (progress.env_steps - window["env_steps"]) / dt,
        "speed/updates_per_s": (progress.updates - window["updates"]) / dt,
        "replay/bytes": replay_lib.nbytes(rb),
        "sys/rss_bytes": rss_bytes(),
        **dreams.record(progress.env_steps),
      }
      if recent:
        record["train/episode_return"] = float(np.mean(recent))
      if dt > 2.0:
        window = {"t": now, "env_steps": progress.env_steps, "updates": progress.updates}
      log.write(record)

    if progress.env_steps >= progress.next_eval or progress.env_steps >= config.total_env_steps:
      progress.next_eval += config.eval_every if config.eval_every > 0 else config.total_env_steps
      t2 = time.perf_counter()
      key, eval_key = jax.random.split(key)
      last_eval = _eval_record(eval_world, agent, state.params, eval_key, config)
      timers["eval"] += time.perf_counter() - t2
      last_eval.update(
        {
          "env_steps": progress.env_steps,
          "updates": progress.updates,
          "episodes": progress.episodes,
          "wall_s": time.perf_counter() - start,
        }
      )
      progress.last_eval = last_eval
      log.write(last_eval)
      solved = last_eval["eval/search_return"] >= config.stop_return

    every = config.checkpoint_every_updates
    if every > 0 and progress.updates >= progress.next_checkpoint:
      progress.next_checkpoint = (progress.updates // every + 1) * every
      save()
    if signals.received:
      stopped = signals.received
    elif stop_after_updates is not None and progress.updates >= stop_after_updates:
      stopped = "stop_after_updates"
    if stopped:
      break

  save()
  ckpts.wait()
  summary = {
    "summary": True,
    "env_steps": progress.env_steps,
    "updates": progress.updates,
    "episodes": progress.episodes,
    "wall_s": time.perf_counter() - start,
    "solved": solved,
    "stopped": stopped,
    "resumed_from": resumed_from,
    "checkpoint": ckpts.path(progress.env_steps),
    "sys/rss_bytes": rss_bytes(),
    "replay/bytes": replay_lib.nbytes(rb),
    **dreams.record(progress.env_steps),
    **{f"time/{k}_s": v for k, v in timers.items()},
    **{k: v for k, v in progress.last_eval.items() if k.startswith("eval/")},
  }
  log.write(summary)
  return summary
