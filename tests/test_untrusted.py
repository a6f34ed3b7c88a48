"""Loading a run directory never runs code: world states are plain data (worlds/plain.py), nothing in the
package unpickles, numpy files are read without pickle. Planted pickles, in every kind of file that could
carry one, are refused (a one-line error or warning) and never executed; docs/checkpoints.md says what a
hostile run directory can still do."""

import ast
import base64
import enum
import json
import math
import pathlib
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest

import worlds
from dreamer import checkpoint as ckpt_lib
from dreamer import config as config_lib
from dreamer import dream
from dreamer import experience as exp_lib
from dreamer.train import Parts, _restore_world, _saved_held, _saved_repeats, train
from worlds import plain

ROOT = Path(__file__).resolve().parent.parent


class Payload:
  """What a hostile file would hold: unpickling it creates the file `marker`."""

  def __init__(self, marker: Path):
    self.marker = pathlib.Path(marker)

  def __reduce__(self):
    return pathlib.Path.touch, (self.marker,)


@pytest.fixture
def payload(tmp_path):
  """(pickled payload, the marker its unpickling would create); checked live once, so a pass means something."""
  probe = tmp_path / "probe"
  pickle.loads(pickle.dumps(Payload(probe)))
  assert probe.exists()
  marker = tmp_path / "MARKER"
  return pickle.dumps(Payload(marker)), marker


def one_line(text: str) -> bool:
  return bool(text) and "\n" not in text and len(text) < 400


# ------------------------------------------------------------------ the package


def _package_files() -> list[Path]:
  return sorted(p for d in ("dreamer", "worlds") for p in (ROOT / d).rglob("*.py"))


UNSAFE_MODULES = {"pickle", "_pickle", "cPickle", "dill", "cloudpickle", "joblib", "marshal", "shelve"}


def test_no_module_of_the_package_can_unpickle():
  found = []
  for path in _package_files():
    for node in ast.walk(ast.parse(path.read_text())):
      where = f"{path.relative_to(ROOT)}:{getattr(node, 'lineno', 0)}"
      if isinstance(node, ast.Import):
        found += [f"{where} imports {a.name}" for a in node.names if a.name.split(".")[0] in UNSAFE_MODULES]
      elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] in UNSAFE_MODULES:
        found.append(f"{where} imports from {node.module}")
      elif isinstance(node, (ast.Name, ast.Attribute)) and "pickle" in getattr(node, "id", getattr(node, "attr", "")):
        found.append(f"{where} names {getattr(node, 'id', getattr(node, 'attr', ''))}")  # e.g. pd.read_pickle
      elif isinstance(node, ast.Call):
        func = node.func
        if isinstance(func, ast.Name) and func.id in ("eval", "exec", "__import__"):
          found.append(f"{where} calls {func.id}")
        for kw in node.keywords:  # np.load(..., allow_pickle=...) only ever False
          if kw.arg == "allow_pickle" and not (isinstance(kw.value, ast.Constant) and kw.value.value is False):
            found.append(f"{where} passes allow_pickle={ast.unparse(kw.value)}")
  assert not found, found
  assert len(_package_files()) > 20  # the tree was really read


def test_the_scan_finds_what_it_forbids(tmp_path, monkeypatch):
  """The scan above, run on a planted module, reports each way of unpickling."""
  bad = tmp_path / "dreamer"
  bad.mkdir()
  (bad / "evil.py").write_text(
    "import pickle\nimport numpy as np\nx = np.load('f', allow_pickle=True)\ny = eval('1')\nimport pandas\n"
    "z = pandas.read_pickle('f')\n"
  )
  monkeypatch.setattr(f"{__name__}.ROOT", tmp_path)
  with pytest.raises(AssertionError) as info:
    test_no_module_of_the_package_can_unpickle()
  for what in ("imports pickle", "allow_pickle=True", "calls eval", "names read_pickle"):
    assert what in str(info.value), what


def test_object_arrays_in_a_recording_are_refused_without_running(tmp_path, payload):
  _, marker = payload
  rec = tmp_path / "rec"
  rec.mkdir()
  (rec / "experience.json").write_text(json.dumps({"format": exp_lib.FORMAT, "version": exp_lib.VERSION}))
  with open(rec / "experience.npz", "wb") as f:  # numpy pickles object arrays when saving
    np.savez(f, obs=np.array([Payload(marker)], dtype=object))
  with pytest.raises(exp_lib.ExperienceError) as info:
    exp_lib.load(rec)
  assert one_line(str(info.value)) and "cannot be read" in str(info.value)
  assert not marker.exists()


