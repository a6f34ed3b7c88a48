"""The dream ratio: imagined model steps per real env step, counted exactly from the schedule.

A model step is one call of the dynamics network on one sample (one `recurrent_fn` call of mctx on one batch
row). Three kinds happen during training, each a fixed number per event:
  act        acting search: `num_simulations` per env per acting step (one batched search for all envs);
             0 when `search = "none"` (the policy network acts alone);
  reanalyse  reanalysis search in the learner: round(reanalyze_fraction * batch_size) samples x (K+1) roots
             x `num_simulations`, per update;
  unroll     the training unroll: batch_size x K (`unroll_steps`), per update.
The root of a search (representation + prediction) is not a model step: it reads a real observation.
Evaluation searches are not counted: they are not part of what the agent learns from.

The knobs are `num_simulations`, `reanalyze_fraction` and `updates_per_env_step`; `planned_ratio` gives the
ratio a config implies once learning has started, `Dreams` counts what a run has done.
"""

from __future__ import annotations

import dataclasses

from dreamer.config import Config

KINDS = ("act", "reanalyse", "unroll")


def trains_with_search(config: Config) -> bool:
  """Whether training acts with search and learns from its targets (not search 'none', not `train_search` off)."""
  return config.search != "none" and config.train_search


def act_steps(config: Config) -> int:
  """Model steps of one acting step in training (all `num_envs` envs together)."""
  return config.num_envs * config.num_simulations if trains_with_search(config) else 0


def reanalysed_samples(config: Config) -> int:
  """Samples of each learner batch whose policy target is recomputed by search."""
  return int(round(config.reanalyze_fraction * config.batch_size)) if trains_with_search(config) else 0


def update_steps(config: Config) -> dict[str, int]:
  """Model steps of one learner update, by kind."""
  k = config.unroll_steps
  return {"reanalyse": reanalysed_samples(config) * (k + 1) * config.num_simulations, "unroll": config.batch_size * k}


def planned_ratio(config: Config) -> dict[str, float]:
  """Imagined model steps per real env step once updates run at `updates_per_env_step`, by kind and 'total'."""
  per_update = update_steps(config)
  out = {
    "act": act_steps(config) / config.num_envs,
    **{kind: n * config.updates_per_env_step for kind, n in per_update.items()},
  }
  out["total"] = sum(out.values())
  return out


@dataclasses.dataclass
class Dreams:
  """Model steps done so far, by kind (saved in checkpoints with the host counters)."""

  act: int = 0
  reanalyse: int = 0
  unroll: int = 0

  def acted(self, config: Config) -> None:
    self.act += act_steps(config)

  def updated(self, config: Config, updates: int) -> None:
    per_update = update_steps(config)
    self.reanalyse += updates * per_update["reanalyse"]
    self.unroll += updates * per_update["unroll"]

  @classmethod
  def rebuilt(cls, config: Config, env_steps: int, updates: int) -> Dreams:
    """The count of a run whose counters predate it, from its env steps and updates (exact unless its
    num_simulations, reanalyze_fraction, batch_size or unroll_steps changed on a resume)."""
    dreams = cls(act=env_steps // config.num_envs * act_steps(config))
    dreams.updated(config, updates)
    return dreams

  @property
  def total(self) -> int:
    return self.act + self.reanalyse + self.unroll

  def record(self, env_steps: int) -> dict[str, float]:
    """The metrics.jsonl fields: `dream/ratio` (all kinds per real env step so far), the same per kind, and
    `dream/model_steps` (the total count)."""
    per = max(env_steps, 1)
    return {
      "dream/ratio": self.total / per,
      **{f"dream/{k}_ratio": getattr(self, k) / per for k in KINDS},
      "dream/model_steps": self.total,
    }
