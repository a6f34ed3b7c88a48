"""Batched environments ("worlds") behind one numpy interface; see `worlds.base`. Optional packages (minatar)
are imported only when their worlds are built.

world = worlds.make("toy:chain", num_envs=8, seed=0)   # or "gym:CartPole-v1", "atari:Pong", "minatar:Breakout"
                                                        # related tasks: "toy:chain-mirror", "cartpole:long-pole"
obs = world.reset()              # [B, *spec.obs_shape]
step = world.step(actions)       # actions: int[B]
"""

from worlds.atari import ATARI100K_GAMES, AtariWorld
from worlds.base import RenderError, Spec, Step, World, WorldStateError, state_checksum
from worlds.cartpole import CARTPOLE_VARIANTS, CartPoleWorld
from worlds.gym import GymWorld
from worlds.minatar import MINATAR_GAMES, MINATAR_VARIANTS, MinAtarVariant, MinAtarWorld, MissingPackageError
from worlds.registry import available, make, register
from worlds.task import TaskFeatures, member
from worlds.toy import ChainWorld, MirrorChainWorld

__all__ = [
    "World", "Spec", "Step", "WorldStateError", "RenderError", "state_checksum", "make", "available", "register",
    "ChainWorld", "MirrorChainWorld", "GymWorld", "CartPoleWorld", "CARTPOLE_VARIANTS",
    "AtariWorld", "ATARI100K_GAMES", "MinAtarWorld", "MINATAR_GAMES", "MINATAR_VARIANTS", "MinAtarVariant",
    "MissingPackageError", "TaskFeatures", "member",
]  # fmt: skip
