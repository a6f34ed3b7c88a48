"""The agent: what is built from a config and a world spec (networks, jitted acting and learning, init), the
checks that a config fits a world, and loading a checkpoint back (whole, or just enough to act).

Jobs (`train`, `dream`, `suites`, `compare`, `cli`) build on this module; it imports none of them.
"""

from __future__ import annotations

import dataclasses
import functools
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import jax
import numpy as np

import worlds
from dreamer import actor as actor_lib
from dreamer import checkpoint as ckpt_lib
from dreamer import config as config_lib
from dreamer import devices as devices_lib
from dreamer import frames
from dreamer import learner as learner_lib
from dreamer import replay as replay_lib
from dreamer.config import Config
from dreamer.networks import Model, Params, init_params, make_network


class Programs(NamedTuple):
  """What an Agent is built of: the model and its jitted functions (see `Agent`), shared by every Agent of the
  same world spec and config, but for HOST_ONLY keys, in a process (`programs`)."""

  layout: devices_lib.Layout
  net: Any
  model: Model
  optimizer: Any
  train_chunk: learner_lib.TrainChunk
  act: Callable[..., Any]
  policy_act: Callable[..., Any]
  eval_act: Callable[..., Any]
  eval_policy_act: Callable[..., Any]
  add: Callable[..., Any]
  explore_draw: Callable[..., Any]
  held_draw: Callable[..., Any]


# Config keys that only the host loop reads: the seed (every random draw takes a key passed in), the run's length
# (acting's temperature schedule runs on the host; the learner chunk takes 1 / length as a value), when learning
# starts and the run stops, evaluation's schedule and worlds, checkpoints and logging.
HOST_ONLY = (
  "seed", "total_env_steps", "stop_return", "learning_starts", "eval_every", "eval_episodes", "eval_max_steps",
  "checkpoint_every_updates", "checkpoints_kept", "tensorboard", "video",
)  # fmt: skip
_HOST_DEFAULTS = {f.name: f.default for f in dataclasses.fields(Config) if f.name in HOST_ONLY}


def programs(config: Config, spec: worlds.Spec) -> Programs:
  """The model and jitted functions of `config` on `spec`, shared by every config that differs from it only in
  HOST_ONLY keys: a second run in one process (a resumed run, another seed of `dreamer bench`, a test's
  straight and cut runs) calls the same jitted functions, so jax traces, lowers and compiles nothing again.
  The learner chunk is bound to this config's length."""
  shared = build_programs(dataclasses.replace(config, **_HOST_DEFAULTS), spec)
  chunk = learner_lib.TrainChunk(shared.train_chunk.target, learner_lib.reciprocal(config.total_env_steps))
  return shared._replace(train_chunk=chunk)


