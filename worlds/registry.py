"""Build worlds from id strings like 'toy:chain', 'toy:chain-8', 'gym:CartPole-v1', 'atari:Pong',
'minatar:Breakout', 'minatar:SpaceInvaders-fast', 'cartpole:long-pole'.

An id is '<family>:<name>'. Each family is one entry in `FAMILIES`: a factory
`(name, *, num_envs, seed, **kwargs) -> World` plus the id patterns shown in
`available()`. New families are added with `register`; `add_ids` lists more
patterns of a registered family after all those listed so far (so the start of
`available()`, which error messages show, stays as it was).
"""

from __future__ import annotations

import difflib
import importlib
import re
from collections.abc import Callable
from typing import Any, NamedTuple

from worlds.base import World, check_num_envs
from worlds.cartpole import CARTPOLE_VARIANTS
from worlds.minatar import MINATAR_VARIANTS
from worlds.task import TaskFeatures

Factory = Callable[..., World]  # (name: str, *, num_envs: int, seed: int, **kwargs) -> World


class Family(NamedTuple):
  factory: Factory
  ids: tuple[str, ...]  # human-readable id patterns, e.g. ('toy:chain', 'toy:chain-<n>')


FAMILIES: dict[str, Family] = {}
_LISTED: list[str] = []  # every family's id patterns in the order they were registered


def register(prefix: str, factory: Factory, ids: tuple[str, ...]) -> None:
  """Add a world family addressed as '<prefix>:<name>'."""
  if prefix in FAMILIES:
    raise ValueError(f"world family {prefix!r} is already registered")
  FAMILIES[prefix] = Family(factory, tuple(ids))
  _LISTED.extend(ids)


def add_ids(prefix: str, ids: tuple[str, ...]) -> None:
  """List more id patterns of the registered family `prefix`, after every pattern listed so far."""
  FAMILIES[prefix] = FAMILIES[prefix]._replace(ids=FAMILIES[prefix].ids + tuple(ids))
  _LISTED.extend(ids)


def available() -> list[str]:
  """Id patterns of every registered family in registration order (gym ids are a hint, not a list)."""
  return list(_LISTED)


def make(world_id: str, *, num_envs: int, seed: int = 0, task_slots: int = 0, **kwargs: Any) -> World:
  """Build the world `world_id` with `num_envs` envs; `seed` is its default reset seed. With `task_slots` > 0
  its observations carry its task family member's one-hot (`worlds.task.TaskFeatures`).

  Extra keyword arguments go to the family's factory (e.g. gymnasium.make kwargs,
  ChainWorld's max_steps). Raises a one-line ValueError for unknown ids.
  """
  check_num_envs(num_envs)
  prefix, sep, name = world_id.partition(":")
  if not sep or prefix not in FAMILIES:
    why = f"no world family {prefix!r}" if sep else "ids look like '<family>:<name>'"
    raise _unknown(world_id, why, _guess(world_id, sep, prefix))
  world = FAMILIES[prefix].factory(name, num_envs=num_envs, seed=seed, **kwargs)
  if not task_slots:
    return world
  try:
    return TaskFeatures(world, world_id=world_id, slots=task_slots)
  except ValueError:
    world.close()
    raise


# ---------------------------------------------------------------- errors


def _unknown(world_id: str, why: str, suggestions: list[str] | None = None) -> ValueError:
  # One line: what was wrong, the closest valid ids, and what exists.
  hint = f"; did you mean {' or '.join(map(repr, suggestions))}?" if suggestions else "."
  return ValueError(f"unknown world {world_id!r}: {why}{hint} Available: {', '.join(available())}")


def _guess(world_id: str, sep: str, prefix: str) -> list[str]:
  if not sep:  # bare 'CartPole-v1' -> 'gym:CartPole-v1'
    return [f"gym:{world_id}"] if world_id in _gym_ids() else []
  return [f"{p}:{world_id.partition(':')[2]}" for p in difflib.get_close_matches(prefix, FAMILIES, n=1)]


# ---------------------------------------------------------------- toy:


