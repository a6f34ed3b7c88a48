"""Can a config's network learn which move kills, given every answer? Supervised, offline, MinAtar; prints JSON.

`death_probe.py` shows a trained Asterix checkpoint ranks its fatal moves at chance. This separates "the network
cannot represent the collision rule at this size" from "the RL run never taught it": it plays uniformly random
actions in the config's training world and, before every step, tries each action on a copy of each game
(`death_probe.fatal_actions`), so every state carries a fatal/safe label for all its actions, the ones not
taken included. It then trains the config's network on those labels alone: the representation of the
observation, one dynamics step with an action, and the terminal head (`terminal_loss_weight`'s head, built here
whatever the config says) against the label (binary cross-entropy; the learner's Adam settings, no
augmentation, no other loss). Each batch holds `batch_size` states with one uniformly drawn action each, half
of them drawn from the states with both a fatal and a safe action (under random play about 1% of the actions
kill, so a uniform batch would hold about one death). With `--labels taken` it learns only what an RL run
could: each state's action taken by random play and whether that step ended the game (a replay row's view,
sticky repeats included), half of each batch drawn from the steps that did; the test still asks about every
action. Test states come from other worlds' seeds.

Reported on the test states every `--report-every` updates and at the end:
  auc_within   P(p(safe) < p(fatal)) over the (fatal, safe) pairs of actions at the same state, over the states
               with both kinds (0.5: the network cannot tell which move kills; 1: it always can);
  auc_pooled   the same over all (state, action) pairs of the test set (a state's danger alone can score here);
  loss, loss_constant   the cross-entropy, and that of the base rate of random play's labels (training
               oversamples deaths, so the network's probabilities run high: read the AUCs).

  python scripts/collision_probe.py --config minatar --set world=minatar:Asterix [--steps 40000] [--updates 3000]
      [--labels taken]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import NamedTuple

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import death_probe  # noqa: E402  (scripts/, beside this file)
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402
import reward_probe  # noqa: E402  (scripts/, beside this file)

from dreamer import config as config_lib  # noqa: E402
from dreamer.learner import make_optimizer  # noqa: E402
from dreamer.networks import Model, init_params, make_network, zero_lstm_state  # noqa: E402
from dreamer.suites import commit  # noqa: E402


class Data(NamedTuple):
  """States of random play: obs [N, *obs_shape] (before the step), fatal bool[N, A] (each action tried on a
  copy), and the step itself: action i32[N] and terminated bool[N] (the world restarts an ended game, so every
  state is one of a running game)."""

  obs: np.ndarray
  fatal: np.ndarray
  action: np.ndarray
  terminated: np.ndarray


def mixed(fatal: np.ndarray) -> np.ndarray:
  """bool[N]: the states of labels bool[N, A] with both a fatal and a safe action."""
  return fatal.any(1) & ~fatal.all(1)


def collect(config: config_lib.Config, *, steps: int, seed: int) -> Data:
  """`steps` env steps (over the config's num_envs) of uniformly random play in the config's training world."""
  if not config.world.startswith("minatar:"):
    raise ValueError(f"the probe copies MinAtar games; {config.world!r} is not a minatar: world")

  def labels(world) -> np.ndarray:
    return np.asarray([death_probe.fatal_actions(env, world._actions) for env in world._envs])

  rows = [
    (obs, fatal, action, step.terminated)
    for _, obs, action, step, fatal in reward_probe.random_play(config, steps=steps, seed=seed, before=labels)
  ]
  return Data(*(np.concatenate(column) for column in zip(*rows)))


def summary(p: np.ndarray, fatal: np.ndarray, loss: float, loss_constant: float) -> dict:
  """The module docstring's fields from predictions f32[N, A] (any monotone score) and labels bool[N, A]."""
  both = mixed(fatal)
  rows = [(p[i][fatal[i]], p[i][~fatal[i]]) for i in np.flatnonzero(both)]
  return {
    "states_with_both": int(both.sum()),
    "fatal_share": float(fatal.mean()),
    "auc_within": death_probe.auc(rows),
    "auc_pooled": death_probe.auc([(p[fatal], p[~fatal])]),
    "loss": loss,
    "loss_constant": loss_constant,
  }


def rich_states(data: Data, labels: str) -> np.ndarray:
  """Indices of the states half of each batch comes from: those with both a fatal and a safe action ('all'), or
  the steps that ended the game ('taken')."""
  return np.flatnonzero(mixed(data.fatal) if labels == "all" else data.terminated)


def batch(
  data: Data, rich: np.ndarray, labels: str, rng: np.random.Generator, size: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """One training batch: state indices i64[size] (the first half from `rich`, `rich_states(data, labels)`),
  actions i32[size] and labels bool[size]. 'all': a uniformly drawn action and its label; 'taken': the action
  random play took and whether that step ended the game (a sticky repeat of the previous action included), as a
  replay row says."""
  half = size // 2
  idx = np.concatenate([rng.choice(rich, half), rng.integers(0, len(data.obs), size - half)])
  if labels == "all":
    act = rng.integers(0, data.fatal.shape[1], size=size).astype(np.int32)
    return idx, act, data.fatal[idx, act]
  return idx, data.action[idx].astype(np.int32), data.terminated[idx]


def bce(logit: jax.Array, label: jax.Array) -> jax.Array:
  """Binary cross-entropy of logits against 0/1 labels, elementwise."""
  return -(label * jax.nn.log_sigmoid(logit) + (1.0 - label) * jax.nn.log_sigmoid(-logit))


def main(argv: list[str] | None = None) -> dict:
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--config", required=True, help="a preset name or a .toml path")
  reward_probe.offline_arguments(ap)
  ap.add_argument(
    "--labels",
    choices=("all", "taken"),
    default="all",
    help="train on every action's label (default), or only on the action random play took, as RL sees it",
  )
  args = ap.parse_args(argv)
  config = config_lib.load(args.config, args.set)
  if config.terminal_loss_weight == 0.0:  # the head is what the probe trains
    config = config_lib.load(args.config, [*args.set, "terminal_loss_weight=1"])
  if not config.world.startswith("minatar:"):
    ap.error(f"the probe copies MinAtar games; {config.world!r} is not a minatar: world")
  t0 = time.perf_counter()
  train = collect(config, steps=args.steps, seed=args.seed)
  test = collect(config, steps=args.test_steps, seed=args.seed + 10_000)
  collect_s = time.perf_counter() - t0

  num_actions = train.fatal.shape[1]
  model = Model(make_network(config, num_actions, train.obs.dtype, train.obs.shape[1:]))
  params = init_params(model.net, jax.random.PRNGKey(args.seed), train.obs.shape[1:])
  opt = make_optimizer(config)
  opt_state = opt.init(params)

  def logit(params, o, a, is_train):
    """obs [B, ...], action i32[B] -> the terminal head's logit f32[B] (and the params, BatchNorm moved)."""
    lstm = zero_lstm_state(o.shape[0], model.lstm_dim)
    if not is_train:
      return model.terminal(params, model.dynamics(params, model.represent(params, o), a, lstm)[0]), params
    latent, params = model.call(params, "represent", o, train=True)
    (nxt, _, _), params = model.call(params, "dynamics", latent, a, lstm, train=True)
    out, params = model.call(params, "terminal", nxt, train=True)
    return out, params

  def loss_fn(params, o, a, y):
    out, moved = logit(params, o, a, True)
    return jnp.mean(bce(out, y)), moved

  @jax.jit
  def update(params, opt_state, o, a, y):
    (loss, moved), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, o, a, y)
    updates, opt_state = opt.update(grads, opt_state, params)
    return {**optax.apply_updates(params, updates), **{k: v for k, v in moved.items() if k != "params"}}, opt_state

  @jax.jit
  def predict(params, o):
    """obs [B, ...] -> logits f32[B, A] for every action."""
    return jnp.stack([logit(params, o, jnp.full((o.shape[0],), a, jnp.int32), False)[0] for a in range(num_actions)], 1)

  base = float(np.clip(train.fatal.mean(), 1e-6, 1 - 1e-6))
  loss_constant = float(-np.mean(np.where(test.fatal, np.log(base), np.log1p(-base))))

  def evaluate(params) -> dict:
    logits = np.concatenate([np.asarray(predict(params, test.obs[i : i + 512])) for i in range(0, len(test.obs), 512)])
    loss = float(np.mean(np.asarray(bce(jnp.asarray(logits), jnp.asarray(test.fatal, jnp.float32)))))
    return summary(logits, test.fatal, loss, loss_constant)

  rng = np.random.default_rng(args.seed + 1)  # batches; random play drew from args.seed's stream
  rich = rich_states(train, args.labels)
  if len(rich) == 0:
    ap.error(f"no training state has both a fatal and a safe action (or ended) in {args.steps} steps: raise --steps")
  reports, t1 = [], time.perf_counter()
  for n in range(1, args.updates + 1):
    idx, act, label = batch(train, rich, args.labels, rng, config.batch_size)
    params, opt_state = update(params, opt_state, train.obs[idx], act, label.astype(np.float32))
    if n % args.report_every == 0 or n == args.updates:
      reports.append({"updates": n, **evaluate(params)})
  out = {
    "world": config.world,
    "config": args.config,
    "overrides": args.set,
    "labels": args.labels,
    "commit": commit(),
    "train_states": len(train.obs),
    "train_states_with_both": int(mixed(train.fatal).sum()),
    "train_fatal_share": base,
    "test_states": len(test.obs),
    "collect_s": collect_s,
    "train_s": time.perf_counter() - t1,
    "reports": reports,
  }
  print(json.dumps(out))
  return out


if __name__ == "__main__":
  main()
