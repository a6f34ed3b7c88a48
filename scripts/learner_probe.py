"""Where a run's learning signal goes, measured at one of its checkpoints on its own replay; prints JSON.

- `gradients`: for each loss term (value, policy, value prefix, consistency, each at its configured weight and
  alone), the norm of its gradient in every top-level module of the network, averaged over `--batches`
  learner batches (`per_batch`), and the norm of the gradient averaged over those batches (`mean`: the part
  that points the same way batch after batch; noise averages out of it). A module fed mostly by one term's
  gradient is shaped by that term.
- `search_targets`: on `--samples` replay observations, the policy target that acting's search writes
  (temperature 1, with noise) against the network's prior, under each `--floors` value of `q_range_floor`: the
  KL divergence target || prior, how often the target's argmax is another action than the prior's, and how
  often two searches with different keys agree on it. A target that moves far from the prior while two
  searches disagree is noise the policy is trained to follow. (null for a `search = "none"` run.)

  python scripts/learner_probe.py runs/asterix[/checkpoints/<step>] [--batches 16] [--samples 1024]
    [--floors 0.01,0.1,1]
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from dreamer import agent as agent_lib  # noqa: E402
from dreamer import checkpoint as ckpt_lib  # noqa: E402
from dreamer import config as config_lib  # noqa: E402
from dreamer import learner  # noqa: E402
from dreamer import replay as replay_lib  # noqa: E402
from dreamer import search as search_lib  # noqa: E402
from dreamer.config import Config  # noqa: E402
from dreamer.suites import commit  # noqa: E402

WEIGHTS = {
  "value": "value_loss_weight",
  "policy": "policy_loss_weight",
  "value_prefix": "reward_loss_weight",
  "consistency": "consistency_loss_weight",
}


def load(run: str) -> tuple[Config, agent_lib.Agent, learner.TrainState, replay_lib.ReplayState, int]:
  """A run's config, agent, learner state (online and target parameters) and replay at a checkpoint: `run` is a
  run directory (its newest readable checkpoint) or one of its checkpoints/<step> directories."""
  run_dir, step = ckpt_lib.locate(run)
  saved = agent_lib.load_checkpoint(run_dir, step)
  config = config_lib.from_dict(saved.meta["config"], run)
  agent = agent_lib.Agent(dataclasses.replace(config, devices=1), agent_lib.spec_from_dict(saved.meta["spec"]))
  saved_learner = saved.state["learner"]
  state = saved_learner._replace(params=saved.params)
  return config, agent, jax.device_put(state), jax.device_put(saved.state["replay"]), saved.step


def gradients(
  agent: agent_lib.Agent,
  state: learner.TrainState,
  rb: replay_lib.ReplayState,
  env_step: int,
  *,
  batches: int,
  seed: int,
) -> dict:
  """{module: {term: {"per_batch", "mean"}}}: gradient norms of each loss term alone (at its weight)."""
  config = agent.config
  make_batch = jax.jit(functools.partial(learner.make_batch, model=agent.model, config=config))
  losses = {}
  for term, key in WEIGHTS.items():
    # The optional heads' terms (terminal, observation decoder) are not among the four: zero beside each.
    others = {"terminal_loss_weight": 0.0, "obs_loss_weight": 0.0}
    alone = {k: getattr(config, k) if k == key else 0.0 for k in WEIGHTS.values()}
    alone = dataclasses.replace(config, **others, **alone)
    losses[term] = functools.partial(learner.loss_fn, model=agent.model, config=alone)

  @jax.jit
  def grad_of(params, batch, aug_key):  # one compilation for every term
    return {t: jax.grad(f, has_aux=True)(params, batch, aug_key)[0]["params"] for t, f in losses.items()}

  grads = {term: [] for term in WEIGHTS}
  for i in range(batches):
    key = jax.random.PRNGKey(seed + i)
    batch, _ = make_batch(state, rb, key, jnp.int32(env_step))
    aug_key = jax.random.fold_in(key, 1) if config.augment else None  # as learner.update derives it
    for term, g in jax.device_get(grad_of(state.params, batch, aug_key)).items():
      grads[term].append(g)
  out = {}
  for module in state.params["params"]:
    out[module] = {}
    for term, per in grads.items():
      flat = np.stack([np.concatenate([x.ravel() for x in jax.tree.leaves(g[module])]) for g in per])  # [N, P]
      out[module][term] = {
        "per_batch": float(np.mean(np.linalg.norm(flat, axis=1))),
        "mean": float(np.linalg.norm(flat.mean(0))),
      }
  return out


def search_targets(
  agent: agent_lib.Agent, params, rb: replay_lib.ReplayState, *, floors: list[float], samples: int, seed: int
) -> dict:
  """Acting's policy target against the prior on `samples` replay observations (uniform), per Q-range floor."""
  config = agent.config
  smp = replay_lib.sample(rb, jax.random.PRNGKey(seed), samples, alpha=0.0, beta=1.0)
  window, _ = replay_lib.gather(rb, smp.env, smp.index, 1, stack=config.frame_stack)
  root = search_lib.make_root(agent.model, params, window.obs[:, 0])
  log_prior = jax.nn.log_softmax(root.prior_logits)
  out = {"prior_max_prob": float(jnp.mean(jnp.exp(log_prior).max(-1)))}
  for floor in floors:
    kw = search_lib.settings(dataclasses.replace(config, q_range_floor=floor))
    run = jax.jit(
      lambda k, kw=kw: search_lib.run_search(agent.model, params, k, root, temperature=1.0, noise=True, **kw)
    )
    a, b = run(jax.random.PRNGKey(seed + 1)).policy, run(jax.random.PRNGKey(seed + 2)).policy
    kl = jnp.sum(a * (jnp.log(jnp.maximum(a, 1e-30)) - log_prior), -1)
    out[f"floor={floor:g}"] = {
      "kl_target_prior": float(jnp.mean(kl)),
      "target_max_prob": float(jnp.mean(a.max(-1))),
      "argmax_moved": float(jnp.mean(a.argmax(-1) != log_prior.argmax(-1))),
      "two_searches_agree": float(jnp.mean(a.argmax(-1) == b.argmax(-1))),
    }
  return out