_CHAIN = re.compile(r"chain(-mirror)?(?:-(\d+))?")


def _make_toy(name: str, *, num_envs: int, seed: int, **kwargs: Any) -> World:
  from worlds.toy import ChainWorld, MirrorChainWorld

  m = _CHAIN.fullmatch(name)
  if m is None:
    close = difflib.get_close_matches(name, ["chain", "chain-mirror"], n=1, cutoff=0.5)
    raise _unknown(f"toy:{name}", "no such toy world", [f"toy:{c}" for c in close])
  n = int(m.group(2)) if m.group(2) else 6
  if n < 3:
    raise _unknown(f"toy:{name}", f"a chain needs n >= 3 cells, got {n}")
  cls = MirrorChainWorld if m.group(1) else ChainWorld
  return cls(num_envs, n=n, seed=seed, **kwargs)


# ---------------------------------------------------------------- gym:


def _gym_ids() -> list[str]:
  import gymnasium

  return list(gymnasium.registry)


def _make_gym(name: str, *, num_envs: int, seed: int, **kwargs: Any) -> World:
  from worlds.gym import GymWorld

  env_name = name
  if ":" in name:  # gymnasium's 'module:EnvId' form: importing the module registers the id
    module, _, env_name = name.partition(":")
    try:
      importlib.import_module(module)
    except ImportError as e:
      raise _unknown(f"gym:{name}", f"cannot import module {module!r} ({e})") from None
  ids = _gym_ids()
  if env_name not in ids:
    close = difflib.get_close_matches(env_name, ids, n=2)
    raise _unknown(f"gym:{name}", "gymnasium has no such id", [f"gym:{c}" for c in close])
  return GymWorld(env_name, num_envs, seed=seed, **kwargs)


# ---------------------------------------------------------------- cartpole:


def _make_cartpole(name: str, *, num_envs: int, seed: int, **kwargs: Any) -> World:
  from worlds.cartpole import CartPoleWorld

  if name not in CARTPOLE_VARIANTS:
    close = difflib.get_close_matches(name, list(CARTPOLE_VARIANTS), n=1)
    raise _unknown(f"cartpole:{name}", "no such CartPole variant", [f"cartpole:{c}" for c in close])
  return CartPoleWorld(name, num_envs, seed=seed, **kwargs)


# ---------------------------------------------------------------- atari:


def _make_atari(name: str, *, num_envs: int, seed: int, **kwargs: Any) -> World:
  from worlds.atari import AtariWorld, close_games, game_roms

  games = game_roms()
  if name not in games:
    close = close_games(name, games)
    raise _unknown(f"atari:{name}", "no such Atari game", [f"atari:{c}" for c in close])
  return AtariWorld(name, num_envs, seed=seed, **kwargs)


# ---------------------------------------------------------------- minatar:


def _make_minatar(name: str, *, num_envs: int, seed: int, **kwargs: Any) -> World:
  from worlds.minatar import MINATAR_GAMES, MinAtarWorld, close_games

  if name not in MINATAR_GAMES and name not in MINATAR_VARIANTS:
    why = "no such MinAtar game or variant"
    raise _unknown(f"minatar:{name}", why, [f"minatar:{c}" for c in close_games(name)])
  return MinAtarWorld(name, num_envs, seed=seed, **kwargs)


register("toy", _make_toy, ("toy:chain", "toy:chain-<n>"))
register("gym", _make_gym, ("gym:<any discrete-action gymnasium id>",))
register("atari", _make_atari, ("atari:<CamelCase ale-py game, e.g. Pong>",))
register(
  "minatar",
  _make_minatar,
  ("minatar:Breakout", "minatar:Asterix", "minatar:Freeway", "minatar:SpaceInvaders", "minatar:Seaquest"),
)
register("cartpole", _make_cartpole, tuple(f"cartpole:{v}" for v in CARTPOLE_VARIANTS))
add_ids("minatar", tuple(f"minatar:{v}" for v in MINATAR_VARIANTS))
add_ids("toy", ("toy:chain-mirror", "toy:chain-mirror-<n>"))  # after gym: error messages start as before
