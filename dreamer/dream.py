"""`dreamer dream`: consolidate a short stretch of real experience into the policy weights through imagined search.

Phases, each written to the output directory as it finishes (a re-issued command skips finished phases and
continues an interrupted adapt or distil phase from its last snapshot):
  1 baseline  evaluate the checkpoint on the experience's world (and the anchor's), with and without search;
  2 adapt     fine-tune the whole network with the EfficientZero loss on the recording (anchor rows mixed in
              by their share of the rows), early-stopped on the model loss of a held-out tail of the
              recording; the best parameters become the frozen teacher;
  3 distil    rehearse + distil, interleaved: from real recorded states the student (initialised as the
              teacher) rolls out imagined trajectories in the teacher's model, each state labelled by the
              teacher's Gumbel search (dreamer/distil.py), and the student is trained toward the labels
              (optionally with a KL term to the checkpoint's policy on anchor states, `kl_weight`).
              `control = true` replaces this phase with
              further real-data fine-tuning of the same model-step compute (the compute-matched control);
  4 gate      evaluate again; accept only if the policy-only return on the experience's world rose, the anchor
              world's kept `anchor_keep` of its baseline and both worlds' search returns kept `search_keep`;
  5 write     the accepted (or the original) weights as a checkpoint of a run directory, and the report
              (report.md, report.json, returns.png, fit.png, distil.png).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import os
import resource
import shutil
import sys
import time
import warnings
import zipfile
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

import worlds
from dreamer import actor as actor_lib
from dreamer import checkpoint as ckpt_lib
from dreamer import config as config_lib
from dreamer import distil as distil_lib
from dreamer import dream_ratio, support
from dreamer import experience as exp_lib
from dreamer import learner as learner_lib
from dreamer import replay as replay_lib
from dreamer.agent import Agent, load_checkpoint
from dreamer.config import Config, ConfigError

VERSION = 1
PHASES = ("baseline", "adapt", "distil", "gate", "write")
# What a job stored before a setting existed ran with (not today's default): read into its stored settings.
BEFORE_KEY = {"search_prior": "distilled"}


@dataclasses.dataclass(frozen=True)
class DreamConfig:
  """Every setting of a dream job (`--set key=value`; `--budget` sets `dream_ratio`, `--seed` sets `seed`)."""

  seed: int = 0
  """Seeds sampling, imagined actions, searches and evaluation episodes."""
  dream_ratio: float = 1000.0
  """The budget: imagined model steps of the distil phase per real recorded env step of the experience."""
  holdout: float = 0.2
  """Fraction of each recording (its last steps, per env) held out for early stopping and model fit."""
  batch_size: int = 128
  """Samples per adapt (and control) update."""
  adapt_updates: int = 400
  """Most updates of the adapt phase."""
  adapt_eval_every: int = 25
  """Adapt updates between held-out evaluations (and resumable snapshots)."""
  adapt_patience: int = 4
  """Adapt stops after this many held-out evaluations without a new best."""
  adapt_min_gain: float = 0.01
  """A new best must lower the held-out model loss by this fraction of the checkpoint's (|loss|); otherwise
  the checkpoint's own model stays the teacher (a change within noise is not worth its risk)."""
  teacher_check: bool = True
  """The adapted model teaches only if search with it passes the gate's search check (`search_keep` of the
  checkpoint's search return, on the gate's episodes of every world it evaluates); otherwise the checkpoint's
  model does, as when adaptation found no better held-out fit. The held-out model loss does not see what
  search needs, and a student's prior learns the teacher's search, mistakes included: on cartpole:heavy-pole
  (tuning seed 2) the adapted teacher searched 284 where the checkpoint searched 402 (docs/dream.md)."""
  adapt_learning_rate: float = 1e-3
  """Learning rate of adapt and control updates (the checkpoint's optimizer kind, fresh state)."""
  adapt_train: str = "model"
  """Parameters adaptation may change: 'model' (dynamics and the value-prefix LSTM and head: the world model,
  so that real states keep their values and priors), 'task' (only the rows of the experience's task member: a
  checkpoint trained with `task_input`, and with `task_dynamics` for the dynamics' rows, and an experience of
  another member; the model on the checkpoint's own world stays exactly as it was) or 'all'."""
  adapt_replay: bool = True
  """Mix the checkpoint's own replay (its training data, saved whole in the checkpoint) into adaptation and
  the control's fine-tuning, by its share of the rows. Without it, a few thousand steps of competent play
  (nearly no failures) teach the model to forget what failure looks like: on CartPole 100 updates of
  adaptation on the training task's own recording cut the search return from 500 to 175 (488 with it)."""
  horizon: int = 0
  """States per imagined trajectory, the real root included (0: the checkpoint's unroll_steps; at most that)."""
  roots: int = 64
  """Real recorded roots per distil update (and as many anchor states for the KL term)."""
  num_simulations: int = 16
  """Simulations of the teacher's Gumbel search at each imagined state."""
  q_normalization: str = "tree"
  """Min-max range of the teacher's completed Q-values (search.run_search): 'tree' keeps a target's
  preference in proportion to the Q difference the search found; 'children' (mctx's default) turns any
  difference between two actions, model noise included, into a ~6-logit preference."""
  search_bonus: float = 2.0
  """Scale of the search's completed-Q term in the teacher's policy target, in units of mctx's value_scale 0.1
  (0: the target is the prior). With 'tree' normalisation the term is in proportion to Q differences, so it
  takes more than mctx's scale to move a weak prior."""
  guard: float = 0.5
  """Drop an imagined state (and the rest of its trajectory) where |search value - predicted value| >
  guard * (|predicted value| + 1): the model is unreliable there."""
  distil_learning_rate: float = 0.2
  """Learning rate of distillation (SGD with momentum 0.9; see distil.make_optimizer)."""
  lr_decay: bool = True
  """Decay the distillation learning rate to 0 over the budget's updates (cosine); the control's steps decay
  the same way over its updates."""
  value_weight: float = 0.25
  """Weight of the value distillation loss (to `value_target`)."""
  value_target: str = "teacher"
  """Target of the value distillation: the teacher's 'search' value, or the 'teacher''s predicted value (keeps
  the value function that the student's own search will read while the shared layers move)."""
  kl_weight: float = 0.0
  """Weight of KL(checkpoint policy || student policy) on anchor states. Off by default: it holds the student at
  the checkpoint's policy, and where that policy is far below its search (a checkpoint whose search carries it)
  distillation then stops short (CartPole's tuning seeds: B's policy 403 and 358 with weight 1, 500 and 500
  without; docs/dream.md). With an anchor recording the gate still bounds the anchor world's losses
  (`anchor_keep`, `search_keep`) either way."""
  train: str = "policy"
  """Parameters distillation may change: 'policy' (the policy head), 'heads' (the prediction function: policy
  and value heads and their shared layers) or 'all'. 'policy' leaves every value the student's search reads
  exactly as it was: with 'heads', the shared layers moved the values of states distillation never saw, and
  in CartPole, whose search turns small Q differences into full preferences, that alone cut a checkpoint's
  search return 450 -> 189 (docs/dream.md, the diagnosis)."""
  search_prior: str = "kept"
  """The prior the student's search reads: 'distilled' (its one policy head, the distilled one) or 'kept' (a
  second head, the prior of the model it searches with, as before distillation: the checkpoint's (its own
  search prior if it has one), or the adapted teacher's with adapt_train 'all'; with train 'heads' the kept
  head reads the moved shared layers; the distilled head is what acting without search reads). A single
  head learns the search's labels, sharp where search's Q was, and the student's own search then adds Q again:
  where Q is poor, the sharpened prior costs search what the old one held up (docs/dream.md). An accepted
  'kept' job writes the network key `prior_head`: evaluated, played and dreamed on, not trained further
  (`dreamer train` refuses it in one line); 'distilled' on a one-head checkpoint writes one head, which
  training continues. A rejected job and the control write one head (the checkpoint's, or the fine-tune's)."""
  student_model: str = "checkpoint"
  """The world model (representation, dynamics, value prefix) the distilled student carries: 'checkpoint' (its
  own, with the distilled prediction function on top; needs adapt_train 'model' or 'task' and train 'policy'
  or 'heads', so that the heads read the checkpoint's representation; with `task_input`, plus the adapted rows
  of the experience's member (latent offset, and dynamics rows with `task_dynamics`), which the heads were
  trained on and which leave the checkpoint's own world untouched) or 'adapted' (the teacher's). The adapted
  model is early-stopped on the recording's held-out model loss, which does not see what search needs: on
  cartpole:high-gravity it cut the search return 484 -> 249 and 450 -> 262 in two of three tuning seeds
  (docs/dream.md). The control is a plain fine-tune of every parameter either way."""
  updates_per_chunk: int = 10
  """Distil updates per jitted dispatch (and between resumable snapshots)."""
  eval_episodes: int = 32
  """Evaluation episodes per world, mode and phase."""
  anchor_keep: float = 0.95
  """The gate: the anchor world's policy-only return must keep at least this fraction of its baseline (lose at
  most 1 - anchor_keep of |baseline|)."""
  search_keep: float = 0.9
  """The gate: the search returns of the experience and anchor worlds must keep at least this fraction of their
  baselines. Looser than anchor_keep: distillation's job is the policy alone, and it may trade a little
  search strength for it (the prior it changes steers search too), but never wreck search."""
  control: bool = False
  """The compute-matched control: no imagination; phase 3 fine-tunes every parameter on the real data of
  adaptation instead, for as much compute as the distil phase of the same settings: as many forward-pass
  equivalents of model steps (a backpropagated step counts 3, a search step 1)."""
  corrupt_dynamics: float = 0.0
  """Negative control: Gaussian noise of this many standard deviations (per weight tensor) is added to the
  teacher's dynamics weights after adaptation."""

  def __post_init__(self) -> None:
    # Every float setting must be finite (none means anything at NaN or +-inf; a large number says "never"
    # where that is wanted, e.g. guard 1e9), every integer fit in 32 bits, the seed in [0, 2**31 - 1].
    checks = config_lib.number_checks(self) + [
      (self.dream_ratio > 0, "dream_ratio (--budget) must be > 0"),
      (0.0 <= self.holdout < 1.0, "holdout must be in [0, 1)"),
      (self.batch_size >= 1 and self.roots >= 1, "batch_size and roots must be >= 1"),
      (self.adapt_updates >= 0, "adapt_updates must be >= 0"),
      (self.adapt_eval_every >= 1 and self.adapt_patience >= 1, "adapt_eval_every and adapt_patience must be >= 1"),
      (self.adapt_learning_rate > 0 and self.distil_learning_rate > 0, "learning rates must be > 0"),
      (self.adapt_min_gain >= 0, "adapt_min_gain must be >= 0"),
      (self.horizon >= 0, "horizon must be >= 0"),
      (self.num_simulations >= 2, "num_simulations must be >= 2"),
      (self.search_bonus >= 0, "search_bonus must be >= 0"),
      (self.guard > 0, "guard must be > 0"),
      (self.value_weight >= 0 and self.kl_weight >= 0, "value_weight and kl_weight must be >= 0"),
      (
        self.q_normalization in ("tree", "children"),
        f"q_normalization must be 'tree' or 'children', got {self.q_normalization!r}",
      ),
      (
        self.value_target in ("search", "teacher"),
        f"value_target must be 'search' or 'teacher', got {self.value_target!r}",
      ),
      (self.train in ("policy", "heads", "all"), f"train must be 'policy', 'heads' or 'all', got {self.train!r}"),
      (
        self.adapt_train in ("model", "task", "all"),
        f"adapt_train must be 'model', 'task' or 'all', got {self.adapt_train!r}",
      ),
      (
        self.search_prior in ("distilled", "kept"),
        f"search_prior must be 'distilled' or 'kept', got {self.search_prior!r}",
      ),
      (
        self.student_model in ("adapted", "checkpoint"),
        f"student_model must be 'adapted' or 'checkpoint', got {self.student_model!r}",
      ),
      (
        self.student_model == "adapted" or (self.adapt_train in ("model", "task") and self.train != "all"),
        "student_model 'checkpoint' needs adapt_train 'model' or 'task' and train 'policy' or 'heads' (the "
        "distilled heads must read the checkpoint's representation); or set student_model=adapted",
      ),
      (self.updates_per_chunk >= 1 and self.eval_episodes >= 1, "updates_per_chunk and eval_episodes must be >= 1"),
      (
        0.0 <= self.anchor_keep <= 1.0 and 0.0 <= self.search_keep <= 1.0,
        "anchor_keep and search_keep must be in [0, 1]",
      ),
      (self.corrupt_dynamics >= 0, "corrupt_dynamics must be >= 0"),
    ]
    for ok, message in checks:
      if not ok:
        raise ConfigError(f"invalid dream setting: {message}")

  def to_dict(self) -> dict[str, Any]:
    return dataclasses.asdict(self)


