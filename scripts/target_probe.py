"""Does search's policy target sharpen a checkpoint's prior where Q says nothing? Prints JSON.

A policy trained on search's targets settles where the prior equals the target's mean over acting's Gumbel
noise. If that mean favours the prior's favourite more than the prior does on the states the agent visits,
every update narrows the policy further, whatever the game pays. One cause needs no wrong Q ranking: when
search visits only some actions (fewer simulations than actions), the unvisited ones are completed with mctx's
mixed value, which mixes in the root's own value; a model that predicts a reward bias b on every step then
scores each visited action b against about b * n / (n + 1) for the others (n visits), min-max normalisation
stretches that gap, and Gumbel's top-k visits actions in proportion to the prior, so the favourite gains
whenever b > 0. `tests/test_target_probe.py` shows it on a constant-reward model.

The checkpoint acts as its training did at the checkpoint's env step, in training worlds (Atari: a lost life
ends the episode and the game goes on): with search at the temperature schedule's value for that step, or the
policy network sampled at 1 where training acts with the policy alone (`actor.temperature`). Every `--every`
steps every env's state is kept, until there are `--states`. Each variant (the checkpoint's search settings,
changed by `--variant KEY=V[,KEY=V...]`, keys as `dreamer eval --search-set`; "as trained" is the checkpoint's
own) searches them `--noise` times at that same temperature (Gumbel noise scale) and reports under `variants`,
over the states:

  prior_entropy, target_entropy      mean entropy (nats) of the prior and of the mean target over the noise
  prior_top, target_top              mean probability the prior and the mean target give the prior's argmax
  sharper                            fraction of states whose mean target gives the prior's argmax more than the
                                     prior does
  kl_target_prior                    mean KL(mean target || prior)

and, once for the states, root_reward: the model's mean predicted one-step reward over every action (the bias b
where the game pays nothing), and root_q_spread: the mean over states of max_a Q(a) - min_a Q(a) one step deep.

  python scripts/target_probe.py RUN_OR_CHECKPOINT [--states 256] [--every 16] [--games 8] [--noise 16]
      [--seed 7] [--variant num_simulations=16,max_considered_actions=16 ...]
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
from value_probe import entropy, one_step  # noqa: E402  (scripts/, beside this file)

from dreamer import actor, dream_ratio, frames  # noqa: E402
from dreamer import agent as agent_lib  # noqa: E402
from dreamer import config as config_lib  # noqa: E402
from dreamer import search as search_lib  # noqa: E402
from dreamer.cli import _search_settings  # noqa: E402
from dreamer.networks import Model  # noqa: E402
from dreamer.suites import commit  # noqa: E402


def collect(acting: agent_lib.Acting, *, seed: int, states: int, every: int, temperature: float) -> np.ndarray:
  """Observations [states, ...]: every env's stacked observation after each `every` steps of acting as training
  does (search at `temperature`, or the policy alone where training acts with it), games restarting as they end."""
  config = acting.config
  policy_only = not dream_ratio.trains_with_search(config)
  act = actor.make_act(Model(acting.net), actor.policy_only(config) if policy_only else config)
  key, stack = jax.random.fold_in(jax.random.PRNGKey(seed), 0), config.frame_stack
  obs, kept = frames.start(acting.world.reset(seed), stack), []
  for t in range(every * -(-states // acting.world.num_envs)):
    key, k = jax.random.split(key)
    step = acting.world.step(np.asarray(act(acting.params, obs, k, temperature).action))
    obs = frames.push(obs, step.obs, step.terminated | step.truncated, stack)
    if (t + 1) % every == 0:
      kept.append(obs)
  return np.concatenate(kept)[:states]


def target_stats(prior: np.ndarray, targets: np.ndarray) -> dict:
  """The variant's fields from the prior f[N, A] and its targets f[M, N, A] under M noise draws."""
  mean = targets.mean(0)
  top = prior.argmax(-1)[:, None]
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


def search_targets(model, params, config, obs: np.ndarray, *, temperature: float, noise: int, seed: int) -> np.ndarray:
  """Search's policy targets f32[noise, N, A] at `temperature` (Gumbel noise scale), one key per noise draw."""
  settings = search_lib.settings(config)

  @jax.jit
  def run(params, obs, key):
    root = search_lib.make_root(model, params, obs)
    return search_lib.run_search(model, params, key, root, temperature=temperature, noise=temperature > 0, **settings)

  keys = jax.random.split(jax.random.fold_in(jax.random.PRNGKey(seed), 1), noise)
  return np.stack([np.asarray(run(params, jnp.asarray(obs), k).policy) for k in keys])


def main(argv: list[str] | None = None) -> dict:
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("checkpoint", help="a run directory (its newest checkpoint) or one checkpoints/<step>")
  ap.add_argument("--states", type=int, default=256, help="states searched (default 256)")
  ap.add_argument("--every", type=int, default=16, help="keep every env's state every this many steps (default 16)")
  ap.add_argument("--games", type=int, default=8, help="envs playing at once (default 8)")
  ap.add_argument("--noise", type=int, default=16, help="Gumbel noise draws per state (default 16)")
  ap.add_argument("--seed", type=int, default=7, help="the worlds' and search's seed (default 7)")
  ap.add_argument("--variant", action="append", default=[], help="KEY=V[,KEY=V...]: search settings to compare")
  args = ap.parse_args(argv)
  for name in ("states", "every", "games", "noise"):
    if getattr(args, name) < 1:
      ap.error(f"--{name} must be at least 1, got {getattr(args, name)}")
  variants = {"as trained": {}} | {v: _search_settings(v.split(",")) for v in args.variant}
  if any(changes.get("search", "gumbel") == "none" for changes in variants.values()):
    ap.error("--variant search=none: the probe compares search's targets with the prior; keep a search")
  acting = agent_lib.load_acting(args.checkpoint, None, num_envs=args.games, seed=args.seed, train=True)
  try:
    configs = {name: dataclasses.replace(acting.config, **changes) for name, changes in variants.items()}
    if acting.config.search == "none":
      raise config_lib.ConfigError(f"{acting.path!r} was trained with search 'none': it has no search to probe")
    step = int(Path(acting.path).name)
    temperature = actor.temperature(acting.config, step)
    obs = collect(acting, seed=args.seed, states=args.states, every=args.every, temperature=temperature)
  finally:
    acting.world.close()
  model = Model(acting.net)
  _, prior, reward, q, _ = one_step(model, acting.config)(acting.params, jnp.asarray(obs))
  prior, reward, q = np.asarray(prior), np.asarray(reward), np.asarray(q)
  out = {"checkpoint": acting.path, "world": acting.world_id, "env_step": step, "temperature": temperature}
  out |= {"seed": args.seed, "states": len(obs), "commit": commit()}
  out |= {"root_reward": float(reward.mean()), "root_q_spread": float((q.max(1) - q.min(1)).mean())}
  out["variants"] = {}
  for name, config in configs.items():
    targets = search_targets(
      model, acting.params, config, obs, temperature=temperature, noise=args.noise, seed=args.seed
    )
    out["variants"][name] = target_stats(prior, targets)
  print(json.dumps(out))
  return out


if __name__ == "__main__":
  main()
