"""Does a checkpoint's value know its game? Plays evaluation games with search and prints JSON.

A search can only improve on the prior where the value (and the model's value prefix) ranks actions right, so
when a game does not learn, this separates "the value has not learned the game" from "search spoils a good
value". The checkpoint plays one game per env with search, greedy and without noise (as `dreamer eval`), and
records at every step the network's root value, its prior and the search's policy and action. It reports:

  value_corr            correlation over all steps of the root value with the discounted return-to-go that
                        followed (the checkpoint's discount; a game cut at the step limit counts what it got);
  value_mean, return_to_go_mean
  value_before_end      the mean root value k steps before each game's end (k = 1, 2, 3, 5, 10, 20; k = 1 is the
                        step whose action ended the game), over the games that ended (terminated) within the
                        step limit, counted in ended_games: a value that foresees the end falls towards it
                        (Breakout's losing the ball);
  prior_entropy, search_entropy   mean entropy (nats) of the prior and of the search's policy;
  search_is_prior_argmax          fraction of steps where search acts as the prior's argmax would;
  q_spread, q_spread_below_floor  the mean over steps of the root's one-step Q spread, max_a Q(a) - min_a Q(a)
                        with Q(a) = predicted reward + discount * value after a, over every action (what a
                        depth-1 search compares), and the fraction of steps where it is under 0.01 (EfficientZero's
                        floor on the range search normalises by: below it, min-max normalisation stretches the
                        spread to a full preference);
  reward_pred_by_sign   the model's predicted reward for the action taken, averaged over the steps whose real
                        reward was negative / zero / positive (with their counts): does the model foresee the
                        rewards that came (Boxing's being hit is a negative reward).

Evaluation worlds give true scores: on Atari (unclipped scores, no life-loss endings) the value was trained on
other returns than these, so value_mean against return_to_go_mean compares like with like only where training
and evaluation rewards agree (MinAtar, classic control).

  python scripts/value_probe.py RUN_OR_CHECKPOINT [--world ID] [--games 16] [--seed 7] [--max-steps N]
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from dreamer import actor  # noqa: E402
from dreamer import agent as agent_lib  # noqa: E402
from dreamer import search as search_lib  # noqa: E402
from dreamer.networks import Model  # noqa: E402
from dreamer.suites import commit  # noqa: E402

BEFORE_END = (1, 2, 3, 5, 10, 20)


def returns_to_go(rewards: np.ndarray, alive: np.ndarray, discount: float) -> np.ndarray:
  """f64[T, B] discounted sum of each step's reward and its game's later rewards. rewards f32[T, B]: reward of
  the step taken at t; alive bool[T, B]: env b's game was running at step t (one game per env, so alive is a
  prefix of each column). Zero where not alive."""
  out = np.zeros(rewards.shape, np.float64)
  acc = np.zeros(rewards.shape[1], np.float64)
  for t in range(rewards.shape[0] - 1, -1, -1):
    acc = np.where(alive[t], rewards[t] + discount * acc, 0.0)
    out[t] = acc
  return out


def entropy(p: np.ndarray) -> np.ndarray:
  """Entropy (nats) of distributions p[..., A] over their last axis."""
  return -(p * np.log(np.maximum(p, 1e-12))).sum(-1)


def one_step(model: Model, config) -> Callable:
  """A jitted (params, obs [B, ...]) -> (root value f32[B], prior f32[B, A], one-step reward f32[B, A], Q f32[B, A],
  the child latents [A, B, ...]): every action's model step from the root, as a depth-1 search sees it, with
  Q(a) = predicted reward + search's discount (a terminal head's included) * value after a."""
  step = search_lib.make_recurrent_fn(model, discount=config.discount, horizon=config.value_prefix_horizon)

  @jax.jit
  def root(params, obs):
    r = search_lib.make_root(model, params, obs)
    actions = jnp.arange(r.prior_logits.shape[-1], dtype=jnp.int32)
    out, child = jax.vmap(lambda a: step(params, None, jnp.full_like(r.embedding.depth, a), r.embedding))(actions)
    reward, q = out.reward.T, (out.reward + out.discount * out.value).T  # [A, B] -> [B, A]
    return r.value, jax.nn.softmax(r.prior_logits), reward, q, child.latent

  return root


def play(acting: agent_lib.Acting, *, seed: int, max_steps: int) -> dict[str, np.ndarray]:
  """One game per env with greedy search, `dreamer eval`'s games (`actor.run_episodes`, the same keys); per
  step [T, B] arrays: value, prior and search entropies, whether search took the prior's argmax, the root's
  one-step Q spread, the predicted reward of the action taken, reward, alive, and ended (the game terminated at
  this step)."""
  config = acting.config
  model = Model(acting.net)
  act = actor.make_act(model, config)
  root = one_step(model, config)

  keys = iter(jax.random.split(jax.random.PRNGKey(seed), max_steps))
  names = ("value", "prior_entropy", "search_entropy", "agree", "q_spread", "reward_pred", "reward", "alive", "ended")
  rows = {k: [] for k in names}

  def choose(obs):
    out = act(acting.params, obs, next(keys), 0.0)
    value, prior, reward, q = map(np.asarray, root(acting.params, obs)[:4])
    action, policy = np.asarray(out.action), np.asarray(out.policy)
    taken = np.take_along_axis(reward, action[:, None], axis=1)[:, 0]
    fields = (("value", value), ("prior_entropy", entropy(prior)), ("search_entropy", entropy(policy)))
    for k, v in fields + (("q_spread", q.max(1) - q.min(1)), ("reward_pred", taken)):
      rows[k].append(np.asarray(v, np.float64))
    rows["agree"].append(action == prior.argmax(-1))
    return action

  def after(action, step, running):
    rows["reward"].append(np.where(running, step.reward, 0.0))
    rows["alive"].append(running)
    rows["ended"].append(running & step.terminated)

  actor.run_episodes(acting.world, choose, seed=seed, max_steps=max_steps, stack=config.frame_stack, after=after)
  return {k: np.stack(v) for k, v in rows.items()}


def summarise(rec: dict[str, np.ndarray], discount: float) -> dict:
  """The JSON fields of the module docstring from `play`'s record: [T, B] arrays value, prior_entropy,
  search_entropy, q_spread, reward_pred (f64), agree, alive, ended (bool) and reward."""
  alive = rec["alive"]
  togo = returns_to_go(rec["reward"], alive, discount)
  value, lengths, ended = rec["value"][alive], alive.sum(0), rec["ended"].any(0)
  before = {}
  for k in BEFORE_END:
    vs = [rec["value"][n - k, b] for b, n in enumerate(lengths) if ended[b] and n >= k]
    before[str(k)] = float(np.mean(vs)) if vs else None
  corr = np.corrcoef(value, togo[alive])[0, 1] if value.std() > 0 and togo[alive].std() > 0 else None
  return {
    "games": int(alive.shape[1]),
    "return_mean": float(rec["reward"].sum(0).mean()),
    "length_mean": float(lengths.mean()),
    "ended_games": int(ended.sum()),
    "value_corr": None if corr is None else float(corr),
    "value_mean": float(value.mean()),
    "return_to_go_mean": float(togo[alive].mean()),
    "value_before_end": before,
    "prior_entropy": float(rec["prior_entropy"][alive].mean()),
    "search_entropy": float(rec["search_entropy"][alive].mean()),
    "search_is_prior_argmax": float(rec["agree"][alive].mean()),
    "q_spread": float(rec["q_spread"][alive].mean()),
    "q_spread_below_floor": float((rec["q_spread"][alive] < 0.01).mean()),
    "reward_pred_by_sign": _by_sign(rec["reward_pred"][alive], rec["reward"][alive]),
  }


def _by_sign(pred: np.ndarray, real: np.ndarray) -> dict:
  """The mean prediction and count over the steps whose real reward is negative, zero, positive."""
  out = {}
  for name, mask in (("negative", real < 0), ("zero", real == 0), ("positive", real > 0)):
    out[name] = {"count": int(mask.sum()), "mean": float(pred[mask].mean()) if mask.any() else None}
  return out


def main(argv: list[str] | None = None) -> dict:
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("checkpoint", help="a run directory (its newest checkpoint) or one checkpoints/<step>")
  ap.add_argument("--world", default=None, help="world id to play (default: the checkpoint's)")
  ap.add_argument("--games", type=int, default=16, help="games played, one per env (default 16)")
  ap.add_argument("--seed", type=int, default=7, help="the worlds' and search's seed (default 7)")
  ap.add_argument("--max-steps", type=int, default=None, help="steps per game (default: eval_max_steps)")
  args = ap.parse_args(argv)
  if args.games < 2:
    ap.error(f"--games must be at least 2 (a correlation needs several games), got {args.games}")
  acting = agent_lib.load_acting(args.checkpoint, args.world, num_envs=args.games, seed=args.seed, train=False)
  try:
    max_steps = args.max_steps or acting.config.eval_max_steps
    rec = play(acting, seed=args.seed, max_steps=max_steps)
  finally:
    acting.world.close()
  out = {"checkpoint": acting.path, "world": acting.world_id, "seed": args.seed, "commit": commit()}
  out |= summarise(rec, acting.config.discount)
  print(json.dumps(out))
  return out


if __name__ == "__main__":
  main()