@functools.lru_cache(maxsize=8)
def build_programs(config: Config, spec: worlds.Spec) -> Programs:
  """The model and jitted functions of `config` on `spec`, built once per process for each config and spec
  (both frozen and hashable; the devices that the config's layout reads do not change within a process)."""
  layout = devices_lib.layout(config)
  net = make_network(config, spec.num_actions, spec.obs_dtype, frames.obs_shape(spec.obs_shape, config.frame_stack))
  model = Model(net)
  optimizer = learner_lib.make_optimizer(config)
  train_chunk = learner_lib.make_train_chunk(model, config, optimizer, layout=layout)
  add = functools.partial(replay_lib.add, stack=config.frame_stack)
  act, policy_act = actor_lib.make_act(model, config), actor_lib.make_policy_act(model)
  # train_search off: training acts as search 'none' does (the policy, sampled); evaluation still searches.
  train_act = act if config.train_search else actor_lib.make_act(model, actor_lib.policy_only(config))
  shared = dict(
    layout=layout, net=net, model=model, optimizer=optimizer, train_chunk=train_chunk,
    explore_draw=actor_lib.make_explore(config, spec.num_actions),
    held_draw=actor_lib.make_held_draw(config, spec.num_actions),
  )  # fmt: skip
  if layout.count == 1:
    return Programs(
      **shared, act=train_act, policy_act=policy_act, eval_act=act, eval_policy_act=policy_act,
      add=jax.jit(add, donate_argnums=0),
    )  # fmt: skip
  if layout.processes == 1:  # observations split over the devices, so the batched search runs on all of them
    split_policy_act = lambda params, obs: policy_act(params, layout.rows(obs))  # noqa: E731
    return Programs(
      **shared,
      act=lambda params, obs, key, t, held=None: train_act(
        params, layout.rows(obs), key, t, None if held is None else layout.rows(held)
      ),
      eval_act=lambda params, obs, *args: act(params, layout.rows(obs), *args),
      policy_act=split_policy_act,
      eval_policy_act=split_policy_act,
      add=jax.jit(add, donate_argnums=0, out_shardings=layout.replay),
    )
  # each process acts on its own envs' rows (in and out); evaluation runs on every process alike
  add_global = jax.jit(add, donate_argnums=0, out_shardings=layout.replay)
  return Programs(
    **shared,
    act=lambda params, obs, key, t, held=None: layout.to_local(
      train_act(params, layout.to_global(obs), key, t, None if held is None else layout.to_global(held))
    ),
    policy_act=lambda params, obs: layout.to_local(policy_act(params, layout.to_global(obs))),
    eval_act=lambda params, obs, *args: act(params, layout.replicate(obs), *args),
    eval_policy_act=lambda params, obs: policy_act(params, layout.replicate(obs)),
    add=lambda rb, *rows: add_global(rb, *layout.to_global(rows)),
  )


class Agent:
  """Everything built from a config and a world spec: the model and its jitted functions (`programs`: shared
  with every other Agent of the same config but for HOST_ONLY keys in this process).

  act(params, obs [B, *obs_shape], key, temperature, held=None) -> actor output (`actor.ActFn`);
  policy_act(params, obs) -> action;
  train_chunk(state, replay, env_step) -> (state, replay, metrics f32[updates_per_chunk] each);
  add(replay, rows, final_obs, ended, terminated) -> replay (donates the replay);
  over several processes, act / policy_act / add take and give this process's env rows only, and
  eval_act / eval_policy_act (what `evaluate` uses) run the same evaluation on every process;
  place(state, replay) -> both laid over the run's devices (`layout`, from `config.devices`);
  explore_draw(key, epsilon) -> the exploratory repeats every env would start now (`actor.make_explore`);
  held_draw(key) -> which envs redraw their held noise and fresh Gumbel noise for every env
  (`actor.make_held_draw`), for act's `held` f32[B, A]: the noise this process's envs hold
  (`config.noise_hold`)."""

  def __init__(self, config: Config, spec: worlds.Spec):
    self.config = config
    self.spec = spec
    self.obs_shape = frames.obs_shape(spec.obs_shape, config.frame_stack)  # what the networks see
    for name, value in programs(config, spec)._asdict().items():
      setattr(self, name, value)

  def place(
    self, state: learner_lib.TrainState, rb: replay_lib.ReplayState
  ) -> tuple[learner_lib.TrainState, replay_lib.ReplayState]:
    """`state` and `rb` (host or device arrays) as device arrays laid over the run's devices."""
    return self.layout.place(state, rb)

  def init(self, rng_key: jax.Array) -> tuple[learner_lib.TrainState, replay_lib.ReplayState]:
    init_key, train_key = jax.random.split(rng_key)
    params = init_params(self.net, init_key, self.obs_shape)
    state = learner_lib.init_state(params, self.optimizer, train_key)
    rb = replay_lib.init(
      self.config.num_envs,
      self.config.replay_capacity,
      self.spec.obs_shape,
      self.spec.obs_dtype,
      self.spec.num_actions,
    )
    return self.place(state, rb)

  def evaluate(
    self, world: worlds.World, params: Params, rng_key: jax.Array, *, record: Callable[[], None] | None = None
  ) -> dict[str, float]:
    """One episode per env of `world`, acting with search (greedy) and with the policy network alone: the
    mean, std and length of the returns of each as `eval/...` metrics, and the seconds it took. `record`: see
    `actor.run_episodes` (a video of env 0 acting with search)."""
    start = time.perf_counter()
    c = self.config
    res = actor_lib.evaluate(
      world, params, self.eval_act, self.eval_policy_act, rng_key, seed=c.seed + 10_000, max_steps=c.eval_max_steps,
      stack=c.frame_stack, record=record,
    )  # fmt: skip
    record = {"eval/seconds": time.perf_counter() - start}
    for name, r in res.items():
      record[f"eval/{name}_return"] = float(np.mean(r.returns))
      record[f"eval/{name}_return_std"] = float(np.std(r.returns))
      record[f"eval/{name}_length"] = float(np.mean(r.lengths))
    return record


