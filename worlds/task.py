"""Task features: a world's observations with its place in its task family appended, so that one model can
hold the different physics of a family's members (issue "/dream that holds up": a CartPole frame does not show
the pole's length, a SpaceInvaders frame does not show the aliens' speed, and no frame shows swapped actions).

A family's members are numbered by `member`: 0 is the family's base ('gym:CartPole-v1', 'cartpole:base',
'minatar:<Game>') and every world outside a family; 'cartpole:<name>' is its place in `CARTPOLE_VARIANTS`;
'minatar:<Game>-<name>' is 1 + its place among that game's variants in `MINATAR_VARIANTS`. Checkpoints
store observations in this numbering, so both lists only ever grow at their ends (tests/test_task_input.py).

With `slots` = N the observation gains N features, the one-hot of the member: vector observations f32[D]
become f32[D + N]; image observations [H, W, C] gain N constant planes, [H, W, C + N]. The networks read
them back from the last axis (`dreamer.networks.split_task`).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from worlds.base import Spec, World, WorldStateError
from worlds.cartpole import CARTPOLE_VARIANTS
from worlds.minatar import MINATAR_VARIANTS


def member(world_id: str) -> int:
  """The index of `world_id` among its task family's members (module docstring); 0 outside a family."""
  prefix, _, name = world_id.partition(":")
  if prefix == "cartpole" and name in CARTPOLE_VARIANTS:
    return list(CARTPOLE_VARIANTS).index(name)
  if prefix == "minatar" and name in MINATAR_VARIANTS:
    game = MINATAR_VARIANTS[name].game
    return 1 + [k for k, v in MINATAR_VARIANTS.items() if v.game == game].index(name)
  return 0


def slots_error(world_id: str, slots: int) -> str | None:
  """Why `slots` task slots cannot hold `world_id` (one line), or None when they can."""
  index = member(world_id)
  if index < slots:
    return None
  return (
    f"task_input={slots} holds task members 0 to {slots - 1}, but {world_id!r} is member {index} of its family: "
    f"a run for it must be trained with task_input >= {index + 1}"
  )


def features(obs_shape: tuple[int, ...], member_index: int, slots: int, dtype: Any) -> np.ndarray:
  """The appended part of one observation: [N] for vectors, [H, W, N] for images (one-hot on the last axis)."""
  one_hot = np.zeros(slots, dtype)
  one_hot[member_index] = 1
  return np.broadcast_to(one_hot, (*obs_shape[:-1], slots))


class TaskFeatures(World):
  """`inner` (a built world, closed with this one) with its member's one-hot appended to every observation."""

  def __init__(self, inner: World, *, world_id: str, slots: int) -> None:
    if why := slots_error(world_id, slots):
      raise ValueError(why)
    if len(inner.spec.obs_shape) not in (1, 3):
      raise ValueError(f"task features need vector or [H, W, C] observations, {world_id!r} has {inner.spec.obs_shape}")
    super().__init__(inner.num_envs, seed=inner.seed)
    self.inner, self.member, self.slots = inner, member(world_id), slots
    self.optimal_return = inner.optimal_return
    shape = inner.spec.obs_shape
    self._spec = inner.spec._replace(obs_shape=(*shape[:-1], shape[-1] + slots))
    self._features = features(shape, self.member, slots, inner.spec.obs_dtype)

  @property
  def spec(self) -> Spec:
    return self._spec

  def _append(self, obs: np.ndarray) -> np.ndarray:
    return np.concatenate([obs, np.broadcast_to(self._features, (len(obs), *self._features.shape))], axis=-1)

  def _reset_all(self, seed: int) -> np.ndarray:
    return self._append(self.inner._reset_all(seed))

  def _step_all(self, action: np.ndarray) -> tuple[np.ndarray, ...]:
    out = self.inner._step_all(action)
    return (self._append(np.asarray(out[0])), *out[1:])

  def _reset_done(self, done: np.ndarray) -> np.ndarray:
    return self._append(self.inner._reset_done(done))

  def _get_state(self) -> Any:
    return {"member": self.member, "slots": self.slots, "inner": self.inner._get_state()}

  def _set_state(self, state: Any) -> None:
    if (state["member"], state["slots"]) != (self.member, self.slots):
      raise WorldStateError(
        f"saved state is of task member {state['member']} of {state['slots']} slots, this world is member "
        f"{self.member} of {self.slots}"
      )
    self.inner._set_state(state["inner"])

  def __getattr__(self, name: str) -> Any:
    # Anything else (probes read the package's envs, `_envs`, and last actions, `_actions`) is the inner world's.
    if name == "inner":
      raise AttributeError(name)
    return getattr(self.inner, name)

  def render(self, env: int) -> np.ndarray:
    return self.inner.render(env)

  def close(self) -> None:
    self.inner.close()

  def __repr__(self) -> str:
    return f"TaskFeatures({self.inner!r}, member={self.member}, slots={self.slots})"
