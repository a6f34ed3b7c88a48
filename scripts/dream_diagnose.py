"""Why did a dream job's student search worse than its teacher? Prints JSON.

Adaptation (`adapt_train = "model"`) changes only the world model, and distillation (`train = "heads"` or
`"policy"`) only the prediction function: checkpoint, teacher and student read the same latent from an
observation. So the student's search differs from the checkpoint's only through the world model it imagines
with, the prior it starts from and the values it reads. This script evaluates search with pairings of these
(PAIRINGS) on the job's worlds, on fresh episodes, and measures on the job's recorded states: the priors'
entropies, how far the student's values moved from the teacher's, and how often the two searches choose
different actions. A pairing whose search return falls with one factor alone names the cause.

  python scripts/dream_diagnose.py --job runs/e2e/dream/seed0 --episodes 100 --eval-seed 70000
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from dreamer import actor as actor_lib  # noqa: E402
from dreamer import distil as distil_lib  # noqa: E402
from dreamer import dream as dream_lib  # noqa: E402
from dreamer import stats  # noqa: E402
from dreamer.networks import Model  # noqa: E402
from dreamer.suites import commit  # noqa: E402
from dreamer.support import logits_to_scalar  # noqa: E402

# (prior from, values and world model from). The teacher is the checkpoint with the adapted world model; the
# student is the teacher with distilled prediction heads; 'student heads' puts those heads on the checkpoint's
# own world model (what distillation did, without adaptation).
PAIRINGS = (
  ("checkpoint", "checkpoint"),
  ("teacher", "teacher"),
  ("teacher", "student"),
  ("student", "teacher"),
  ("student", "student"),
  ("student heads", "student heads"),
  ("student heads", "checkpoint"),
)


class Paired(NamedTuple):
  """A network whose prior comes from params['prior'] and everything else (representation, world model,
  values) from params['value']: exact when the two share representation and dynamics, as a student
  distilled with train 'heads' or 'policy' and its teacher do."""

  model: Model
  prior_scale: float = 1.0  # multiplies the prior logits: < 1 flattens the prior, argmax unchanged

  def represent(self, params: dict, obs: jax.Array) -> jax.Array:
    return self.model.represent(params["value"], obs)

  def dynamics(self, params: dict, latent: jax.Array, action: jax.Array, lstm: Any):
    return self.model.dynamics(params["value"], latent, action, lstm)

  def predict(self, params: dict, latent: jax.Array):
    logits, _ = self.model.predict(params["prior"], latent)
    logits = logits * self.prior_scale
    _, value_logits = self.model.predict(params["value"], latent)
    return logits, value_logits

  def search_predict(self, params: dict, latent: jax.Array):
    logits, _ = self.model.search_predict(params["prior"], latent)
    _, value_logits = self.model.search_predict(params["value"], latent)
    return logits * self.prior_scale, value_logits

  def terminal(self, params: dict, latent: jax.Array) -> jax.Array:
    return self.model.terminal(params["value"], latent)

  @property
  def has_terminal(self) -> bool:
    return self.model.has_terminal

  @property
  def lstm_dim(self) -> int:
    return self.model.lstm_dim


def same_representation(*trees) -> bool:
  """True where the trees differ only in the world model and the prediction function (what adaptation and
  distillation change), so that they read the same latent from an observation."""
  changed = distil_lib.MODEL_PARTS + distil_lib.PREDICTION_PARTS
  mask = distil_lib.part_mask(trees[0], changed)
  return all(
    all(jax.tree.leaves(jax.tree.map(lambda m, a, b: bool(m) or bool(jnp.array_equal(a, b)), mask, trees[0], t)))
    for t in trees[1:]
  )


def episodes_of(job: dream_lib.Job, world_id: str, choose, *, episodes: int, seed: int) -> dict[str, Any]:
  """summary() of `episodes` fresh evaluation episodes of `world_id`, acting with `choose(obs) -> actions`."""
  world = job.world(world_id, episodes, seed)
  try:
    r = actor_lib.run_episodes(
      world, choose, seed=seed, max_steps=job.config.eval_max_steps, stack=job.config.frame_stack
    )
  finally:
    world.close()
  return summary(r.returns)


def with_search(act, params, seed: int):
  """obs -> actions of a greedy search (temperature 0), as evaluation acts."""
  keys = iter(jax.random.split(jax.random.PRNGKey(seed), 100_000))
  return lambda obs: np.asarray(act(params, obs, next(keys), 0.0).action)


def evaluate_pairings(
  job: dream_lib.Job, nets: dict[str, Any], *, episodes: int, seed: int, prior_scales: tuple[float, ...] = ()
) -> dict[str, Any]:
  """Search returns on each world of the job for each (prior, values and model) pairing of PAIRINGS, the
  student's search with its prior logits scaled by each of `prior_scales`, and the policy alone of each net."""
  act = actor_lib.make_act(Paired(job.model), job.config)
  scaled = {x: actor_lib.make_act(Paired(job.model, x), job.config) for x in prior_scales}
  policy_act = actor_lib.make_policy_act(job.model)
  out = {}
  for name, rec in (("experience", job.exp), ("anchor", job.anchor)):
    if rec is None:
      continue
    world, res = rec.meta["world"], {"world": rec.meta["world"]}
    for prior, value in PAIRINGS:
      choose = with_search(act, {"prior": nets[prior], "value": nets[value]}, seed)
      res[f"search: prior {prior}, values {value}"] = episodes_of(job, world, choose, episodes=episodes, seed=seed)
    for x, act_x in scaled.items():
      choose = with_search(act_x, {"prior": nets["student"], "value": nets["student"]}, seed)
      res[f"search: student, prior logits x {x:g}"] = episodes_of(job, world, choose, episodes=episodes, seed=seed)
    for who, params in nets.items():
      choose = functools.partial(lambda p, obs: np.asarray(policy_act(p, obs)), params)
      res[f"policy alone: {who}"] = episodes_of(job, world, choose, episodes=episodes, seed=seed)
    out[name] = res
  return out