def test_object_arrays_in_a_dream_snapshot_are_refused_without_running(tmp_path, payload):
  _, marker = payload
  snap = tmp_path / "adapt.npz"
  with open(snap, "wb") as f:
    np.savez(f, __info__=np.array("{}"), leaf=np.array([Payload(marker)], dtype=object))
  with pytest.raises(ValueError) as info:
    dream._load_tree(snap, {"leaf": np.zeros(1)})
  assert one_line(str(info.value))
  assert not marker.exists()


# ------------------------------------------------------------------ the plain-data codec


def _same(a, b) -> bool:
  """Equal values of identical types all the way down; arrays and numpy scalars to the byte."""
  if type(a) is not type(b):
    return False
  if isinstance(a, (list, tuple)):
    return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
  if isinstance(a, dict):
    return list(a) == list(b) and all(_same(a[k], b[k]) for k in a)
  if isinstance(a, (np.ndarray, np.generic)):
    return a.dtype == b.dtype and np.shape(a) == np.shape(b) and a.tobytes() == b.tobytes()
  if isinstance(a, float):
    return (math.isnan(a) and math.isnan(b)) or (a == b and math.copysign(1, a) == math.copysign(1, b))
  return a == b


def _through_json(value):
  return plain.decode(json.loads(json.dumps(plain.encode(value))))


def test_round_trips_are_exact():
  nan_payload = np.array([0x7FF8000000000001, 0x8000000000000000], np.uint64).view(np.float64)  # NaN bits, -0.0
  value = {
    "none": None,
    "flags": [True, False],
    "ints": [0, -1, 2**64 + 1, -(2**127)],
    "floats": (0.1, -0.0, 1e-310, math.inf, -math.inf, math.nan, 5e300),
    "text": "ünïcode\nline",
    "bytes": b"\x00\xff" * 3,
    "arrays": [np.arange(6, dtype=d).reshape(2, 3) for d in ("i1", "u1", "i2", "u2", "i4", "u4", "i8", "u8")],
    "floats_arrays": [np.linspace(-1, 1, 7, dtype=d) for d in ("f2", "f4", "f8")] + [nan_payload],
    "bools": np.array([[True, False]]),
    "empty": np.zeros((0, 3), np.float32),
    "scalars": (np.int64(-5), np.float32(0.1), np.bool_(True), np.uint8(255), np.float64(nan_payload[0])),
    "nested": {"a": [{"b": (1, [2, (3,)])}]},
  }
  assert _same(_through_json(value), value)
  back = _through_json(value)
  back["arrays"][0][0, 0] = 99  # decoded arrays are writable copies
  assert value["arrays"][0][0, 0] == 0


def test_random_generator_states_round_trip_and_continue():
  gen = np.random.default_rng(7)
  gen.random(5)
  legacy = np.random.RandomState(3)
  legacy.standard_normal()  # a cached Gaussian is part of its state
  states = _through_json({"pcg": gen.bit_generator.state, "mt": legacy.get_state(legacy=False)})
  g2 = np.random.Generator(np.random.PCG64())
  g2.bit_generator.state = states["pcg"]
  r2 = np.random.RandomState()
  r2.set_state(states["mt"])
  assert gen.random(100).tobytes() == g2.random(100).tobytes()
  assert legacy.standard_normal(100).tobytes() == r2.standard_normal(100).tobytes()


class Color(enum.IntEnum):
  RED = 1


@pytest.mark.parametrize(
  "value, message",
  [
    (np.array([1, "a"], dtype=object), "dtype object are not plain data"),
    (np.array(["text"]), "dtype <U4 are not plain data"),
    (np.array([1], ">i4"), "dtype >i4 are not plain data"),
    (np.array([1 + 2j]), "dtype complex128 are not plain data"),
    (np.datetime64("2020-01-01"), "dtype datetime64"),
    (object(), "builtins.object is not plain data"),
    ({1, 2}, "builtins.set is not plain data"),
    ({1: "a"}, "dict keys must be str, got int"),
    (Color.RED, "Color is not plain data"),  # an int subclass would not come back as itself
    (bytearray(b"x"), "builtins.bytearray is not plain data"),
    (np.ma.array([1, 2]), "MaskedArray is not plain data"),
    ([1, {"a": (2, lambda: 0)}], r"state\[1\]\['a'\]\[1\]: builtins.function is not plain data"),
  ],
  ids=lambda x: x if isinstance(x, str) else None,
)
def test_encode_refuses_what_is_not_plain(value, message):
  with pytest.raises(plain.PlainDataError, match=message) as info:
    plain.encode(value)
  assert one_line(str(info.value))