def dream_config(overrides: list[str] | None = None, **kwargs: Any) -> DreamConfig:
  """DreamConfig from `key=value` overrides and keyword arguments, strictly checked."""
  values: dict[str, Any] = {}
  for item in overrides or []:
    key, value = config_lib.parse_override(item)
    values[key] = config_lib.coerce(key, value, "--set", DreamConfig)
  for key, value in kwargs.items():
    values[key] = config_lib.coerce(key, value, "arguments", DreamConfig)
  return DreamConfig(**values)


# ------------------------------------------------------------------ host helpers


def _say(console: bool, text: str) -> None:
  if console:
    print(f"dreamer dream: {text}", file=sys.stderr, flush=True)


def _save_tree(path: Path, tree: Any, info: dict[str, Any] | None = None) -> None:
  """Every leaf of `tree`, and `info` (JSON), in one .npz written atomically: a snapshot and its counters
  can never disagree."""
  flat = {k: np.asarray(v) for k, v in ckpt_lib.flatten(tree).items()}
  flat["__info__"] = np.array(json.dumps(info or {}))
  tmp = path.with_suffix(".tmp.npz")
  with open(tmp, "wb") as f:
    np.savez(f, **flat)
  os.replace(tmp, path)


def _load_tree(path: Path, like: Any) -> tuple[Any, dict[str, Any]]:
  """(tree shaped like `like`, info) of a `_save_tree` file. The file is the job's own but read back from disk
  (untrusted): every leaf must have `like`'s name, shape and dtype; ConfigError (one line) otherwise."""
  want = {k: (tuple(np.shape(x)), np.dtype(x.dtype)) for k, x in ckpt_lib.flatten(like).items()}
  try:
    with np.load(path) as npz:  # allow_pickle stays False: an object array is refused
      info = json.loads(str(npz["__info__"]))
      flat = {k: npz[k] for k in want}
    if not isinstance(info, dict):
      raise ValueError("its counters are not a JSON object")
    bad = [k for k, (shape, dtype) in want.items() if flat[k].shape != shape or flat[k].dtype != dtype]
    if bad:
      raise ValueError(f"array {bad[0]!r} is {flat[bad[0]].dtype}{list(flat[bad[0]].shape)}, expected "
                       f"{want[bad[0]][1]}{list(want[bad[0]][0])}")  # fmt: skip
  except (OSError, ValueError, KeyError, EOFError, MemoryError, UnicodeDecodeError, zipfile.BadZipFile) as e:
    why = " ".join(str(e).split())[:200] or type(e).__name__
    raise ConfigError(f"the dream job's file {str(path)!r} is damaged ({why}); delete it to redo its phase") from None
  return jax.device_put(ckpt_lib.unflatten(like, flat)), info


