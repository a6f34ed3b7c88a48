"""A recording is read from files: its header and arrays are checked against each other, key by key, before
`dreamer dream` learns from them (an action beyond the world's action count is an error, not training data)."""

import json

import numpy as np
import pytest

import worlds
from dreamer import experience as exp_lib


@pytest.fixture(scope="module")
def recording(tmp_path_factory):
  """A real 12-step recording of 2 chain envs (episodes end within it)."""
  world = worlds.make("toy:chain", num_envs=2, seed=0)
  rng = np.random.default_rng(0)

  def act(obs):
    a = rng.integers(0, 2, 2)
    return a, np.eye(2, dtype=np.float32)[a], np.zeros(2, np.float32)

  arrays = exp_lib.record(world, act, steps=12, seed=0, stack=1)
  assert arrays["end_t"].size > 0
  meta = {"world": "toy:chain", "spec": {"obs_shape": [6], "obs_dtype": "float32", "num_actions": 2}}
  meta.update(frame_stack=1, acting="search", temperature=1.0, seed=0, checkpoint="x")
  return exp_lib.save(tmp_path_factory.mktemp("rec") / "exp", arrays, meta)


def _damaged(recording, tmp_path, *, meta=None, arrays=None):
  """A copy of the recording with `meta(dict)` / `arrays(dict)` applied in place."""
  out = tmp_path / "exp"
  out.mkdir()
  header = json.loads((recording / "experience.json").read_text())
  with np.load(recording / "experience.npz") as npz:
    data = {k: npz[k].copy() for k in npz.files}
  (meta or (lambda m: None))(header)
  (arrays or (lambda a: None))(data)
  (out / "experience.json").write_text(json.dumps(header))
  np.savez(out / "experience.npz", **data)
  return out


def test_a_recording_reads_back_whole(recording):
  exp = exp_lib.load(recording)
  assert exp.steps == 12 and exp.num_envs == 2


def _set(d, key, value):
  d[key] = value


@pytest.mark.parametrize(
  "meta, arrays, problem",
  [
    (lambda m: _set(m, "num_envs", 3), None, "'env_steps' must be num_envs x steps"),
    (lambda m: _set(m, "spec", {**m["spec"], "num_actions": 0}), None, "'spec.num_actions' must be an integer"),
    (lambda m: _set(m, "spec", {**m["spec"], "obs_dtype": "object"}), None, "'spec.obs_dtype' must be one of"),
    (lambda m: _set(m, "game_returns", [float("nan")]), None, "'game_returns' must be a list of finite numbers"),
    (lambda m: _set(m, "frame_stack", "1"), None, "'frame_stack' must be an integer >= 1"),
    (None, lambda a: a["action"].__setitem__((3, 1), 7), "an action is outside 0..1"),
    (None, lambda a: a["action"].__setitem__((3, 1), -1), "an action is outside 0..1"),
    (None, lambda a: a["reward"].__setitem__((0, 0), np.nan), "a reward/policy/value is not finite"),
    (None, lambda a: a["policy"].__setitem__((0, 0, 0), -1.0), "a policy has a negative probability"),
    (None, lambda a: _set(a, "obs", a["obs"][:, :, :5]), "array 'obs' is float32[12, 2, 5], the header says"),
    (None, lambda a: _set(a, "reward", a["reward"].astype(np.int64)), "array 'reward' is int64"),
    (None, lambda a: a.pop("value"), "it lacks the arrays ['value']"),
    (None, lambda a: a["terminated"].__setitem__((11, 0), ~a["terminated"][11, 0]), "episode ends"),
    (None, lambda a: a["end_t"].__setitem__(0, 99), "an episode end is not at an ended step"),
  ],
)
def test_each_damage_is_one_line_naming_it(recording, tmp_path, meta, arrays, problem):
  bad = _damaged(recording, tmp_path, meta=meta, arrays=arrays)
  with pytest.raises(exp_lib.ExperienceError) as info:
    exp_lib.load(bad)
  message = str(info.value)
  assert f"is damaged: {problem}" in message or (problem in message and "is damaged: " in message), message
  assert "\n" not in message


def test_a_header_that_is_not_an_object_or_not_json(recording, tmp_path):
  bad = _damaged(recording, tmp_path)
  (bad / "experience.json").write_text("[1, 2]")
  with pytest.raises(exp_lib.ExperienceError, match="cannot be read: experience.json holds a list"):
    exp_lib.load(bad)
  (bad / "experience.json").write_bytes(b"\xff\xfe\x00garbage")
  with pytest.raises(exp_lib.ExperienceError, match="cannot be read"):
    exp_lib.load(bad)


def test_a_truncated_recording_is_one_line(recording, tmp_path):
  bad = _damaged(recording, tmp_path)
  data = (bad / "experience.npz").read_bytes()
  (bad / "experience.npz").write_bytes(data[: len(data) // 2])
  with pytest.raises(exp_lib.ExperienceError, match="cannot be read"):
    exp_lib.load(bad)


def test_the_dream_jobs_own_files_are_checked_when_read_back(tmp_path):
  from dreamer import dream
  from dreamer.config import ConfigError

  like = {"w": np.zeros((2, 3), np.float32), "n": np.zeros((), np.int32)}
  good = tmp_path / "snap.npz"
  dream._save_tree(good, like, {"updates": 4})
  tree, info = dream._load_tree(good, like)
  assert info == {"updates": 4} and np.asarray(tree["w"]).shape == (2, 3)
  for name, arrays in [
    ("shape", {"w": np.zeros((3, 2), np.float32), "n": np.zeros((), np.int32), "__info__": np.array("{}")}),
    ("object", {"w": np.array([None], object), "n": np.zeros((), np.int32), "__info__": np.array("{}")}),
    ("missing", {"w": np.zeros((2, 3), np.float32), "__info__": np.array("{}")}),
    ("info", {"w": np.zeros((2, 3), np.float32), "n": np.zeros((), np.int32), "__info__": np.array("[1]")}),
    ("torn", None),
  ]:
    bad = tmp_path / f"{name}.npz"
    if arrays is None:  # a snapshot cut short
      bad.write_bytes(good.read_bytes()[:100])
    else:
      np.savez(bad, **arrays)
    with pytest.raises(ConfigError, match=r"the dream job's file .* is damaged \(.+\); delete it to redo its phase"):
      dream._load_tree(bad, like)
  for text in ("{not json", "[]", '{"version": 1, "inputs": {}, "settings": {}, "done": {"nap": {}}}'):
    (tmp_path / "dream.json").write_text(text)
    with pytest.raises(ConfigError, match=r"the dream job's state file .* is damaged"):
      dream._read_state(tmp_path / "dream.json")
