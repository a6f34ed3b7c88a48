"""Does search's policy target sharpen a checkpoint's prior where Q says nothing? Prints JSON.

A policy trained on search's targets settles where the prior equals the target's mean over acting's Gumbel
noise. If that mean is sharper than the prior on the states the agent visits, every update narrows the policy
further, whatever the game pays. One cause needs no wrong Q ranking: a model that predicts a reward bias b on
every step makes an action's Q grow with the depth search explores under it (each deeper visit backs up one
more b), and sequential halving explores the prior's favourites deepest, so min-max normalisation turns b into
a preference for what the prior already likes. `tests/test_target_probe.py` shows it on a constant-reward model.

The checkpoint plays one game per env, sampling its policy network at temperature 1 (training's acting before
the schedule cools), round after round of games; every `--every` steps the states of the running games are
kept, until there are `--states` (or 100 rounds have run). Each
variant (the checkpoint's search settings, changed by `--variant KEY=V[,KEY=V...]`, keys as `dreamer eval
--search-set`; "as trained" is the checkpoint's own) searches them `--noise` times at temperature 1 (Gumbel
noise scale 1, as training acts) and reports under `variants`, over the states:

  prior_entropy, target_entropy      mean entropy (nats) of the prior and of the mean target over the noise
  prior_top, target_top              mean probability the prior and the mean target give the prior's argmax
  sharper                            fraction of states whose mean target gives the prior's argmax more than the
                                     prior does
  kl_target_prior                    mean KL(mean target || prior)

and, once for the states, root_reward: the model's mean predicted one-step reward over every action (the bias b
where the game pays nothing), and root_q_spread: the mean over states of max_a Q(a) - min_a Q(a) one step deep.

  python scripts/target_probe.py RUN_OR_CHECKPOINT [--states 256] [--every 8] [--noise 16] [--seed 7]
      [--variant num_simulations=16,max_considered_actions=16 ...]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from value_probe import one_step  # noqa: E402  (scripts/, beside this file)

from dreamer import actor  # noqa: E402
from dreamer import agent as agent_lib  # noqa: E402
from dreamer import search as search_lib  # noqa: E402
from dreamer.cli import _search_settings  # noqa: E402
from dreamer.networks import Model  # noqa: E402
from dreamer.suites import commit  # noqa: E402

MAX_ROUNDS = 100  # rounds of games `collect` plays at most


def collect(acting: agent_lib.Acting, *, seed: int, states: int, every: int) -> np.ndarray:
  """Observations [states, ...] of the running games every `every` steps, the policy sampled at 1; rounds of
  games (world seeds seed, seed + 1, ...) follow each other until there are enough (at most MAX_ROUNDS)."""
  config = acting.config
  key = jax.random.PRNGKey(seed)
  policy = actor.make_sampled_policy_act(Model(acting.net), config, key, 1.0, MAX_ROUNDS * config.eval_max_steps)
  kept, count = [], [0]

  def choose(obs):
    if count[0] % every == 0:
      kept.append(obs[running])
      if sum(len(k) for k in kept) >= states:
        raise _Enough
    count[0] += 1
    return policy(acting.params, obs)

  def after(action, step, alive):
    running[:] = alive & ~(step.terminated | step.truncated)

  steps, stack = config.eval_max_steps, config.frame_stack
  for r in range(MAX_ROUNDS):
    running = np.ones(acting.world.num_envs, bool)
    try:
      actor.run_episodes(acting.world, choose, seed=seed + r, max_steps=steps, stack=stack, after=after)
    except _Enough:
      break
  return np.concatenate(kept)[:states]


class _Enough(Exception):
  """Raised by `collect`'s policy once it has its states: the games need not run on."""


def target_stats(prior: np.ndarray, targets: np.ndarray) -> dict:
  """The variant's fields from the prior f[N, A] and its targets f[M, N, A] under M noise draws."""
  mean = targets.mean(0)
  top = prior.argmax(-1)[:, None]
  entropy = lambda p: -(p * np.log(np.maximum(p, 1e-12))).sum(-1)  # noqa: E731
  prior_top, target_top = np.take_along_axis(prior, top, 1)[:, 0], np.take_along_axis(mean, top, 1)[:, 0]
  kl = (mean * (np.log(np.maximum(mean, 1e-12)) - np.log(np.maximum(prior, 1e-12)))).sum(-1)
  return {
    "prior_entropy": float(entropy(prior).mean()),
    "target_entropy": float(entropy(mean).mean()),
    "prior_top": float(prior_top.mean()),
    "target_top": float(target_top.mean()),
    "sharper": float((target_top > prior_top + 1e-6).mean()),
    "kl_target_prior": float(kl.mean()),
  }


def search_targets(model, params, config, obs: np.ndarray, *, noise: int, seed: int) -> np.ndarray:
  """Search's policy targets f32[noise, N, A] at temperature 1, one key per noise draw."""
  root = search_lib.make_root(model, params, jnp.asarray(obs))
  settings = search_lib.settings(config)
  run = jax.jit(lambda k: search_lib.run_search(model, params, k, root, temperature=1.0, noise=True, **settings).policy)
  return np.stack([np.asarray(run(k)) for k in jax.random.split(jax.random.PRNGKey(seed), noise)])


def main(argv: list[str] | None = None) -> dict:
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("checkpoint", help="a run directory (its newest checkpoint) or one checkpoints/<step>")
  ap.add_argument("--states", type=int, default=256, help="states searched (default 256)")
  ap.add_argument("--every", type=int, default=8, help="keep the running games' states every this many steps")
  ap.add_argument("--games", type=int, default=8, help="games played, one per env (default 8)")
  ap.add_argument("--noise", type=int, default=16, help="Gumbel noise draws per state (default 16)")
  ap.add_argument("--seed", type=int, default=7, help="the worlds' and search's seed (default 7)")
  ap.add_argument("--variant", action="append", default=[], help="KEY=V[,KEY=V...]: search settings to compare")
  args = ap.parse_args(argv)
  for name in ("states", "every", "games", "noise"):
    if getattr(args, name) < 1:
      ap.error(f"--{name} must be at least 1, got {getattr(args, name)}")
  variants = {"as trained": {}} | {v: _search_settings(v.split(",")) for v in args.variant}
  acting = agent_lib.load_acting(args.checkpoint, None, num_envs=args.games, seed=args.seed, train=True)
  try:
    obs = collect(acting, seed=args.seed, states=args.states, every=args.every)
  finally:
    acting.world.close()
  model = Model(acting.net)
  _, prior, reward, q, _ = map(np.asarray, one_step(model, acting.config)(acting.params, jnp.asarray(obs)))
  out = {"checkpoint": acting.path, "world": acting.world_id, "seed": args.seed, "states": len(obs), "commit": commit()}
  out |= {"root_reward": float(reward.mean()), "root_q_spread": float((q.max(1) - q.min(1)).mean())}
  out["variants"] = {}
  for name, changes in variants.items():
    config = dataclasses.replace(acting.config, **changes)
    targets = search_targets(model, acting.params, config, obs, noise=args.noise, seed=args.seed)
    out["variants"][name] = target_stats(prior, targets)
  print(json.dumps(out))
  return out


if __name__ == "__main__":
  main()