class Job:
  """What every phase reads: the checkpoint's agent and state, the recordings and their replays."""

  def __init__(self, checkpoint: str, experience: str, anchor: str | None, dc: DreamConfig):
    run_dir, step = ckpt_lib.locate(checkpoint)
    self.saved = load_checkpoint(run_dir, step)
    self.checkpoint = ckpt_lib.Checkpoints(run_dir, writable=False).path(self.saved.step)
    meta = self.saved.meta
    self.config: Config = config_lib.from_dict(meta["config"], f"checkpoint {self.checkpoint!r}")
    # search_prior 'kept' on a checkpoint with one policy head: every parameter set of the job gets a search
    # prior head, a copy of its own policy head (the same searches as without it), until the student's is
    # kept while its policy head learns.
    self.widened = dc.search_prior == "kept" and not self.config.prior_head
    if self.widened:
      self.config = dataclasses.replace(self.config, prior_head=True)
    if dc.adapt_train == "task" and not self.config.task_input:
      raise ConfigError(
        "adapt_train 'task' adapts the rows of the checkpoint's task input, but it was trained without "
        "task_input: use adapt_train 'model' or 'all'"
      )
    self.spec = worlds.Spec(
      tuple(meta["spec"]["obs_shape"]), np.dtype(meta["spec"]["obs_dtype"]), meta["spec"]["num_actions"]
    )
    self.exp = exp_lib.load(experience, "--experience")
    self.anchor = exp_lib.load(anchor, "--anchor") if anchor else None
    if dc.kl_weight > 0 and self.anchor is None:  # the term would silently weigh nothing
      raise ConfigError(
        f"kl_weight {dc.kl_weight:g} weighs a KL term on the anchor's states, but no --anchor was given: record "
        "one with dreamer play on the checkpoint's world, or leave kl_weight at 0"
      )
    if dc.adapt_train == "task" and worlds.member(self.exp.meta["world"]) == worlds.member(self.config.world):
      raise ConfigError(
        f"adapt_train 'task' adapts the rows of other task members, but --experience was recorded on "
        f"{self.exp.meta['world']!r}, the checkpoint's own member: use adapt_train 'model' or 'all'"
      )
    for what, e in (("--experience", self.exp), ("--anchor", self.anchor)):
      if e is None:
        continue
      got = e.meta["spec"]
      if (
        got["obs_shape"] != meta["spec"]["obs_shape"]
        or got["num_actions"] != meta["spec"]["num_actions"]
        or got["obs_dtype"] != meta["spec"]["obs_dtype"]
        or e.meta["frame_stack"] != self.config.frame_stack
      ):
        raise exp_lib.ExperienceError(
          f"{what} was recorded on {e.meta['world']!r} with observations {got['obs_shape']} "
          f"{got['obs_dtype']}, {got['num_actions']} actions and frame stack {e.meta['frame_stack']}, but the "
          f"checkpoint expects {meta['spec']['obs_shape']} {meta['spec']['obs_dtype']}, "
          f"{meta['spec']['num_actions']} actions and frame stack {self.config.frame_stack}"
        )
    horizon = dc.horizon or self.config.unroll_steps
    if horizon > self.config.unroll_steps:
      raise ConfigError(
        f"horizon {dc.horizon} is longer than the checkpoint's trained unroll "
        f"(unroll_steps {self.config.unroll_steps}); choose 1..{self.config.unroll_steps} or 0"
      )
    self.dc = dataclasses.replace(dc, horizon=horizon)
    # Learner settings of adapt and control: the checkpoint's, at the dream's batch and learning rate; beta
    # annealed to 1 (env_step = total) and no age-based TD shrinking (the recording is one short stretch).
    self.learn_config = dataclasses.replace(
      self.config,
      batch_size=dc.batch_size,
      learning_rate=dc.adapt_learning_rate,
      warmup_updates=0,
      updates_per_chunk=dc.adapt_eval_every,
      total_env_steps=max(self.exp.meta["env_steps"], 1),
      td_age_steps=0,
      devices=1,  # a /dream job runs on one device, whatever its checkpoint was trained on
    )
    self.agent = Agent(self.learn_config, self.spec)
    self.model = self.agent.model
    # Adaptation and the control run the learner on one head (`distil.drop_prior`), as on any checkpoint: its
    # reanalysis searches with the head it trains, and no weight decay reaches a kept prior.
    self.learn_model = Agent(dataclasses.replace(self.learn_config, prior_head=False), self.spec).model
    self.base = jax.device_put(self.saved.params)
    if self.widened:
      self.base = distil_lib.set_prior(self.base, self.base)
    self.fit_fn = self.measure_fn = None  # compiled on first use
    self._replays()

  def _replays(self) -> None:
    """Training and held-out replays of the experience and the anchor, each ring as long as its recording
    needs. Adaptation samples them and the checkpoint's own replay (with `adapt_replay`) together, each as it
    is (`replay.Sources`: nothing copied into one buffer or padded to the longest ring), every batch split in
    proportion to their rows, every row at priority 1 to start with."""
    stack = self.config.frame_stack
    parts = {}
    for name, rec in (("exp", self.exp), ("anchor", self.anchor)):
      if rec is None:
        continue
      ring = 2 * rec.steps + 8  # every step, plus a final row per episode end
      shape = (rec.num_envs, rec.num_envs * ring, self.spec.obs_shape, self.spec.obs_dtype, self.spec.num_actions)
      cut = exp_lib.split_steps(rec.steps, self.dc.holdout)
      parts[name] = exp_lib.to_replay(rec, self.agent.add, replay_lib.init(*shape), start=0, stop=cut)
      held = None
      if cut < rec.steps:
        held = exp_lib.to_replay(rec, self.agent.add, replay_lib.init(*shape), start=cut, stop=rec.steps)
        # The tail starts mid-episode: its first S-1 rows lack their earlier frames.
        held = held._replace(priority=held.priority.at[:, : stack - 1].set(0.0))
      parts[f"{name}_held"] = held
    self.rb_exp, self.rb_exp_held = parts["exp"], parts["exp_held"]
    self.rb_anchor, self.rb_anchor_held = parts.get("anchor"), parts.get("anchor_held")

  def mixed(self) -> replay_lib.Sources:
    """Adaptation's (and the control's) data, made afresh for each (the learner takes its replay over): the
    experience, the anchor and, with `adapt_replay`, the checkpoint's replay, each row at priority 1."""
    sources = [self.rb_exp] + ([self.rb_anchor] if self.rb_anchor is not None else [])
    sources = [jax.tree.map(jnp.copy, rb) for rb in sources]
    if self.dc.adapt_replay:
      sources.append(jax.device_put(self.saved.state["replay"]))
    flat = tuple(
      rb._replace(priority=jnp.where(rb.priority > 0, 1.0, 0.0).astype(jnp.float32), max_priority=jnp.ones(()))
      for rb in sources
    )
    return replay_lib.Sources.of(flat, self.learn_config.batch_size)

  def world(self, world_id: str, episodes: int, seed: int):
    kwargs = config_lib.world_kwargs(dataclasses.replace(self.config, world=world_id), train=False)
    return worlds.make(world_id, num_envs=episodes, seed=seed, **kwargs)