def summary(returns: np.ndarray) -> dict[str, Any]:
  mean, lo, hi = stats.mean_ci(returns, rng=np.random.default_rng(0))
  return {"mean": mean, "ci95": [lo, hi], "episodes": int(len(returns))}


def on_recorded_states(job: dream_lib.Job, teacher, student, *, seed: int, n: int = 2048) -> dict[str, Any]:
  """On `n` recorded states of each recording: the priors' mean entropies (nats), their mean KL(teacher ||
  student), the mean |student value - teacher value| against the values' spread, and the fraction of states
  where the two searches (each with its own prior and values) choose different actions."""
  act = actor_lib.make_act(job.model, job.config)
  out = {}
  for name, rb in (("experience", job.rb_exp), ("anchor", job.rb_anchor)):
    if rb is None:
      continue
    obs = distil_lib.sample_roots(rb, jax.random.PRNGKey(seed), n, job.config.frame_stack)
    row = {}
    for who, params in (("teacher", teacher), ("student", student)):
      logits, value_logits = job.model.predict(params, job.model.represent(params, obs))
      logp = jax.nn.log_softmax(logits)
      row[who] = (logp, logits_to_scalar(value_logits), act(params, obs, jax.random.PRNGKey(seed + 1), 0.0).action)
    (lp_t, v_t, a_t), (lp_s, v_s, a_s) = row["teacher"], row["student"]
    entropy = lambda lp: float(jnp.mean(-jnp.sum(jnp.exp(lp) * lp, -1)))  # noqa: E731
    out[name] = {
      "prior_entropy_teacher": entropy(lp_t),
      "prior_entropy_student": entropy(lp_s),
      "prior_kl_teacher_student": float(jnp.mean(jnp.sum(jnp.exp(lp_t) * (lp_t - lp_s), -1))),
      "prior_argmax_differs": float(jnp.mean(jnp.argmax(lp_t, -1) != jnp.argmax(lp_s, -1))),
      "value_teacher_mean": float(jnp.mean(v_t)),
      "value_teacher_std": float(jnp.std(v_t)),
      "value_abs_change": float(jnp.mean(jnp.abs(v_s - v_t))),
      "value_change": float(jnp.mean(v_s - v_t)),
      "search_action_differs": float(jnp.mean(a_t != a_s)),
    }
  return out


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--job", type=Path, required=True, help="a dream job's --out directory (distil phase done)")
  p.add_argument("--episodes", type=int, default=100)
  p.add_argument("--prior-scales", type=float, nargs="*", default=[], help="student prior logit scales to try")
  p.add_argument("--eval-seed", type=int, default=70_000, help="first seed of the fresh evaluation episodes")
  a = p.parse_args()
  state = json.loads((a.job / "dream.json").read_text())
  dc = dream_lib.dream_config(**dream_lib.stored_settings(state))  # an older job: what it ran
  inputs = state["inputs"]
  job = dream_lib.Job(inputs["checkpoint"], inputs["experience"], inputs["anchor"], dc)
  teacher, _ = dream_lib._load_tree(a.job / "phases" / "teacher.npz", job.base)
  student, _ = dream_lib._load_tree(a.job / "phases" / "student.npz", job.base)
  nets = {
    "checkpoint": job.base,
    "teacher": teacher,
    "student": student,
    "student heads": distil_lib.with_parts(job.base, student, distil_lib.PREDICTION_PARTS),
  }
  if not same_representation(*nets.values()):
    raise SystemExit("the student's representation differs from the checkpoint's (adapt_train or train 'all'?)")
  print(json.dumps({
    "commit": commit(), "job": str(a.job), "settings": state["settings"],
    "gate": state["done"].get("gate", {}).get("reasons"),
    "returns": evaluate_pairings(job, nets, episodes=a.episodes, seed=a.eval_seed, prior_scales=tuple(a.prior_scales)),
    "recorded_states": on_recorded_states(job, teacher, student, seed=a.eval_seed),
  }, indent=1))  # fmt: skip


if __name__ == "__main__":
  main()
