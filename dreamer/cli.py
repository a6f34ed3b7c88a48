"""The `dreamer` command: `dreamer train` and `dreamer eval`. User mistakes print one line, never a traceback."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from dreamer import config as config_lib

DESCRIPTION = """\
dreamer: an EfficientZero-style model-based RL agent in JAX.

  dreamer train --config cartpole --logdir runs/cp --seed 1 --set num_simulations=32
  dreamer eval --checkpoint runs/cp --episodes 32
"""


def _parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(prog="dreamer", description=DESCRIPTION,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

  train = sub.add_parser(
      "train", help="train an agent from a preset or a TOML config file",
      description="Train an agent. Writes metrics.jsonl, config.json and checkpoints/ to the run directory.")
  train.add_argument("--config", required=True, metavar="PRESET_OR_PATH",
                     help=f"a preset name ({', '.join(config_lib.presets())}) or a path to a .toml file")
  train.add_argument("--logdir", metavar="DIR",
                     help="run directory (default: runs/<preset>-seed<N>-<time>); must not hold a run already")
  train.add_argument("--seed", type=int, metavar="N", help="random seed (overrides the config's seed)")
  train.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", dest="overrides",
                     help="override one config key, e.g. --set batch_size=128 (repeatable); values are TOML "
                          "(numbers, true/false, [lists]) or bare strings")
  train.add_argument("--quiet", action="store_true", help="no console progress line (metrics.jsonl still written)")

  ev = sub.add_parser("eval", help="evaluate a checkpoint with search and with the policy network alone",
                      description="Evaluate a checkpoint: prints JSON with the mean return acting with search "
                                  "and acting with the policy network alone.")
  ev.add_argument("--checkpoint", required=True, metavar="DIR",
                  help="a run directory (its newest checkpoint is used) or a checkpoints/<step> directory")
  ev.add_argument("--episodes", type=int, default=32, metavar="N", help="episodes per mode (default: 32)")
  ev.add_argument("--seed", type=int, default=12345, metavar="N", help="seed of the evaluation worlds")
  return parser


def _train(args: argparse.Namespace) -> int:
  from dreamer import train as train_lib  # heavy imports only when needed

  config = config_lib.load(args.config, args.overrides, **({"seed": args.seed} if args.seed is not None else {}))
  if args.logdir is None:
    stem = Path(args.config).stem
    args.logdir = f"runs/{stem}-seed{config.seed}-{time.strftime('%Y%m%d-%H%M%S')}"
  logdir = Path(args.logdir)
  if (logdir / "metrics.jsonl").exists():
    raise config_lib.ConfigError(f"--logdir {str(logdir)!r} already holds a run (metrics.jsonl); "
                                 f"choose a new directory")
  import worlds

  try:  # a bad world id is a user mistake: report it before any work starts
    worlds.make(config.world, num_envs=1, seed=0).close()
  except ValueError as e:
    raise config_lib.ConfigError(f"config key 'world': {e}") from None
  summary = train_lib.train(config, logdir, console=not args.quiet)
  print(json.dumps({"logdir": str(logdir), **summary}))
  return 0


def _eval(args: argparse.Namespace) -> int:
  import jax
  import numpy as np

  import worlds
  from dreamer import actor as actor_lib, checkpoint
  from dreamer.networks import Model, init_params, make_network

  if args.episodes < 1:
    raise config_lib.ConfigError(f"--episodes must be >= 1, got {args.episodes}")
  path = checkpoint.latest(args.checkpoint)
  meta = checkpoint.read_meta(path)
  config = config_lib.from_dict(meta["config"], str(path / "meta.json"))
  try:
    world = worlds.make(config.world, num_envs=args.episodes, seed=args.seed)
  except ValueError as e:
    raise checkpoint.CheckpointError(f"checkpoint {str(path)!r}: {e}") from None
  spec = world.spec
  saved = meta["spec"]
  if list(spec.obs_shape) != saved["obs_shape"] or spec.num_actions != saved["num_actions"]:
    raise checkpoint.CheckpointError(
        f"checkpoint {str(path)!r} was trained on observations {saved['obs_shape']} with {saved['num_actions']} "
        f"actions, but {config.world!r} now has {list(spec.obs_shape)} and {spec.num_actions}")
  net = make_network(config, spec.num_actions)
  abstract = jax.eval_shape(lambda: init_params(net, jax.random.PRNGKey(0), spec.obs_shape))
  params = checkpoint.load_params(path, abstract)
  model = Model(net)
  res = actor_lib.evaluate(world, params, actor_lib.make_act(model, config), actor_lib.make_policy_act(model),
                           jax.random.PRNGKey(args.seed), seed=args.seed, max_steps=config.eval_max_steps)
  out = {"checkpoint": str(path), "world": config.world, "episodes": args.episodes}
  for name, r in res.items():
    out[f"{name}_return"] = float(np.mean(r.returns))
    out[f"{name}_return_std"] = float(np.std(r.returns))
  print(json.dumps(out))
  return 0


def main(argv: list[str] | None = None) -> int:
  args = _parser().parse_args(argv)
  from dreamer.checkpoint import CheckpointError

  try:
    return {"train": _train, "eval": _eval}[args.command](args)
  except (config_lib.ConfigError, CheckpointError) as e:
    print(f"dreamer: error: {e}", file=sys.stderr)
    return 2


if __name__ == "__main__":
  sys.exit(main())