# ------------------------------------------------------------------ phases


def evaluate(job: Job, params, *, seed: int) -> dict[str, Any]:
  """Returns per episode on the experience's world (and the anchor's), with search and policy alone."""
  act, policy_act = job.agent.act, job.agent.policy_act  # compiled once per job
  out = {}
  for name, rec in (("experience", job.exp), ("anchor", job.anchor)):
    if rec is None:
      continue
    world = job.world(rec.meta["world"], job.dc.eval_episodes, seed)
    try:
      res = actor_lib.evaluate(
        world,
        params,
        act,
        policy_act,
        jax.random.PRNGKey(seed),
        seed=seed,
        max_steps=job.config.eval_max_steps,
        stack=job.config.frame_stack,
      )
    finally:
      world.close()
    out[name] = {"world": rec.meta["world"], **{mode: [float(x) for x in r.returns] for mode, r in res.items()}}
  return out


def _fit_batches(job: Job, rb: replay_lib.ReplayState | None, n: int = 4) -> list[learner_lib.Batch]:
  """Fixed held-out batches whose value targets bootstrap from the checkpoint's own target network."""
  if rb is None:
    return []
  config = dataclasses.replace(job.learn_config, reanalyze_fraction=0.0, value_target="td")
  saved_target = jax.device_put(job.saved.state["learner"].target_params)
  state = learner_lib.TrainState(job.base, saved_target, None, jax.random.PRNGKey(0), jnp.int32(0))
  make = jax.jit(
    lambda state, rb, key: learner_lib.make_batch(
      state, rb, key, jnp.int32(config.total_env_steps), model=job.model, config=config
    )[0]
  )
  return [make(state, rb, jax.random.PRNGKey(1000 + i)) for i in range(n)]


def model_fit(job: Job, params, batches: list[learner_lib.Batch]) -> dict[str, list[float]]:
  """Held-out fit by unroll depth k = 0..K (eval mode): value |error| and cross-entropy, value-prefix (reward)
  |error| and cross-entropy, consistency (cosine to the real next observation's projection), and `score`, the
  weighted model loss that early stopping minimises."""
  config = job.learn_config
  if not batches:
    return {}
  if job.fit_fn is None:
    job.fit_fn = jax.jit(functools.partial(_fit_one, model=job.model, config=config))
  rows = [jax.tree.map(np.asarray, job.fit_fn(params, b)) for b in batches]
  with warnings.catch_warnings():  # a depth no batch reaches stays NaN (shown as missing)
    warnings.simplefilter("ignore", RuntimeWarning)
    out = {k: np.nanmean(np.stack([r[k] for r in rows]), 0) for k in rows[0]}
  score = (
    config.value_loss_weight * np.nanmean(out["value_ce"])
    + config.reward_loss_weight * np.nanmean(out["prefix_ce"][1:])
    - config.consistency_loss_weight * np.nanmean(out["cosine"][1:])
  )
  return {**{k: [None if math.isnan(x) else float(x) for x in v] for k, v in out.items()}, "score": float(score)}


def _fit_one(params, batch: learner_lib.Batch, *, model, config: Config) -> dict[str, jax.Array]:
  call = lambda method, *args: model.call(params, method, *args)  # noqa: E731
  outs = learner_lib.unroll_outputs(
    call, batch.obs[:, 0], batch.obs[:, 1:], batch.action, horizon=config.value_prefix_horizon,
    lstm_dim=model.lstm_dim,
  )  # fmt: skip
  value_ce, _, prefix_ce, consistency = learner_lib.depth_losses(*outs, batch, config)
  tg = batch.targets
  value_err = jnp.abs(support.logits_to_scalar(outs[0]) - tg.value) * tg.value_mask
  prefix_err = jnp.abs(support.logits_to_scalar(outs[2]) - tg.prefix) * tg.prefix_mask
  # Mean over the samples that have a target at that depth (NaN where none has: shown as missing).
  mean = lambda x, m: jnp.where(jnp.sum(m, 0) > 0, jnp.sum(x, 0) / jnp.maximum(jnp.sum(m, 0), 1.0), jnp.nan)  # noqa: E731
  pad = lambda x: jnp.concatenate([jnp.full((1,), jnp.nan), x])  # depth 0 has no model step  # noqa: E731
  return {
    "value_abs": mean(value_err, tg.value_mask),
    "value_ce": mean(value_ce, tg.value_mask),
    "prefix_abs": pad(mean(prefix_err, tg.prefix_mask)),
    "prefix_ce": pad(mean(prefix_ce, tg.prefix_mask)),
    "cosine": pad(-mean(consistency, tg.obs_mask[:, 1:])),
  }


