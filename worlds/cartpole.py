"""A family of CartPole worlds: one observation and action space, changed dynamics.

Every member is gymnasium's `CartPole-v1` (obs f32[4] = cart position, cart
velocity, pole angle, pole angular velocity; 2 actions; +1 per step; the same
termination at |x| > 2.4 or |angle| > 12 degrees; truncation after 500 steps)
with some physical constants changed, or the actions swapped. So a policy
trained on one member can be run unchanged on another ("learn task B without
forgetting task A"): every member is still solvable (one linear controller
keeps the pole up for 500 steps on each; tests/test_families.py) but rewards a
differently tuned control law, down to the opposite one (`reversed`).

Members are addressed as 'cartpole:<name>' with the names of `CARTPOLE_VARIANTS`.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import numpy as np

from worlds import plain
from worlds.base import WorldStateError
from worlds.gym import GymWorld


class CartPoleVariant(NamedTuple):
  """How one member differs from `CartPole-v1`."""

  physics: dict[str, float]  # CartPoleEnv constants to set: keys of CARTPOLE_PHYSICS
  about: str  # one line: what changes and what it asks of a policy trained on 'base'
  swap_actions: bool = False  # action 0 pushes right and 1 pushes left


# CartPole-v1's constants, as CartPoleEnv.__init__ sets them (`length` is HALF the pole's length).
CARTPOLE_PHYSICS: dict[str, float] = {
    "gravity": 9.8, "masscart": 1.0, "masspole": 0.1, "length": 0.5, "force_mag": 10.0, "tau": 0.02,
}  # fmt: skip

# Append only: `task_input` numbers the members in this order (worlds/task.py), and checkpoints keep it.
CARTPOLE_VARIANTS: dict[str, CartPoleVariant] = {
  "base": CartPoleVariant({}, "CartPole-v1 unchanged: the task the others are related to"),
  "long-pole": CartPoleVariant(
    {"length": 1.0}, "pole twice as long (half-length 0.5 -> 1.0): it falls slower and a push turns it less"
  ),
  "heavy-pole": CartPoleVariant(
    {"masspole": 0.5}, "pole 5x heavier (0.1 -> 0.5): a push moves the cart less and the pole falls faster"
  ),
  "weak-push": CartPoleVariant({"force_mag": 5.0}, "half the push force (10 -> 5): corrections must start earlier"),
  "high-gravity": CartPoleVariant(
    {"gravity": 19.6}, "twice the gravity (9.8 -> 19.6): the pole falls faster, needs quicker control"
  ),
  "reversed": CartPoleVariant(
    {}, "physics unchanged, actions swapped (0 pushes right): base's policy is the worst here", True
  ),
}


def physics_of(env: Any) -> dict[str, float]:
  """The constants of a CartPoleEnv (or a wrapper of one), base and derived ones.

  Returns CARTPOLE_PHYSICS's keys plus `total_mass` and `polemass_length`.
  """
  u = env.unwrapped
  return {k: getattr(u, k) for k in (*CARTPOLE_PHYSICS, "total_mass", "polemass_length")}


class CartPoleWorld(GymWorld):
  """B copies of `CartPole-v1` with the physics (and action meaning) of member `variant`.

  The constants are set on each unwrapped env after `gymnasium.make`, with the
  derived `total_mass = masspole + masscart` and `polemass_length = masspole * length`
  recomputed (CartPoleEnv only computes them in __init__). `get_state`/`set_state`
  carry them with each env's state (plain data); the saved state also names the
  variant, and restoring it into another member is refused.
  Extra kwargs go to `gymnasium.make` (e.g. max_episode_steps).
  """

  def __init__(self, variant: str, num_envs: int, seed: int = 0, **kwargs: Any) -> None:
    if variant not in CARTPOLE_VARIANTS:
      raise ValueError(f"no CartPole variant {variant!r}; variants: {', '.join(CARTPOLE_VARIANTS)}")
    super().__init__("CartPole-v1", num_envs, seed=seed, **kwargs)
    self.variant = variant
    v = CARTPOLE_VARIANTS[variant]
    self._swap_actions = v.swap_actions
    for env in self._envs:
      u = env.unwrapped
      for k, x in v.physics.items():
        if k not in CARTPOLE_PHYSICS or not hasattr(u, k):  # a typo or a gymnasium rename
          raise AttributeError(f"CartPole has no physical constant {k!r}")
        setattr(u, k, float(x))
      u.total_mass = u.masspole + u.masscart
      u.polemass_length = u.masspole * u.length

  def __repr__(self) -> str:
    return f"CartPoleWorld({self.variant!r}, num_envs={self.num_envs}, spec={self.spec})"

  def _step_all(self, action: np.ndarray):
    return super()._step_all(1 - action if self._swap_actions else action)

  def _get_state(self) -> dict[str, Any]:
    return {"variant": self.variant, "physics": [physics_of(e) for e in self._envs], "gym": super()._get_state()}

  def _set_state(self, state: dict[str, Any]) -> None:
    variant, physics = state["variant"], state["physics"]
    if variant != self.variant:
      raise WorldStateError(f"saved state is of cartpole:{plain.short(variant)}, this world is cartpole:{self.variant}")
    keys = set(physics_of(self._envs[0]))
    ok = isinstance(physics, list) and len(physics) == self.num_envs
    ok = ok and all(isinstance(p, dict) and set(p) == keys for p in physics)
    if not ok or not all(type(x) is float and math.isfinite(x) for p in physics for x in p.values()):
      raise WorldStateError(f"saved cartpole:{self.variant} physics are malformed: {plain.short(physics, 200)}")
    super()._set_state(state["gym"])
    for env, p in zip(self._envs, physics):
      for k, x in p.items():
        setattr(env.unwrapped, k, x)