def spec_dict(spec: worlds.Spec) -> dict[str, Any]:
  """A world spec as the JSON a checkpoint's meta holds."""
  return {
    "obs_shape": list(spec.obs_shape),
    "obs_dtype": np.dtype(spec.obs_dtype).name,
    "num_actions": spec.num_actions,
  }


def spec_from_dict(s: dict[str, Any]) -> worlds.Spec:
  """The world spec a checkpoint's meta holds (`spec_dict`'s inverse)."""
  return worlds.Spec(tuple(int(n) for n in s["obs_shape"]), np.dtype(s["obs_dtype"]), s["num_actions"])


def checkpoint_state(
  state: learner_lib.TrainState, rb: replay_lib.ReplayState, key: jax.Array, obs: Any
) -> dict[str, Any]:
  """Everything of a checkpoint's `state` item: all device arrays but the online parameters (saved apart)."""
  return {"learner": state._replace(params=None), "replay": rb, "key": key, "obs": obs}


def check_world(world_id: str, what: str, **kwargs) -> worlds.Spec:
  """The spec of world `world_id` (built with `kwargs`), or ConfigError (one line, prefixed by `what`) if it
  cannot be built; run before any work starts."""
  try:
    with worlds.make(world_id, num_envs=1, seed=0, **kwargs) as world:
      return world.spec
  except ValueError as e:
    raise config_lib.ConfigError(f"{what}: {e}") from None
  except ImportError as e:  # e.g. ale-py missing from this environment
    raise config_lib.ConfigError(f"{what}: {world_id!r} needs a package that is not installed: {e}") from None


def check_network(config: Config, spec: worlds.Spec) -> None:
  """ConfigError unless the config's network and augmentations fit the world's observations."""
  image = len(spec.obs_shape) == 3
  for ok, what in [
    (config.network != "resnet" or image, "network 'resnet'"),
    (not config.augment or image, "augment"),
    (not config.conv_channels or image, "conv_channels > 0"),
  ]:
    if not ok:
      raise config_lib.ConfigError(
        f"{what} needs image observations [H, W, C], but {config.world!r} gives "
        f"{list(spec.obs_shape)}; use network 'mlp', augment false and conv_channels 0 for it"
      )


def warn(text: str) -> None:
  print(f"dreamer: warning: {text}", file=sys.stderr, flush=True)


def newest_readable(
  ckpts: ckpt_lib.Checkpoints, step: int | None, read: Callable[[int], Any], *, warn: Callable[[str], None] = warn
) -> Any:
  """read(step) of checkpoint `step`, or with step None of the newest checkpoint that reads: each newer one
  that raises CheckpointError is reported through `warn` once an older one has read. CheckpointError naming
  every failure when none reads (or `step`'s own error)."""
  steps = ckpts.steps()
  if not steps or (step is not None and step not in steps):
    held = f"steps {steps}" if steps else "no complete checkpoint"
    raise ckpt_lib.CheckpointError(f"no checkpoint found in {str(ckpts.dir)!r} (step {step}): it holds {held}")
  if step is not None:
    return read(step)
  out, failed = ckpts.first_readable(read)
  if out is None:
    raise ckpt_lib.CheckpointError(
      f"no checkpoint in {str(ckpts.dir)!r} can be read: {'; '.join(str(e) for _, e in failed)}"
    )
  for _, error in failed:
    warn(f"{error}; used the previous checkpoint")
  return out