def _learner_chunk(job: Job, updates: int, train: str, decay_updates: int = 0):
  """The learner's jitted chunk of `updates` updates, changing only the world model ('model') or 'all'.
  decay_updates > 0: every step is scaled by a cosine decay to 0 over that many updates (for Adam, the same as
  decaying the learning rate), as distillation's rate decays: the control differs from it only in its data."""
  config = dataclasses.replace(job.learn_config, updates_per_chunk=updates, prior_head=False)
  optimizer = learner_lib.make_optimizer(config)
  if decay_updates > 0:
    optimizer = optax.chain(optimizer, optax.scale_by_schedule(optax.cosine_decay_schedule(1.0, decay_updates)))
  if train in ("model", "task"):
    if job.config.norm == "batch":  # the learner would still move the frozen parts' running averages
      raise ConfigError(f"adapt_train '{train}' needs norm 'layer'; with BatchNorm use --set adapt_train=all")
    parts = distil_lib.MODEL_PARTS if train == "model" else distil_lib.TASK_PARTS
    optimizer = distil_lib.only(optimizer, distil_lib.drop_prior(job.base), parts)
  return optimizer, learner_lib.make_train_chunk(job.learn_model, config, optimizer)


def _teacher_fits(job: Job, teacher, held: list[learner_lib.Batch]) -> dict[str, Any]:
  """Held-out model fit of the checkpoint and of the teacher, on the experience (`held`) and the anchor."""
  fits = {"experience": {"checkpoint": model_fit(job, job.base, held), "teacher": model_fit(job, teacher, held)}}
  if job.rb_anchor_held is not None:
    anchor_held = _fit_batches(job, job.rb_anchor_held)
    fits["anchor"] = {
      "checkpoint": model_fit(job, job.base, anchor_held),
      "teacher": model_fit(job, teacher, anchor_held),
    }
  return fits


def teacher_check(baseline: dict[str, Any], teacher: dict[str, Any], *, keep: float) -> dict[str, Any]:
  """Whether the adapted teacher's search keeps `keep` of the checkpoint's return (the gate's rule, `kept`) on
  every world of `baseline` (per-episode returns of the checkpoint, as `evaluate` gives them; `teacher`: the
  same for the teacher)."""
  search = {w: [float(np.mean(baseline[w]["search"])), float(np.mean(teacher[w]["search"]))] for w in baseline}
  worse = [w for w, (before, now) in search.items() if not kept(before, now, keep)]
  return {"search": search, "teacher": "checkpoint" if worse else "adapted", "worse_on": worse}


def adapt(job: Job, out: Path, *, console: bool, baseline: dict[str, Any]) -> dict[str, Any]:
  """Phase 2: fine-tunes on the (mixed) recording, early-stopped on the held-out model loss; with
  `teacher_check`, keeps the adapted model only if it searches at least as well as the checkpoint on the
  worlds of `baseline` (the checkpoint's evaluation); saves the teacher's parameters to phases/teacher.npz."""
  dc = job.dc
  optimizer, chunk = _learner_chunk(job, dc.adapt_eval_every, dc.adapt_train)
  held = _fit_batches(job, job.rb_exp_held)
  snap = out / "phases" / "adapt.npz"
  # Copies: the learner chunk donates its state and replay, and the job's own arrays are read again later.
  one_head = distil_lib.drop_prior(job.base)
  state = learner_lib.init_state(jax.tree.map(jnp.copy, one_head), optimizer, jax.random.PRNGKey(dc.seed))
  target = distil_lib.drop_prior(job.saved.state["learner"].target_params)
  state = state._replace(target_params=jax.device_put(target))
  rb = job.mixed()
  best_params, progress = jax.tree.map(jnp.copy, one_head), {"updates": 0, "best": None, "best_at": 0, "history": []}
  if snap.exists():
    (state, priorities, best_params), progress = _load_tree(snap, (state, rb.priorities(), best_params))
    rb = rb.with_priorities(priorities)
    _say(console, f"[2/5 adapt] resuming at update {progress['updates']}")
  if progress["best"] is None:
    fit = model_fit(job, job.base, held)
    progress.update(best=fit.get("score", 0.0), history=[{"updates": 0, "held_out": fit.get("score")}])
  margin = dc.adapt_min_gain * abs(progress["history"][0]["held_out"] or 0.0)
  start = time.perf_counter()
  while progress["updates"] < dc.adapt_updates and (
    progress["updates"] - progress["best_at"] < dc.adapt_patience * dc.adapt_eval_every
  ):
    state, rb, metrics = chunk(state, rb, jnp.int32(job.learn_config.total_env_steps))
    progress["updates"] += dc.adapt_eval_every
    fit = model_fit(job, state.params, held) if held else {"score": -progress["updates"]}
    loss = float(np.mean(np.asarray(metrics["loss/total"])))
    progress["history"].append({"updates": progress["updates"], "held_out": fit["score"], "train_loss": loss})
    if fit["score"] < progress["best"] - margin:
      progress.update(best=fit["score"], best_at=progress["updates"])
      best_params = jax.tree.map(jnp.copy, state.params)
    _say(
      console,
      f"[2/5 adapt] update {progress['updates']}/{dc.adapt_updates}: train loss {loss:.4f}, held-out "
      f"model loss {fit['score']:.4f} (best {progress['best']:.4f} at update {progress['best_at']})",
    )
    progress["seconds"] = progress.get("seconds", 0.0) + time.perf_counter() - start
    start = time.perf_counter()
    _save_tree(snap, (state, rb.priorities(), best_params), progress)  # rows are rebuilt from the inputs
  teacher = best_params
  if job.config.prior_head:  # back to the job's two heads: search reads the teacher's own policy head, adapted or
    # not, as without the second head; on a checkpoint that had two, the prior it kept
    teacher = distil_lib.set_prior(teacher, *((teacher,) if job.widened else (job.base, "search_prior")))
  if dc.corrupt_dynamics > 0:
    teacher = corrupt(teacher, dc.corrupt_dynamics, jax.random.PRNGKey(dc.seed + 7))
  check = None
  if dc.teacher_check and (progress["best_at"] > 0 or dc.corrupt_dynamics > 0):  # else it is the checkpoint
    returns = {k: v for k, v in baseline.items() if isinstance(v, dict)}
    check = teacher_check(returns, evaluate(job, teacher, seed=dc.seed + 10_000), keep=dc.search_keep)
    _say(console, f"[2/5 adapt] teacher check: search {check['search']} -> the {check['teacher']} model teaches")
    if check["teacher"] == "checkpoint":
      teacher = jax.tree.map(jnp.copy, job.base)
  _save_tree(out / "phases" / "teacher.npz", teacher)
  fits = _teacher_fits(job, teacher, held)
  per_update = sum(dream_ratio.update_steps(job.learn_config).values())
  return {
    "updates": progress["updates"],
    "best_at": progress["best_at"],
    "history": progress["history"],
    "fit": fits,
    "model_steps": progress["updates"] * per_update,
    "seconds": progress.get("seconds", 0.0) + time.perf_counter() - start,
    "corrupt_dynamics": dc.corrupt_dynamics,
    "teacher_check": check,
    # 0: the checkpoint's own model teaches (no better held-out fit, or the check found it searched worse)
    "teacher_from_update": 0 if check and check["teacher"] == "checkpoint" else progress["best_at"],
  }


