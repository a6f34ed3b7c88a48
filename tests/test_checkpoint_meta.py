"""A checkpoint's metadata is read from a file: every key the loaders use is checked (type and range), and
the host counters exactly, before anything is built from them."""

import copy

import pytest

from dreamer import checkpoint as ckpt_lib
from dreamer.train import Progress

GOOD = {
  "format_version": ckpt_lib.FORMAT_VERSION,
  "step": 400,
  "config": {},
  "spec": {"obs_shape": [6], "obs_dtype": "float32", "num_actions": 2},
  "progress": {},
  "checksums": {"params": [1, 2], "state": [3]},
  "world_state": None,
}


def _with(path, value):
  meta = copy.deepcopy(GOOD)
  *parents, last = path
  node = meta
  for key in parents:
    node = node[key]
  if value is KeyError:
    del node[last]
  else:
    node[last] = value
  return meta


def test_good_meta_passes():
  assert ckpt_lib.meta_problem(GOOD) is None


@pytest.mark.parametrize(
  "path, value, problem",
  [
    (("spec",), KeyError, "'spec' must be a dict, got NoneType"),
    (("progress",), [], "'progress' must be a dict, got list"),
    (("step",), "400", "'step' must be a int, got str"),
    (("spec", "obs_shape"), [6, -1], "spec.obs_shape must be a list of 1 to 4 positive integers"),
    (("spec", "obs_shape"), [10**12] * 5, "spec.obs_shape must be a list of 1 to 4 positive integers"),
    (("spec", "obs_dtype"), "object", "spec.obs_dtype must be one of"),
    (("spec", "num_actions"), 0, "spec.num_actions must be an integer >= 1"),
    (("spec", "num_actions"), True, "spec.num_actions must be an integer >= 1"),
    (("checksums", "state"), [1.5], "checksums.state must be a list of non-negative integers"),
    (("checksums", "params"), KeyError, "checksums.params must be a list of non-negative integers"),
  ],
)
def test_each_damaged_key_is_named(path, value, problem):
  assert ckpt_lib.meta_problem(_with(path, value)).startswith(problem)


def test_counters_are_read_exactly():
  good = {**Progress().__dict__, "env_steps": 400, "updates": 96, "owed": 0.5, "recent_returns": [1.0]}
  assert Progress.from_meta(good, "checkpoint X") == Progress(**good)
  for bad, named in [
    ({**good, "extra": 1}, "expected keys"),
    ({k: v for k, v in good.items() if k != "owed"}, "expected keys"),
    ({**good, "updates": -3}, "'updates' is -3"),
    ({**good, "owed": float("nan")}, "'owed' is nan"),
    ({**good, "env_steps": "400"}, "'env_steps' is 400"),
    ({**good, "recent_returns": 5}, "'recent_returns' is 5"),
    ([1, 2], "expected keys"),
  ]:
    with pytest.raises(ckpt_lib.CheckpointError, match=f"checkpoint X has damaged counters: .*{named}"):
      Progress.from_meta(bad, "checkpoint X")
