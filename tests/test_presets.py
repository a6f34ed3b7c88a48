"""Every preset is a valid configuration whose network fits its world's observations, and the Atari CPU preset
keeps the Atari protocol of the faithful one while cutting only its sizes."""

import pytest

import worlds
from dreamer import config as config_lib
from dreamer.agent import check_network


@pytest.mark.parametrize("preset", config_lib.presets())
def test_preset_loads_and_fits_its_world(preset):
  config = config_lib.load(preset)
  world = worlds.make(config.world, num_envs=1, seed=0, **config_lib.world_kwargs(config, train=True))
  try:
    check_network(config, world.spec)
  finally:
    world.close()


def test_atari_cpu_keeps_the_protocol():
  cpu, faithful = config_lib.load("atari-cpu"), config_lib.load("atari100k")
  # The frame size is the network's input, like grey frames: atari-cpu cuts it (64, atari100k 96) to fit 2 cores.
  protocol = ["frame_stack", "atari_sticky_actions", "atari_full_action_set", "atari_noop_max"]
  protocol += ["atari_train_max_steps", "eval_max_steps", "discount", "network", "norm", "augment", "total_env_steps"]
  assert {k: getattr(cpu, k) for k in protocol} == {k: getattr(faithful, k) for k in protocol}