def corrupt(params, scale: float, rng_key: jax.Array):
  """The negative control: N(0, (scale * std of the tensor)^2) noise on every dynamics weight."""
  mask = distil_lib.part_mask(params, distil_lib.DYNAMICS_PARTS)
  leaves, tree = jax.tree.flatten(params)
  keys = jax.random.split(rng_key, len(leaves))
  noisy = [
    x + m * scale * (jnp.std(x) + 1e-3) * jax.random.normal(k, x.shape, x.dtype)
    for x, m, k in zip(leaves, jax.tree.leaves(mask), keys)
  ]
  return jax.tree.unflatten(tree, noisy)


def distil_updates(job: Job) -> tuple[int, int]:
  """(updates, model steps per update) of the distil phase: the budget, rounded up to whole chunks."""
  dc = job.dc
  per = distil_lib.model_steps_per_update(dc)
  updates = max(1, math.ceil(dc.dream_ratio * job.exp.meta["env_steps"] / per))
  return math.ceil(updates / dc.updates_per_chunk) * dc.updates_per_chunk, per


def measure(job: Job, student, teacher) -> dict[str, float]:
  """On fixed states: the student's KL to the teacher's search targets on imagined states, and its policy
  drift KL(checkpoint || student) on recorded experience states and on anchor states."""
  if job.measure_fn is None:
    job.measure_fn = jax.jit(functools.partial(_measure, model=job.model, config=job.config, dc=job.dc))
  return {k: float(v) for k, v in job.measure_fn(student, teacher, job.base, job.rb_exp, job.rb_anchor).items()}


def _measure(student, teacher, base, rb_exp, rb_anchor, *, model, config: Config, dc: DreamConfig):
  key = jax.random.PRNGKey(dc.seed + 99)
  obs = distil_lib.sample_roots(rb_exp, key, 256, config.frame_stack)
  reh = distil_lib.rehearse(
    student,
    teacher,
    obs,
    jax.random.fold_in(key, 1),
    model=model,
    config=config,
    horizon=dc.horizon,
    num_simulations=dc.num_simulations,
    search_bonus=dc.search_bonus,
    guard=dc.guard,
    q_normalization=dc.q_normalization,
  )
  logits, _ = distil_lib.student_outputs(student, obs, reh.action, model=model, horizon=config.value_prefix_horizon)
  keep = reh.valid.astype(jnp.float32)
  out = {
    "teacher_kl": jnp.sum(keep * distil_lib.kl_probs(reh.policy, logits)) / jnp.maximum(jnp.sum(keep), 1.0),
    "kept": jnp.mean(keep),
  }
  for name, rb in (("experience", rb_exp), ("anchor", rb_anchor)):
    if rb is None:
      continue
    states = distil_lib.sample_roots(rb, jax.random.fold_in(key, 2), 256, config.frame_stack)
    base_logits, _ = model.predict(base, model.represent(base, states))
    now, _ = model.predict(student, model.represent(student, states))
    out[f"drift_{name}"] = jnp.mean(distil_lib.kl(base_logits, now))
  return out


def distil(job: Job, out: Path, *, console: bool) -> dict[str, Any]:
  """Phase 3: rehearse + distil for the budget (or, with `control`, real-data fine-tuning of the same model
  steps); saves the student (with `student_model` 'checkpoint': its prediction function on the checkpoint's
  world model) to phases/student.npz."""
  dc = job.dc
  teacher, _ = _load_tree(out / "phases" / "teacher.npz", job.base)
  updates, per = distil_updates(job)
  before = measure(job, teacher, teacher)
  snap = out / "phases" / "distil.npz"
  run = _control if dc.control else _rehearse_and_distil
  student, progress, model_steps, forward_steps, start = run(job, teacher, updates, snap, console=console)
  if not dc.control and dc.student_model == "checkpoint":
    # With task input the heads were trained on latents that carry the adapted offset of the experience's
    # member (and, with task_dynamics, imagined by its adapted dynamics rows); their home rows are zero, so the
    # anchor's world keeps the checkpoint's model exactly.
    student = distil_lib.with_parts(job.base, student, (*distil_lib.PREDICTION_PARTS, *distil_lib.TASK_PARTS))
  if job.config.prior_head and (dc.control or dc.search_prior == "distilled"):
    student = distil_lib.set_prior(student, student)  # search reads the fine-tuned or distilled head
  # else ('kept'): the search prior the student started with, its teacher's (with_parts: the checkpoint's)
  _save_tree(out / "phases" / "student.npz", student)
  after = measure(job, student, teacher)
  return {
    "mode": "control" if dc.control else "distil",
    "updates": progress["updates"],
    "history": progress["history"],
    "model_steps": model_steps,
    "model_steps_per_update": per,
    "budget_model_steps": updates * per,
    "forward_steps": forward_steps,
    "imagined_per_real_step": 0.0 if dc.control else model_steps / job.exp.meta["env_steps"],
    "before": before,
    "after": after,
    "seconds": progress.get("seconds", 0.0) + time.perf_counter() - start,
  }


