"""Does a checkpoint see a death coming one step ahead? MinAtar games that end on a collision; prints JSON.

A game such as Asterix ends the moment the player meets an enemy, and some actions lead there at once; Freeway's
collision (a car on the chicken's square) sends the chicken back to the bottom instead, which counts as its death. The
checkpoint plays one game per env with greedy search (as `dreamer eval`); at every step each of the 6 actions
is tried on a copy of the game (the package's `Environment.act` with sticky actions off, so the copy draws the
same random numbers as the real step), which marks it fatal (the copy's game ended) or safe. Over the steps with
both kinds it reports:

  fatal_share            the fraction of actions that are fatal (what a uniform policy would take);
  search_took_fatal, prior_argmax_fatal, argmax_q_fatal   how often search's action, the prior's argmax and
                         the one-step Q's argmax (Q(a) = predicted reward + search's discount * value after a)
                         were fatal;
  prior_mass_on_fatal    the prior's probability on the fatal actions;
  q_fatal, q_safe        mean one-step Q of fatal and of safe actions;
  auc_q                  P(Q(safe) > Q(fatal)) over the (safe, fatal) pairs of actions at the same step (0.5:
                         the model cannot tell which move kills);
  p_terminal_fatal, p_terminal_safe, auc_terminal   the same for the terminal head's probability, where the
                         network has one (`terminal_loss_weight`).

  python scripts/death_probe.py RUN_OR_CHECKPOINT [--games 16] [--seed 7]
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import jax  # noqa: E402
import numpy as np  # noqa: E402
import value_probe  # noqa: E402  (scripts/, beside this file)

from dreamer import actor  # noqa: E402
from dreamer import agent as agent_lib  # noqa: E402
from dreamer.networks import Model  # noqa: E402
from dreamer.suites import commit  # noqa: E402


def fatal_actions(env, actions) -> list[bool]:
  """For a running MinAtar game (the package's `Environment`): whether each of `actions` (the package's action
  ids) ends the game at once, or in Freeway, which never ends on a collision, sends the chicken back to the
  bottom row (row 9) without a crossing: Freeway's loss, the game's own rule (a car on the chicken's square)."""
  out = []
  for a in actions:
    trial = copy.deepcopy(env)
    trial.sticky_action_prob = 0.0  # still draws its number, so the game's own draws match the real step's
    moved = _freeway_row_after(trial.env, int(a)) if env.env_name == "freeway" else None
    reward, done = trial.act(int(a))
    # A crossing (reward 1) restarts at the bottom too; a step down from row 8 lands there by itself.
    sent_back = moved is not None and reward == 0 and trial.env.pos == 9 and moved != 9
    out.append(bool(done or sent_back))
  return out


def _freeway_row_after(game, a: int) -> int:
  """The chicken's row after action `a` (the package's id) if no car met it: the game's own move rule."""
  if game.move_timer == 0 and game.action_map[a] == "u":
    return max(0, game.pos - 1)
  if game.move_timer == 0 and game.action_map[a] == "d":
    return min(9, game.pos + 1)
  return game.pos


def auc(rows: list[tuple[list[float], list[float]]]) -> float | None:
  """P(pos > neg) + P(pos == neg) / 2 over the (pos, neg) pairs within each row (pos, neg); None without pairs."""
  wins = pairs = 0.0
  for pos, neg in rows:
    p, n = np.asarray(pos, np.float64)[:, None], np.asarray(neg, np.float64)[None]
    wins += (p > n).sum() + 0.5 * (p == n).sum()
    pairs += p.size * n.size
  return float(wins / pairs) if pairs else None


def play(acting: agent_lib.Acting, *, seed: int, max_steps: int) -> list[dict]:
  """Per step of every running game with both fatal and safe actions: fatal bool[A], q, prior and p(terminal)
  f32[A] (None without a head), and search's action."""
  config, model = acting.config, Model(acting.net)
  act = actor.make_act(model, config)
  one_step = value_probe.one_step(model, config)

  @jax.jit
  def root(params, obs):
    _, prior, _, q, child = one_step(params, obs)
    end = jax.vmap(lambda z: jax.nn.sigmoid(model.terminal(params, z)))(child).T if model.has_terminal else q
    return prior, q, end

  keys = iter(jax.random.split(jax.random.PRNGKey(seed), max_steps))
  rows = []
  alive = np.ones(acting.world.num_envs, bool)  # the world restarts ended games; those no longer count

  def choose(obs):
    action = np.asarray(act(acting.params, obs, next(keys), 0.0).action)
    prior, q, end = map(np.asarray, root(acting.params, obs))
    for i, env in enumerate(acting.world._envs):
      if not alive[i]:
        continue
      fatal = fatal_actions(env, acting.world._actions)
      if any(fatal) and not all(fatal):
        p_end = end[i] if model.has_terminal else None
        rows.append({"fatal": fatal, "q": q[i], "prior": prior[i], "p_end": p_end, "action": int(action[i])})
    return action

  def after(action, step, running):
    alive[:] = running & ~(step.terminated | step.truncated)

  actor.run_episodes(acting.world, choose, seed=seed, max_steps=max_steps, stack=config.frame_stack, after=after)
  return rows


def summarise(rows: list[dict]) -> dict:
  """The JSON fields of the module docstring."""

  def split(key):
    """Per step: ([key of the fatal actions], [key of the safe ones])."""
    out = []
    for r in rows:
      out.append(([v for v, f in zip(r[key], r["fatal"]) if f], [v for v, f in zip(r[key], r["fatal"]) if not f]))
    return out

  def pooled(pairs, side):
    return [float(v) for p in pairs for v in p[side]]

  mean = lambda xs: float(np.mean(xs)) if xs else None  # noqa: E731
  q_pairs = split("q")
  out = {
    "steps": len(rows),
    "fatal_share": mean([np.mean(r["fatal"]) for r in rows]),
    "search_took_fatal": mean([r["fatal"][r["action"]] for r in rows]),
    "prior_argmax_fatal": mean([r["fatal"][int(np.argmax(r["prior"]))] for r in rows]),
    "argmax_q_fatal": mean([r["fatal"][int(np.argmax(r["q"]))] for r in rows]),
    "prior_mass_on_fatal": mean([float(np.dot(r["fatal"], r["prior"])) for r in rows]),
    "q_fatal": mean(pooled(q_pairs, 0)),
    "q_safe": mean(pooled(q_pairs, 1)),
    "auc_q": auc([(safe, fatal) for fatal, safe in q_pairs]),
  }
  if rows and rows[0]["p_end"] is not None:
    end_pairs = split("p_end")
    out |= {"p_terminal_fatal": mean(pooled(end_pairs, 0)), "p_terminal_safe": mean(pooled(end_pairs, 1))}
    out["auc_terminal"] = auc(end_pairs)
  return out


def main(argv: list[str] | None = None) -> dict:
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("checkpoint", help="a run directory (its newest checkpoint) or one checkpoints/<step>")
  ap.add_argument("--games", type=int, default=16, help="games played, one per env (default 16)")
  ap.add_argument("--seed", type=int, default=7, help="the worlds' and search's seed (default 7)")
  args = ap.parse_args(argv)
  acting = agent_lib.load_acting(args.checkpoint, None, num_envs=args.games, seed=args.seed, train=False)
  try:
    if not acting.world_id.startswith("minatar:"):
      ap.error(f"the probe copies MinAtar games; {acting.world_id!r} is not a minatar: world")
    rows = play(acting, seed=args.seed, max_steps=acting.config.eval_max_steps)
  finally:
    acting.world.close()
  out = {"checkpoint": acting.path, "world": acting.world_id, "seed": args.seed, "commit": commit()}
  out |= summarise(rows)
  print(json.dumps(out))
  return out


if __name__ == "__main__":
  main()