def test_encode_refuses_cycles():
  loop = []
  loop.append(loop)
  with pytest.raises(plain.PlainDataError, match="nested more than"):
    plain.encode(loop)


def _arr(dtype, shape, raw: bytes) -> dict:
  return {"array": {"dtype": dtype, "shape": shape, "data": base64.b64encode(raw).decode()}}


@pytest.mark.parametrize(
  "data, message",
  [
    ({"pickle": "gASV"}, "expected plain data"),
    ({"__reduce__": ["os.system", ["touch MARKER"]]}, "expected plain data"),
    ({"dict": {}, "tuple": []}, "expected plain data"),
    ({"dict": [1]}, "'dict' holds list"),
    ({"tuple": {"a": 1}}, "'tuple' holds dict"),
    ({"bytes": 5}, "must be a string"),
    ({"bytes": "not base64!"}, "invalid base64"),
    ({"float": "1.5"}, "'float' must be 'nan', 'inf' or '-inf'"),
    (float("nan"), "a non-finite number must be tagged"),
    (_arr("|O", [1], b"\0" * 8), r"dtype \|O is not one of"),
    (_arr("object", [1], b"\0" * 8), "dtype object is not one of"),
    (_arr("<f8", [10**12, 10**6], b""), "cannot hold the 8000000000000000000 bytes declared"),  # nothing allocated
    (_arr("<f8", [-1], b""), "shape must be a list"),
    (_arr("<f8", [2.0], b"\0" * 16), "shape must be a list"),
    (_arr("<i4", [3], b"\0" * 8), "cannot hold the 12 bytes declared"),
    (_arr("<i4", [2], b"\0" * 9), "9 bytes of data, 8 declared"),
    (_arr("|b1", [2], b"\x01\x02"), "bytes other than 0 and 1"),
    ({"array": {"dtype": "<f8", "shape": [0], "data": "", "extra": 1}}, "must hold exactly"),
    ({"scalar": {"dtype": "<f8", "data": "AAAA"}}, "cannot hold the 8 bytes declared"),
    (json.loads("[" * 70 + "0" + "]" * 70), "nested more than 64"),
  ],
)
def test_decode_refuses_what_encode_never_writes(data, message):
  with pytest.raises(plain.PlainDataError, match=message) as info:
    plain.decode(data)
  assert one_line(str(info.value))


def test_checksum_is_that_of_the_json_text_after_a_round_trip():
  data = worlds.make("toy:chain", num_envs=2).get_state()
  assert plain.checksum(json.loads(json.dumps(data))) == plain.checksum(data)
  changed = json.loads(json.dumps(data).replace('"num_envs": 2', '"num_envs": 3'))
  assert plain.checksum(changed) != plain.checksum(data)
  with pytest.raises(plain.PlainDataError, match="not JSON data"):
    plain.checksum({"a": b"bytes"})


# ------------------------------------------------------------------ saved world states


def _retouched(state, change):
  """`state` decoded, changed in place by `change(decoded)`, encoded again (a hand-edited file)."""
  decoded = plain.decode(state)
  change(decoded)
  return plain.encode(decoded)


def _chain_state():
  w = worlds.make("toy:chain", num_envs=3)
  w.reset()
  w.step(np.array([1, 1, 0]))
  return w.get_state()


def _set(path, value):
  def change(d):
    *keys, last = path
    for k in keys:
      d = d[k]
    d[last] = value

  return change