def _control(job: Job, teacher, updates: int, snap: Path, *, console: bool) -> tuple:
  """The control of phase 3: the learner's real-data updates on the mixed replay, as many as match `updates`
  distillation updates in forward-pass equivalents. Returns (student, progress, model steps, forward steps,
  the time from which seconds are not yet counted); resumes from and snapshots to `snap`."""
  dc, start = job.dc, time.perf_counter()
  steps = dream_ratio.update_steps(job.learn_config)
  forward_learner = 3 * steps["unroll"] + steps["reanalyse"]  # the unroll is backpropagated; search is not
  total = max(1, round(updates * distil_lib.forward_steps_per_update(dc) / forward_learner))
  chunk_n = math.gcd(total, dc.adapt_eval_every)  # chunks that add up to the total exactly
  optimizer, chunk = _learner_chunk(job, chunk_n, "all", decay_updates=total if dc.lr_decay else 0)
  # From the teacher (the end of adaptation), every parameter, on the same mixed replay; copies, because the
  # chunk donates its state and replay.
  one_head = distil_lib.drop_prior(teacher)
  state = learner_lib.init_state(jax.tree.map(jnp.copy, one_head), optimizer, jax.random.PRNGKey(dc.seed + 1))
  rb = job.mixed()
  progress = {"updates": 0, "history": []}
  if snap.exists():
    (state, priorities), progress = _load_tree(snap, (state, rb.priorities()))
    rb = rb.with_priorities(priorities)
  while progress["updates"] < total:
    state, rb, metrics = chunk(state, rb, jnp.int32(job.learn_config.total_env_steps))
    progress["updates"] += chunk_n
    loss = float(np.mean(np.asarray(metrics["loss/total"])))
    progress["history"].append({"updates": progress["updates"], "loss": loss})
    _say(console, f"[3/5 control] update {progress['updates']}/{total}: real-data loss {loss:.4f}")
    progress["seconds"] = progress.get("seconds", 0.0) + time.perf_counter() - start
    start = time.perf_counter()
    _save_tree(snap, (state, rb.priorities()), progress)
  return state.params, progress, total * sum(steps.values()), total * forward_learner, start


def _rehearse_and_distil(job: Job, teacher, updates: int, snap: Path, *, console: bool) -> tuple:
  """Phase 3 proper: `updates` rehearse-and-distil updates of the student (from the teacher). Returns as
  `_control` does; resumes from and snapshots to `snap`."""
  dc, start = job.dc, time.perf_counter()
  optimizer = distil_lib.make_optimizer(
    learning_rate=dc.distil_learning_rate, train=dc.train, params=teacher, updates=updates if dc.lr_decay else 0
  )
  chunk = distil_lib.make_distil_chunk(job.model, job.config, optimizer, dc, anchor=job.anchor is not None)
  state = distil_lib.DistilState(
    jax.tree.map(jnp.copy, teacher), optimizer.init(teacher), jax.random.PRNGKey(dc.seed + 2), jnp.int32(0)
  )
  progress = {"updates": 0, "history": []}
  if snap.exists():
    state, progress = _load_tree(snap, state)
  anchor_rb = job.rb_anchor if job.rb_anchor is not None else job.rb_exp
  while progress["updates"] < updates:
    state, metrics = chunk(state, teacher, job.base, job.rb_exp, anchor_rb)
    progress["updates"] += dc.updates_per_chunk
    row = {
      "updates": progress["updates"],
      **{k.split("/")[1]: float(np.mean(np.asarray(v))) for k, v in metrics.items()},
    }
    progress["history"].append(row)
    drift = f", anchor drift {row['anchor_drift']:.4f}" if "anchor_drift" in row else ""
    _say(
      console,
      f"[3/5 distil] update {progress['updates']}/{updates}: teacher KL {row['teacher_kl']:.4f}, "
      f"kept {row['kept']:.2f}{drift}",
    )
    progress["seconds"] = progress.get("seconds", 0.0) + time.perf_counter() - start
    start = time.perf_counter()
    _save_tree(snap, state, progress)
  per = distil_lib.model_steps_per_update(dc)
  return state.params, progress, updates * per, updates * distil_lib.forward_steps_per_update(dc), start


def kept(before: float, now: float, keep: float) -> bool:
  """A return that lost at most 1 - keep of |before| (|before|: negative returns, Pong's -20, read right)."""
  return bool(now - before >= -(1.0 - keep) * abs(before))