def _restore_whole(ckpts: ckpt_lib.Checkpoints, step: int) -> ckpt_lib.Saved:
  meta = ckpts.read_meta(step)
  spec = spec_from_dict(meta["spec"])
  config = config_lib.from_dict(meta["config"], ckpts.path(step))
  agent = Agent(dataclasses.replace(config, devices=1), spec)  # for the shapes only: any machine reads it
  state, rb = jax.eval_shape(agent.init, jax.random.PRNGKey(0))
  obs = jax.ShapeDtypeStruct((config.num_envs, *agent.obs_shape), spec.obs_dtype)
  return ckpts.restore(step, state.params, checkpoint_state(state, rb, jax.random.PRNGKey(0), obs))


def load_checkpoint(
  run_dir: str | Path, step: int | None = None, *, warn: Callable[[str], None] = warn
) -> ckpt_lib.Saved:
  """The full saved state of checkpoint `step` of a run (None: its newest readable one, reporting the newer
  unreadable ones through `warn`): params and the `state` item (learner, replay, key, obs) as numpy trees,
  and the meta. CheckpointError if it cannot be read."""
  ckpts = ckpt_lib.Checkpoints(run_dir, writable=False)
  try:
    return newest_readable(ckpts, step, functools.partial(_restore_whole, ckpts), warn=warn)
  finally:
    ckpts.close()


class Acting(NamedTuple):
  """A checkpoint loaded to act in a world: its config, the world built for acting (the caller closes it),
  the world's id, the network, the parameters (on the device) and the checkpoint's path."""

  config: Config
  world: worlds.World
  world_id: str
  net: Any
  params: Params
  path: str


def _open_acting(
  ckpts: ckpt_lib.Checkpoints,
  step: int,
  world_id: str | None,
  *,
  num_envs: int,
  seed: int,
  train: bool,
  render: bool = False,
) -> Acting:
  meta = ckpts.read_meta(step)
  config = config_lib.from_dict(meta["config"], f"checkpoint {ckpts.path(step)!r}")
  saved, world_id = meta["spec"], world_id or config.world
  check_world(world_id, "--world")
  kwargs = config_lib.world_kwargs(dataclasses.replace(config, world=world_id, video=render), train=train)
  world = worlds.make(world_id, num_envs=num_envs, seed=seed, **kwargs)
  try:
    spec = world.spec
    if list(spec.obs_shape) != saved["obs_shape"] or spec.num_actions != saved["num_actions"]:
      raise config_lib.ConfigError(
        f"checkpoint {ckpts.path(step)!r} was trained on observations {saved['obs_shape']} with "
        f"{saved['num_actions']} actions, but {world_id!r} has {list(spec.obs_shape)} with {spec.num_actions}"
      )
    obs_shape = frames.obs_shape(spec.obs_shape, config.frame_stack)
    net = make_network(config, spec.num_actions, spec.obs_dtype, obs_shape)
    abstract = jax.eval_shape(functools.partial(init_params, net, jax.random.PRNGKey(0), obs_shape))
    restored = ckpts.restore(step, abstract)
  except BaseException:
    world.close()
    raise
  return Acting(config, world, world_id, net, jax.device_put(restored.params), ckpts.path(restored.step))


def load_acting(
  path: str | Path, world_id: str | None, *, num_envs: int, seed: int, train: bool, render: bool = False
) -> Acting:
  """A checkpoint path (a run directory: its newest readable checkpoint, or one `checkpoints/<step>`) loaded to
  act in world `world_id` (default: the checkpoint's), built with `num_envs` envs for training or evaluation
  (`render`: able to draw frames for a video); ConfigError or CheckpointError (one line) when either cannot be
  used."""
  run_dir, step = ckpt_lib.locate(path)
  ckpts = ckpt_lib.Checkpoints(run_dir, writable=False)
  try:
    open_one = functools.partial(
      _open_acting, ckpts, world_id=world_id, num_envs=num_envs, seed=seed, train=train, render=render
    )
    return newest_readable(ckpts, step, open_one)
  finally:
    ckpts.close()