@pytest.mark.parametrize(
  "change, message",
  [
    (_set(("world",), "GymWorld"), "is of a GymWorld world, this world is a ChainWorld"),
    (_set(("world",), "Evil\nsecond line"), r"is of a 'Evil\\nsecond line' world"),
    (_set(("version",), 2), "version 2; this dreamer reads"),
    (_set(("num_envs",), 4), "holds 4 envs, this world has 3"),
    (_set(("ep_return",), np.zeros(3, np.float32)), "ep_return is float32\\[3\\], expected float64\\[3\\]"),
    (_set(("needs_reset",), 1), "needs_reset 1"),
    (_set(("own", "pos"), np.array([1, 9, 1])), "out of range: cells \\[1, 9, 1\\]"),
    (_set(("own", "t"), np.array([1.0, 1.0, 1.0])), "t is float64\\[3\\], expected int64\\[3\\]"),
    (_set(("own", "n"), 9), "chain of 9 cells, this one has 6"),
    (lambda d: d["own"].pop("pos"), "malformed: KeyError: 'pos'"),
    (lambda d: d.update(own=[1, 2]), "malformed: TypeError"),
    (lambda d: d.update(extra=1), "expected the keys"),
  ],
)
def test_malformed_world_states_are_one_line_errors(change, message):
  w = worlds.make("toy:chain", num_envs=3)
  with pytest.raises(worlds.WorldStateError, match=message) as info:
    w.set_state(_retouched(_chain_state(), change))
  assert one_line(str(info.value))
  w.reset()  # a failed restore leaves a world that a reset makes whole
  w.step(np.zeros(3, np.int64))


@pytest.mark.parametrize("data", ["gASVKgAAAAAAAAA", [1, 2], 5, None, {"dict": {}}, {"bytes": "gASV"}])
def test_world_states_that_are_not_world_states_are_refused(data):
  with pytest.raises(worlds.WorldStateError, match="saved world state is malformed") as info:
    worlds.make("toy:chain", num_envs=3).set_state(data)
  assert one_line(str(info.value))


def _cartpole_state():
  w = worlds.make("cartpole:heavy-pole", num_envs=2, seed=3)
  w.reset()
  for _ in range(5):
    w.step(np.array([0, 1]))
  return w.get_state()


def _cartpole_layer(d, name):
  return next(values for layer, values in d["own"]["gym"]["envs"][0]["layers"] if layer == name)


@pytest.mark.parametrize(
  "change, message",
  [
    (lambda d: _cartpole_layer(d, "CartPoleEnv").update(state=np.full(4, np.nan)), "CartPoleEnv state is malformed"),
    (lambda d: _cartpole_layer(d, "CartPoleEnv").update(state=np.zeros(5)), "CartPoleEnv state is malformed"),
    (lambda d: _cartpole_layer(d, "TimeLimit").update(_elapsed_steps=-1), "TimeLimit state is malformed"),
    (lambda d: _cartpole_layer(d, "CartPoleEnv").update(render_mode="human"), "CartPoleEnv state is malformed"),
    (lambda d: d["own"]["gym"]["envs"][0]["layers"].pop(0), "saved gymnasium env is"),
    (lambda d: d["own"]["gym"]["envs"][0].update(np_random={"bit_generator": "MT19937"}), "not a PCG64 state"),
    (lambda d: d["own"]["gym"]["envs"][0]["np_random"].update(state=5), "random generator state is malformed"),
    (lambda d: d["own"]["physics"][1].update(gravity=math.inf), "physics are malformed"),
    (lambda d: d["own"].update(variant="reversed"), "is of cartpole:reversed, this world is cartpole:heavy-pole"),
    (lambda d: d["own"]["gym"].update(env_id="Evil-v0"), "is of gym:Evil-v0, this world is gym:CartPole-v1"),
  ],
)
def test_malformed_cartpole_states_are_one_line_errors(change, message):
  w = worlds.make("cartpole:heavy-pole", num_envs=2)
  with pytest.raises(worlds.WorldStateError, match=message) as info:
    w.set_state(_retouched(_cartpole_state(), change))
  assert one_line(str(info.value))