def gate(job: Job, baseline: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
  """Phase 4's decision from per-episode returns before and after: the experience world's policy-only return
  must rise; the anchor world's policy-only return may lose at most 1 - anchor_keep of |baseline|, and the
  search returns of both worlds at most 1 - search_keep (|baseline|: negative returns, Pong's -20, read right).
  The new weights are an agent that acts with search too: distilled heads on a spoilt model (the negative
  control) can raise the policy alone and still wreck search."""
  dc = job.dc
  reasons, accept = [], True
  for world in ("experience", "anchor"):
    if world not in baseline:
      continue
    for mode in ("policy", "search"):
      before, now = np.mean(baseline[world][mode]), np.mean(after[world][mode])
      what = f"the {world} world's {'policy-only' if mode == 'policy' else 'search'} return"
      if (world, mode) == ("experience", "policy"):
        ok = bool(now > before)
        reasons.append(f"{what} {'rose' if ok else 'did not rise'} ({before:.2f} -> {now:.2f})")
      else:
        keep = dc.anchor_keep if mode == "policy" else dc.search_keep
        ok = kept(before, now, keep)
        reasons.append(
          f"{what} went {before:.2f} -> {now:.2f} ({'within' if ok else 'beyond'} the allowed loss of "
          f"{100 * (1 - keep):.0f}% of |{before:.2f}|)"
        )
      accept &= ok
  return {"accepted": bool(accept), "reasons": reasons}


# ------------------------------------------------------------------ the job


def _prepare(out: Path, inputs: dict[str, Any], settings: dict[str, Any]) -> dict[str, Any]:
  """The job's state file: new, or the one a previous run of the same job left (to resume)."""
  if out.exists() and not out.is_dir():
    raise ConfigError(f"--out {str(out)!r} is a file; give a directory")
  state_file = out / "dream.json"
  if state_file.exists():
    state = _read_state(state_file)
    stored = stored_settings(state)
    if state["inputs"] != inputs or stored != settings:
      differ = [k for k in inputs if state["inputs"].get(k) != inputs[k]] + [
        f"{k} {stored.get(k)!r} there, {settings[k]!r} here" for k in settings if stored.get(k) != settings[k]
      ]
      raise ConfigError(
        f"--out {str(out)!r} holds a dream job with other inputs or settings ({'; '.join(differ)}); "
        f"re-issue the same command to resume it, or choose a new --out"
      )
    return {**state, "settings": stored}
  if out.is_dir() and any(out.iterdir()):
    raise ConfigError(f"--out {str(out)!r} is a non-empty directory that holds no dream job; give a new directory")
  (out / "phases").mkdir(parents=True, exist_ok=True)
  state = {"version": VERSION, "inputs": inputs, "settings": settings, "done": {}}
  _write_state(out, state)  # from here on, the directory is this job's: a re-issue resumes it
  return state


def stored_settings(state: dict[str, Any]) -> dict[str, Any]:
  """A job state's settings, with what it ran for the settings added after it was made (BEFORE_KEY)."""
  return {**BEFORE_KEY, **state["settings"]}


def _read_state(state_file: Path) -> dict[str, Any]:
  """The job's state file (read back from disk: untrusted), or ConfigError (one line) when damaged."""
  try:
    state = json.loads(state_file.read_text())
    problem = _state_problem(state)
  except (OSError, ValueError, UnicodeDecodeError) as e:
    problem = f"not JSON ({' '.join(str(e).split())[:120]})"
  if problem is None:
    return state
  raise ConfigError(
    f"the dream job's state file {str(state_file)!r} is damaged ({problem[:160]}); delete it (or the whole "
    f"--out directory) to start the job over"
  )


def _state_problem(state: Any) -> str | None:
  if not isinstance(state, dict):
    return f"a {type(state).__name__}, not an object"
  kinds = {"version": int, "inputs": dict, "settings": dict, "done": dict}
  wrong = [k for k, kind in kinds.items() if type(state.get(k)) is not kind]
  done = state["done"] if isinstance(state.get("done"), dict) else {}
  wrong += [f"done.{k}" for k, v in done.items() if k not in PHASES or type(v) is not dict]
  if wrong:
    return f"bad or missing {', '.join(wrong)}"
  return None if state["version"] == VERSION else f"version {state['version']!r}"


def _write_state(out: Path, state: dict[str, Any]) -> None:
  tmp = out / "dream.json.tmp"
  tmp.write_text(json.dumps(state, indent=1) + "\n")
  os.replace(tmp, out / "dream.json")


def run(
  checkpoint: str,
  experience: str,
  out: str | Path,
  *,
  anchor: str | None = None,
  settings: DreamConfig = DreamConfig(),
  console: bool = True,
) -> dict[str, Any]:
  """Runs (or resumes) the dream job; returns the report's summary (also out/report.json)."""
  out = Path(out)
  job = Job(checkpoint, experience, anchor, settings)
  inputs = {
    "checkpoint": str(Path(job.checkpoint).resolve()),
    "experience": str(Path(experience).resolve()),
    "anchor": str(Path(anchor).resolve()) if anchor else None,
  }
  state = _prepare(out, inputs, settings.to_dict())
  done = state["done"]
  mode = "control" if job.dc.control else "distil"

  def finish(phase: str, result: dict[str, Any]) -> None:
    done[phase] = {**result, "peak_rss_bytes": peak_rss_bytes()}  # of this process, up to the phase's end
    _write_state(out, state)

  if "baseline" not in done:
    _say(console, "[1/5 baseline] evaluating the checkpoint")
    t = time.perf_counter()
    finish("baseline", {**evaluate(job, job.base, seed=job.dc.seed + 10_000), "seconds": time.perf_counter() - t})
  _say(console, "[1/5 baseline] " + _returns_line(done["baseline"]))
  if "adapt" not in done:
    finish("adapt", adapt(job, out, console=console, baseline=done["baseline"]))
  a = done["adapt"]
  since = a["teacher_from_update"]
  teacher = f"teacher from update {since}" if since else "the checkpoint's own model teaches"
  _say(console, f"[2/5 adapt] done: {a['updates']} updates, {teacher}")
  if "distil" not in done:
    n, per = distil_updates(job)
    _say(
      console,
      f"[3/5 {mode}] budget {job.dc.dream_ratio:g} imagined model steps per real recorded step = "
      f"{n} distil updates of {per} model steps",
    )
    finish("distil", distil(job, out, console=console))
  student, _ = _load_tree(out / "phases" / "student.npz", job.base)
  if "gate" not in done:
    _say(console, "[4/5 gate] evaluating the new weights")
    t = time.perf_counter()
    after = evaluate(job, student, seed=job.dc.seed + 10_000)
    finish("gate", {"after": after, **gate(job, done["baseline"], after), "seconds": time.perf_counter() - t})
  g = done["gate"]
  verdict = "accepted" if g["accepted"] else "rejected"
  _say(console, f"[4/5 gate] {_returns_line(g['after'])} -> {verdict}: {'; '.join(g['reasons'])}")
  if "write" not in done:
    finish("write", write(job, out, student if g["accepted"] else job.saved.params, state))
  _say(console, f"[5/5 write] checkpoint {done['write']['checkpoint']!r}, report {str(out / 'report.md')!r}")
  return json.loads((out / "report.json").read_text())


def peak_rss_bytes() -> int:
  """The most resident memory this program has held so far: Linux's VmHWM, which starts afresh at exec.
  Not ru_maxrss: on Linux it carries over the forking parent's peak (a 4.7 GB pytest worker made a 1.4 GB
  job read 4.7 GB). Elsewhere ru_maxrss is all there is (bytes on macOS, KiB on the BSDs)."""
  try:
    with open("/proc/self/status") as f:
      hwm = next(line for line in f if line.startswith("VmHWM:"))
    return int(hwm.split()[1]) * 1024
  except (OSError, StopIteration):
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)


def _returns_line(evals: dict[str, Any]) -> str:
  return "; ".join(
    f"{name} ({e['world']}): search {np.mean(e['search']):.2f}, policy {np.mean(e['policy']):.2f}"
    for name, e in evals.items()
    if isinstance(e, dict) and "search" in e
  )


def write(job: Job, out: Path, params, state: dict[str, Any]) -> dict[str, Any]:
  """Phase 5: the chosen weights as a checkpoint (a run directory: dreamer eval, play and dream read it;
  train --logdir continues it when it has one policy head), then the report."""
  saved = job.saved
  if job.dc.control:  # a plain fine-tune: one policy head, which its search reads, as any training run's
    params = distil_lib.drop_prior(params)
  learner_state = saved.state["learner"]._replace(target_params=params)
  config = {**saved.meta["config"], "prior_head": "search_prior" in params["params"]}
  out_config = config_lib.from_dict(config, "the dream's output")
  if out_config.prior_head != bool(saved.meta["config"].get("prior_head", False)):
    # The checkpoint's optimizer state fits its own heads; rebuilt for the output's, so that it loads whole.
    learner_state = learner_state._replace(opt_state=learner_lib.make_optimizer(out_config).init(params))
  shutil.rmtree(out / "checkpoints", ignore_errors=True)  # a redone gate may have decided otherwise
  ckpts = ckpt_lib.Checkpoints(out, keep=1)
  try:
    ckpts.save(
      saved.step,
      params,
      {**saved.state, "learner": learner_state},
      {k: saved.meta[k] for k in ("spec", "progress", "world_state")}
      | {"config": config, "dream": {"inputs": state["inputs"], "accepted": state["done"]["gate"]["accepted"]}},
    )
    ckpts.wait()
    path = ckpts.path(saved.step)
  finally:
    ckpts.close()
  tmp = out / "config.json.tmp"
  tmp.write_text(json.dumps(out_config.to_dict(), indent=2) + "\n")
  os.replace(tmp, out / "config.json")
  state["done"]["write"] = {"checkpoint": path}
  from dreamer import dream_report

  dream_report.write(out, job, state)
  return {"checkpoint": path}
