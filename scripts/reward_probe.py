"""Can a config's network learn its world's rewards at all? Supervised, offline, without any RL: prints JSON.

When a game does not learn and `value_probe.py` shows the model's predicted rewards flat (the same for steps
that brought -1, 0 and +1), this separates "the network cannot tell these steps apart at this size" from "the
training loop never taught it". It plays uniformly random actions in the config's training world (its frame
stack, clipped rewards, life-loss episodes), then trains the config's network on those steps alone: the
representation of each step's stacked observation, one dynamics step with the action taken, and the value-prefix
head against the step's reward (the learner's categorical loss at unroll depth 1; the learner's Adam settings,
no augmentation, no other loss). Test steps come from other worlds' seeds.

Reported, on the test steps, every `--report-every` updates and at the end:
  loss, loss_constant   the reward loss, and that of the best constant prediction (the training rewards' two-hot
                        mean): a network that learned nothing sits at loss_constant;
  pred_by_sign          the mean predicted reward on steps whose reward was negative / zero / positive;
  auc_negative, auc_positive   how well the prediction ranks negative (positive) reward steps below (above)
                        zero-reward steps (0.5: no better than chance; 1: perfect).

With `--checkpoint RUN` the network starts from a trained run's parameters (and the run's config) instead of a
fresh initialisation, and a report at update 0 shows what the run's own model predicts; `--train-parts
lstm,prefix_head` then trains only those modules (the rest frozen): whether the run's representation and
dynamics hold what predicts the rewards, and only its reward head has not read it out.

  python scripts/reward_probe.py --config atari-cpu --set world=atari:Boxing [--steps 40000] [--updates 3000]
  python scripts/reward_probe.py --checkpoint runs/asterix --train-parts lstm,prefix_head
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402

import worlds  # noqa: E402
from dreamer import agent as agent_lib  # noqa: E402
from dreamer import config as config_lib  # noqa: E402
from dreamer import distil, frames  # noqa: E402
from dreamer.learner import make_optimizer  # noqa: E402
from dreamer.networks import Model, init_params, make_network, zero_lstm_state  # noqa: E402
from dreamer.suites import commit  # noqa: E402
from dreamer.support import logits_to_scalar, scalar_to_probs  # noqa: E402
from worlds.base import Spec  # noqa: E402


def random_play(config: config_lib.Config, *, steps: int, seed: int, before=None) -> Iterator[tuple]:
  """`steps` env steps (over the config's num_envs) of uniformly random play in the config's training world
  (its frame stack, clipped rewards, life-loss episodes): yields (world, obs, action, step, seen) per world
  step, obs the stacked observations [num_envs, *obs_shape] the actions i64[num_envs] were taken from, step
  the world's Step, seen what `before(world)` returned just before the step (None without `before`)."""
  world = worlds.make(config.world, num_envs=config.num_envs, seed=seed, **config_lib.world_kwargs(config, train=True))
  rng = np.random.default_rng(seed)
  obs = frames.start(world.reset(seed), config.frame_stack)
  try:
    for _ in range(steps // config.num_envs):
      seen = before(world) if before is not None else None
      action = rng.integers(0, world.spec.num_actions, size=config.num_envs)
      step = world.step(action)
      yield world, obs, action, step, seen
      obs = frames.push(obs, step.obs, step.terminated | step.truncated, config.frame_stack)
  finally:
    world.close()


def collect(config: config_lib.Config, *, steps: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, Spec]:
  """`random_play`'s steps: stacked observations [N, *obs_shape] (before each action), actions i32[N],
  rewards f32[N], the world's Spec."""
  out_obs, out_act, out_rew, spec = [], [], [], None
  for world, obs, action, step, _ in random_play(config, steps=steps, seed=seed):
    out_obs.append(obs)
    out_act.append(action)
    out_rew.append(step.reward)
    spec = world.spec
  acts, rews = np.concatenate(out_act).astype(np.int32), np.concatenate(out_rew).astype(np.float32)
  return np.concatenate(out_obs), acts, rews, spec


def auc(low: np.ndarray, high: np.ndarray) -> float | None:
  """P(a draw from `high` > a draw from `low`), ties counted half (the Mann-Whitney statistic)."""
  if len(low) == 0 or len(high) == 0:
    return None
  both = np.concatenate([low, high])
  order = np.argsort(both, kind="stable")
  ranks = np.empty(len(both))
  ranks[order] = np.arange(1, len(both) + 1)
  for v in np.unique(both):  # average ranks over ties
    tie = both == v
    ranks[tie] = ranks[tie].mean()
  return float((ranks[len(low) :].sum() - len(high) * (len(high) + 1) / 2) / (len(low) * len(high)))


def summary(pred: np.ndarray, reward: np.ndarray, loss: float, loss_constant: float) -> dict:
  """The JSON fields of the module docstring from test predictions and rewards f32[N]."""
  by_sign = {}
  for name, mask in (("negative", reward < 0), ("zero", reward == 0), ("positive", reward > 0)):
    by_sign[name] = {"count": int(mask.sum()), "mean": float(pred[mask].mean()) if mask.any() else None}
  zero = pred[reward == 0]
  return {
    "loss": loss,
    "loss_constant": loss_constant,
    "pred_by_sign": by_sign,
    "auc_negative": auc(pred[reward < 0], zero) if (reward < 0).any() else None,
    "auc_positive": auc(zero, pred[reward > 0]) if (reward > 0).any() else None,
  }


def check_parts(ap: argparse.ArgumentParser, params: dict, parts: tuple[str, ...]) -> None:
  """Exits with one line when a --train-parts name is not a top-level module of the network `params`."""
  unknown = [p for p in parts if p not in params["params"]]
  if unknown:
    ap.error(f"--train-parts {','.join(unknown)}: not a module of this network; allowed: {', '.join(params['params'])}")


def offline_arguments(ap: argparse.ArgumentParser) -> None:
  """The options of an offline probe on random play: --set, --steps, --test-steps, --updates, --report-every,
  --seed (this script's and `collision_probe.py`'s)."""
  ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override (repeatable)")
  ap.add_argument("--steps", type=int, default=40000, help="random env steps to train on (default 40000)")
  ap.add_argument("--test-steps", type=int, default=8000, help="random env steps to test on (default 8000)")
  ap.add_argument("--updates", type=int, default=3000, help="Adam updates (default 3000)")
  ap.add_argument("--report-every", type=int, default=1000, help="updates between test reports (default 1000)")
  ap.add_argument("--seed", type=int, default=0)


def main(argv: list[str] | None = None) -> dict:
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--config", help="a preset name or a .toml path (or --checkpoint)")
  ap.add_argument("--checkpoint", help="a run directory or checkpoint: start from its parameters and config")
  ap.add_argument("--train-parts", default="", help="comma-separated modules to train, the rest frozen (default: all)")
  offline_arguments(ap)
  args = ap.parse_args(argv)
  parts = tuple(p for p in args.train_parts.split(",") if p)
  if (args.config is None) == (args.checkpoint is None):
    ap.error("give exactly one of --config and --checkpoint")
  start = None
  if args.checkpoint:
    acting = agent_lib.load_acting(args.checkpoint, None, num_envs=1, seed=args.seed, train=False)
    acting.world.close()
    config = config_lib.from_dict(acting.config.to_dict(), f"checkpoint {acting.path!r}", args.set)
    start = acting.params
    check_parts(ap, start, parts)  # before collecting: a typo costs nothing
  else:
    config = config_lib.load(args.config, args.set)
  t0 = time.perf_counter()
  obs, act, rew, spec = collect(config, steps=args.steps, seed=args.seed)
  t_obs, t_act, t_rew, _ = collect(config, steps=args.test_steps, seed=args.seed + 10_000)
  collect_s = time.perf_counter() - t0

  model = Model(make_network(config, spec.num_actions, spec.obs_dtype, obs.shape[1:]))
  params = start
  if start is None:
    params = init_params(model.net, jax.random.PRNGKey(args.seed), obs.shape[1:])
    check_parts(ap, params, parts)
  opt = distil.only(make_optimizer(config), params, parts) if parts else make_optimizer(config)
  opt_state = opt.init(params)
  size = config.reward_support

  def logits(params, o, a, train):
    call = lambda method, *xs: model.call(params, method, *xs, train=train)  # noqa: E731
    if not train:
      latent = call("represent", o)
      return call("dynamics", latent, a, zero_lstm_state(o.shape[0], model.lstm_dim))[2], params
    latent, params = call("represent", o)
    (_, _, out), params = call("dynamics", latent, a, zero_lstm_state(o.shape[0], model.lstm_dim))
    return out, params

  def loss_fn(params, o, a, r):
    out, moved = logits(params, o, a, True)
    return -jnp.mean(jnp.sum(scalar_to_probs(r, size) * jax.nn.log_softmax(out), -1)), moved

  @jax.jit
  def update(params, opt_state, o, a, r):
    (loss, params_moved), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, o, a, r)
    # BatchNorm's running averages move with training, unless parts are frozen (a probe of trained features)
    moved = {} if parts else {k: v for k, v in params_moved.items() if k != "params"}
    updates, opt_state = opt.update(grads, opt_state, params)
    return {**optax.apply_updates(params, updates), **moved}, opt_state, loss

  @jax.jit
  def predict(params, o, a, r):
    out, _ = logits(params, o, a, False)
    return logits_to_scalar(out), -jnp.sum(scalar_to_probs(r, size) * jax.nn.log_softmax(out), -1)

  mean_target = jnp.mean(scalar_to_probs(jnp.asarray(rew), size), 0)  # the best constant prediction

  def test(params) -> dict:
    preds, losses = [], []
    for i in range(0, len(t_rew), 512):
      p, lo = predict(params, t_obs[i : i + 512], t_act[i : i + 512], t_rew[i : i + 512])
      preds.append(np.asarray(p))
      losses.append(np.asarray(lo))
    two_hot = np.asarray(scalar_to_probs(jnp.asarray(t_rew), size))
    const = -np.mean(np.sum(two_hot * np.log(np.maximum(mean_target, 1e-12)), -1))
    return summary(np.concatenate(preds), t_rew, float(np.concatenate(losses).mean()), float(const))

  rng = np.random.default_rng(args.seed)
  reports, t1 = ([{"updates": 0, **test(params)}] if start is not None else []), time.perf_counter()
  for n in range(1, args.updates + 1):
    idx = rng.integers(0, len(rew), size=config.batch_size)
    params, opt_state, _ = update(params, opt_state, obs[idx], act[idx], rew[idx])
    if n % args.report_every == 0 or n == args.updates:
      reports.append({"updates": n, **test(params)})
  out = {
    "world": config.world,
    "config": args.config or args.checkpoint,
    "train_parts": list(parts),
    "overrides": args.set,
    "commit": commit(),
    "train_steps": len(rew),
    "train_rewards": {k: int(m.sum()) for k, m in (("negative", rew < 0), ("zero", rew == 0), ("positive", rew > 0))},
    "test_steps": len(t_rew),
    "collect_s": collect_s,
    "train_s": time.perf_counter() - t1,
    "reports": reports,
  }
  print(json.dumps(out))
  return out


if __name__ == "__main__":
  main()