def test_malformed_minatar_states_are_one_line_errors():
  pytest.importorskip("minatar")
  w = worlds.make("minatar:Breakout", num_envs=1, seed=1)
  w.reset()
  w.step(np.array([1]))
  state = w.get_state()

  def game(d):
    return d["own"]["envs"][0]["game"]["attrs"]

  cases = [
    (lambda d: game(d).update(pos=99), "does not render"),
    (lambda d: game(d).update(brick_map=np.zeros((3, 3))), "'brick_map' is .* which does not fit this world"),
    (lambda d: game(d).update(ball_x="left"), "'ball_x' is left, which does not fit this world"),
    (lambda d: d["own"]["envs"][0]["environment"]["attrs"].update(sticky_action_prob=0.9), "sticky_action_prob"),
    (lambda d: game(d).pop("strike"), "names other attributes"),
    (lambda d: d["own"]["envs"][0]["random_states"][0]["state"].update(key=np.zeros(3, np.uint32)), "key is"),
    (lambda d: d["own"]["envs"][0]["game"]["rngs"].update(random=5), "'random' is malformed"),
    (lambda d: d["own"].update(game="Seaquest"), "is of minatar:Seaquest, this world is minatar:Breakout"),
  ]
  for change, message in cases:
    with pytest.raises(worlds.WorldStateError, match=message) as info:
      worlds.make("minatar:Breakout", num_envs=1).set_state(_retouched(state, change))
    assert one_line(str(info.value))


def test_malformed_atari_states_are_one_line_errors():
  w = worlds.make("atari:Pong", num_envs=1, seed=1)
  w.reset()
  state = w.get_state()
  cases = [
    (lambda d: d["own"].update(ale=[b"\x00" * 50]), "emulator state of env 0 is unreadable"),
    (lambda d: d["own"].update(ale=[d["own"]["ale"][0][:100]]), "emulator state of env 0 is unreadable"),
    (lambda d: d["own"].update(ale=["text"]), "1 emulator states and random generators expected"),
    (lambda d: d["own"]["newest"].__setitem__(0, 2), "out of range in env 0"),
    (lambda d: d["own"].update(frames=np.zeros((1, 2, 3, 3, 3), np.uint8)), "frames is uint8"),
    (lambda d: d["own"].update(rng=[None]), "a random generator is missing"),
  ]
  for change, message in cases:
    other = worlds.make("atari:Pong", num_envs=1)
    with pytest.raises(worlds.WorldStateError, match=message) as info:
      other.set_state(_retouched(state, change))
    assert one_line(str(info.value))
    other.reset()


# ------------------------------------------------------------------ checkpoints


def _saved(state):
  return {"crc32": plain.checksum(state), "data": state}


@pytest.mark.parametrize(
  "saved, problem",
  [
    (None, None),
    ("gASVKgAAAAAAAACMBXBvc2l4lIwGc3lzdGVtlJOU", "old pickled format"),  # base64 text, never decoded
    ({"crc32": 0, "data": "x"}, "does not match the checksum"),
    (_saved("gASVKgAAAAAAAAA"), "saved world state is malformed"),
    ({"data": {}}, "its world state is malformed"),
    ([1, 2], "its world state is malformed"),
  ],
)
def test_restore_world_never_raises_and_says_what_stopped_it(saved, problem):
  got = _restore_world(worlds.make("toy:chain", num_envs=3), saved)
  assert got == problem if problem is None else (problem in got and one_line(got))


def test_restore_world_restores_a_good_state():
  world = worlds.make("toy:chain", num_envs=3)
  assert _restore_world(world, json.loads(json.dumps(_saved(_chain_state())))) is None
  assert world.step(np.array([1, 1, 1])).obs.argmax(1).tolist() == [3, 3, 1]


@pytest.mark.parametrize(
  "saved",
  [
    [1, 2],
    {"action": [0, 1, 1]},
    {"action": [0, 1, 1], "left": [0, 2]},
    {"action": [0, 1, 2], "left": [0, 2, 0]},  # toy:chain has 2 actions
    {"action": [0, 1, 1], "left": [0, -1, 0]},
    {"action": [0, 1, 1], "left": [0, 2, 2**40]},
    {"action": [0, 1.0, 1], "left": [0, 2, 0]},
    {"action": [0, 1, 1], "left": [0, True, 0]},
    "a\nb",
  ],
)
def test_damaged_exploratory_repeats_are_one_line_errors(saved):
  config = config_lib.Config(world="toy:chain", num_envs=3, replay_capacity=1000, explore_epsilon=0.1)
  parts = Parts(config, None, worlds.make("toy:chain", num_envs=3), None, None, None, None)
  with pytest.raises(ckpt_lib.CheckpointError, match="damaged exploratory repeats") as e:
    _saved_repeats(saved, parts, "checkpoint 'c'")
  assert one_line(str(e.value))


