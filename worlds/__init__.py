"""Batched environments ("worlds") behind one numpy interface; see `worlds.base`.

    world = worlds.make("toy:chain", num_envs=8, seed=0)   # or "gym:CartPole-v1", "atari:Pong", "minatar:Breakout"
    obs = world.reset()              # [B, *spec.obs_shape]
    step = world.step(actions)       # actions: int[B]
"""

from worlds.atari import ATARI100K_GAMES, AtariWorld
from worlds.base import Spec, Step, World, WorldStateError
from worlds.gym import GymWorld
from worlds.minatar import MINATAR_GAMES, MinAtarWorld
from worlds.registry import available, make, register
from worlds.toy import ChainWorld

__all__ = [
    "World", "Spec", "Step", "WorldStateError", "make", "available", "register",
    "ChainWorld", "GymWorld", "AtariWorld", "ATARI100K_GAMES", "MinAtarWorld", "MINATAR_GAMES",
]  # fmt: skip