def main(argv: list[str] | None = None) -> dict:
  ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  ap.add_argument("run", help="a run directory (its newest readable checkpoint) or a checkpoints/<step> directory")
  ap.add_argument("--batches", type=int, default=16, help="learner batches the gradients are averaged over")
  ap.add_argument("--samples", type=int, default=1024, help="replay observations searched")
  ap.add_argument("--floors", default="0.01,0.1,0.3,1", help="comma-separated q_range_floor values")
  ap.add_argument("--seed", type=int, default=0)
  args = ap.parse_args(argv)
  try:
    floors = [float(f) for f in args.floors.split(",")]
  except ValueError:
    ap.error(f"--floors {args.floors!r}: give comma-separated numbers >= 0, e.g. 0.01,0.1,1")
  if not floors or min(floors) < 0 or args.batches < 1 or args.samples < 1:
    ap.error("--floors must be numbers >= 0; --batches and --samples must be >= 1")
  try:
    config, agent, state, rb, step = load(args.run)
  except ckpt_lib.CheckpointError as e:
    ap.error(str(e))
  out = {
    "run": args.run,
    "env_steps": step,
    "world": config.world,
    "commit": commit(),
    "gradients": gradients(agent, state, rb, step, batches=args.batches, seed=args.seed),
    # a search=none run's policy learns from the actions taken, not from search targets
    "search_targets": None
    if config.search == "none"
    else search_targets(agent, state.params, rb, floors=floors, samples=args.samples, seed=args.seed),
  }
  print(json.dumps(out, indent=1))
  return out


if __name__ == "__main__":
  main()