def test_saved_exploratory_repeats_restore_this_process_rows_cut_to_the_longest_repeat():
  config = config_lib.Config(world="toy:chain", num_envs=3, replay_capacity=1000, explore_max_repeat=50)
  world = worlds.make("toy:chain", num_envs=2)
  saved = {"action": [0, 1, 1], "left": [0, 2, 80]}  # written when explore_max_repeat was larger
  every = _saved_repeats(saved, Parts(config, None, world, None, None, None, None), "checkpoint 'c'")
  assert every.action.tolist() == [0, 1, 1] and every.left.tolist() == [0, 2, 50]
  own = _saved_repeats(saved, Parts(config, None, world, None, None, None, None, rows=slice(1, 3)), "c")
  assert own.action.tolist() == [1, 1] and own.left.tolist() == [2, 50]
  assert _saved_repeats(
    None, Parts(config, None, world, None, None, None, None, rows=slice(1, 3)), "c"
  ).left.tolist() == [0, 0]


@pytest.mark.parametrize(
  "saved",
  [
    [[0.5, 1.0], [0.5, 1.0]],  # 2 rows for 3 envs
    [[0.5, 1.0], [0.5, 1.0], [0.5]],  # toy:chain has 2 actions
    [[0.5, 1.0], [0.5, 1.0], [0.5, float("nan")]],
    [[0.5, 1.0], [0.5, 1.0], [0.5, 1e300]],  # finite as a Python float, not as float32
    [[0.5, 1.0], [0.5, 1.0], [0.5, 1]],  # an int where a float was written
    [[0.5, 1.0], [0.5, 1.0], [0.5, True]],
    {"a": [0.5, 1.0]},
    "a\nb",
  ],
)
def test_damaged_held_noise_is_a_one_line_error(saved):
  config = config_lib.Config(world="toy:chain", num_envs=3, replay_capacity=1000, noise_hold="episode")
  parts = Parts(config, None, worlds.make("toy:chain", num_envs=3), None, None, None, None)
  with pytest.raises(ckpt_lib.CheckpointError, match="damaged held noise") as e:
    _saved_held(saved, parts, "checkpoint 'c'")
  assert one_line(str(e.value))


def test_saved_held_noise_restores_this_process_rows_exactly():
  config = config_lib.Config(world="toy:chain", num_envs=3, replay_capacity=1000, noise_hold="episode")
  noise = np.float32([[0.1, -1.3], [2.7, 0.25], [-0.6, 5.1]])
  saved = json.loads(json.dumps(noise.tolist()))  # as the meta's JSON holds it
  world = worlds.make("toy:chain", num_envs=2)
  own = _saved_held(saved, Parts(config, None, world, None, None, None, None, rows=slice(1, 3)), "c")
  assert own.dtype == np.float32 and (own == noise[1:]).all()  # float32 -> JSON -> float32 is exact


def test_a_planted_pickle_in_a_checkpoint_never_runs(debug_run, tmp_path, payload, capsys):
  """The issue's attack: the checkpoint's meta item carries a pickle whose unpickling runs a command (here:
  creates a file). Resuming ignores it with one warning and starts new episodes; the run goes on."""
  data, marker = payload
  config, run_dir, summary = debug_run
  copy = tmp_path / "run"
  shutil.copytree(run_dir, copy)
  step = max(int(p.name) for p in (copy / "checkpoints").iterdir())
  meta_file = copy / "checkpoints" / str(step) / "meta" / "metadata"
  meta = json.loads(meta_file.read_text())
  assert meta["world_state"]["crc32"] == plain.checksum(meta["world_state"]["data"])  # what a save writes
  meta["world_state"] = base64.b64encode(data).decode()  # the old format: base64 of a pickle
  meta_file.write_text(json.dumps(meta))
  capsys.readouterr()
  more = config_lib.load("debug", ["stop_return=inf", f"total_env_steps={summary['env_steps'] + 8}"])
  resumed = train(more, copy, console=False)
  assert not marker.exists()
  assert resumed["resumed_from"] == step and resumed["env_steps"] >= summary["env_steps"] + 8
  warnings = [line for line in capsys.readouterr().err.splitlines() if line.startswith("dreamer: warning:")]
  assert len(warnings) == 1 and "old pickled format, which is never loaded" in warnings[0], warnings
  assert "the run resumes with new episodes" in warnings[0]
