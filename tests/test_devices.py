"""Data parallelism over simulated CPU devices (`dreamer/devices.py`): D devices learn what one device learns.

Each test runs its JAX work in a child process started with XLA_FLAGS=--xla_force_host_platform_device_count=4
(the flag is read once, when JAX starts), and compares what the child wrote. One device and four differ only in
the order of floating-point sums (the gradient all-reduce, the split cumulative sum of priorities), so losses
and parameters agree to a tolerance while the replay, written by acting, is identical.
"""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np

from dreamer import checkpoint as ckpt_lib
from dreamer import config as config_lib
from dreamer import devices as devices_lib
from dreamer.agent import load_checkpoint
from dreamer.logger import read_metrics

# The debug preset cut to a fixed length; 8 updates a chunk.
OVERRIDES = ["stop_return=inf", "total_env_steps=800", "checkpoint_every_updates=16"]
RTOL = 1e-4  # losses, relative
ATOL = 1e-4  # parameters and priorities, absolute (they are O(1))


def _child(*code: str, devices: int = 4) -> dict:
  """Runs the pieces of `code`, each dedented, (which may print one JSON line last) in a Python with `devices`
  simulated CPU devices."""
  env = {**os.environ, "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}", "JAX_PLATFORMS": "cpu"}
  prelude = "import json, dataclasses\nimport jax, numpy as np\nfrom dreamer import config as config_lib\n"
  source = prelude + "\n".join(textwrap.dedent(c) for c in code)
  out = subprocess.run([sys.executable, "-c", source], env=env, capture_output=True, text=True, timeout=900)
  assert out.returncode == 0, out.stderr[-3000:]
  lines = out.stdout.strip().splitlines()
  return json.loads(lines[-1]) if lines else {}


FILLED = """
import worlds
from dreamer import replay as replay_lib
from dreamer.agent import Agent

def filled(config, steps=100):
  # An agent (on config.devices) with a replay filled by 100 acting steps of its initial parameters.
  world = worlds.make(config.world, num_envs=config.num_envs, seed=0)
  agent = Agent(config, world.spec)
  state, rb = agent.init(jax.random.PRNGKey(0))
  obs, key = world.reset(0), jax.random.PRNGKey(1)
  for t in range(steps):
    key, k = jax.random.split(key)
    out = agent.act(state.params, obs, k, 1.0)
    action = np.asarray(out.action)
    step = world.step(action)
    e = config.num_envs
    row = replay_lib.Rows(obs, action, step.reward, np.asarray(out.policy), np.asarray(out.value),
                          np.zeros(e, bool), np.zeros(e, bool), np.full(e, t * e, np.int32))
    rb = agent.add(rb, row, step.final_obs, step.terminated | step.truncated, step.terminated)
    obs = step.obs
  return agent, state, rb
"""


COLLECTIVES = """
import re

def collectives(hlo):
  # The number of collectives in compiled HLO text and the bytes of the biggest one's result.
  sizes = {"f32": 4, "s32": 4, "u32": 4, "pred": 1, "u8": 1, "bf16": 2}
  kinds = "all-gather|all-reduce|reduce-scatter|all-to-all|collective-permute"
  biggest, count = 0, 0
  for line in hlo.splitlines():
    found = re.search(rf"= (.*?) ({kinds})(-start)?\\(", line)
    if found:
      count += 1
      for dtype, dims in re.findall(r"(f32|s32|u32|pred|u8|bf16)\\[([0-9,]*)\\]", found.group(1)):
        biggest = max(biggest, sizes[dtype] * int(np.prod([int(x) for x in dims.split(",") if x])))
  return {"count": count, "biggest": biggest}
"""


def test_four_devices_update_as_one_update_by_update(tmp_path):
  """The same filled replay, 16 updates: every update's losses within RTOL, then parameters and priorities
  within ATOL, the replay's rows identical, the replay still split over the four devices, and no collective
  that moves the replay."""
  code = f"""
  out = {{}}
  for d in (1, 4):
    agent, state, rb = filled(config_lib.load("debug", {OVERRIDES!r} + [f"devices={{d}}"]))
    metrics = []
    for _ in range(2):
      state, rb, m = agent.train_chunk(state, rb, jax.numpy.int32(800))
      metrics.append({{k: np.asarray(v).tolist() for k, v in m.items()}})
    out[d] = {{"metrics": metrics, "obs_devices": len(rb.rows.obs.sharding.device_set),
              "param_devices": len(jax.tree.leaves(state.params)[0].sharding.device_set)}}
    np.savez("{tmp_path}/" + str(d) + ".npz", *jax.tree.leaves(state.params), *jax.tree.leaves(rb))
  out["collectives"] = collectives(agent.train_chunk.lower(state, rb, jax.numpy.int32(800)).compile().as_text())
  out["collectives"]["obs_bytes"] = rb.rows.obs.nbytes
  print(json.dumps(out))
  """
  out = _child(FILLED, COLLECTIVES, code)
  one, four = out["1"], out["4"]
  # No collective (all-gather, all-reduce, ...) of the compiled four-device chunk carries as many bytes as a
  # quarter of the replay's observations: samples are gathered where their rows live, the replay never moves.
  # There are collectives at all: the gradients are reduced over the devices.
  assert out["collectives"]["count"] > 0
  assert out["collectives"]["biggest"] < out["collectives"]["obs_bytes"] / 4, out["collectives"]
  assert (four["obs_devices"], four["param_devices"]) == (4, 4)
  for m1, m4 in zip(one["metrics"], four["metrics"], strict=True):
    for key in m1:
      np.testing.assert_allclose(m4[key], m1[key], rtol=RTOL, atol=1e-6, err_msg=key)
  a, b = np.load(tmp_path / "1.npz"), np.load(tmp_path / "4.npz")
  for name in a.files:
    if a[name].dtype.kind in "biu":
      np.testing.assert_array_equal(a[name], b[name], err_msg=name)  # rows, heads: exact
    else:
      np.testing.assert_allclose(a[name], b[name], atol=ATOL, err_msg=name)


def _run(config_args: list[str], run_dir, stop: int | None = None) -> str:
  return f"train(config_lib.load('debug', {OVERRIDES + config_args!r}), {str(run_dir)!r}, console=False, " + (
    f"stop_after_updates={stop})" if stop else ")"
  )


def _losses(run_dir) -> dict[int, float]:
  return {r["updates"]: r["loss/total"] for r in read_metrics(run_dir) if "loss/total" in r}


def _assert_same_run(a: ckpt_lib.Saved, b: ckpt_lib.Saved, *, atol: float = ATOL) -> None:
  """What the worlds wrote to the replay (observations, actions, rewards, episode ends) and every counter
  identical; parameters, optimizer state, priorities and the search statistics of acting within `atol`."""
  fa, fb = ckpt_lib.flatten((a.params, a.state)), ckpt_lib.flatten((b.params, b.state))
  assert fa.keys() == fb.keys() and a.step == b.step
  for key in fa:
    x, y = np.asarray(fa[key]), np.asarray(fb[key])
    if x.dtype.kind in "biu" or key.endswith(("rows_obs", "rows_reward")):
      np.testing.assert_array_equal(x, y, err_msg=key)
    else:
      np.testing.assert_allclose(x, y, atol=atol, err_msg=key)


def test_a_four_device_run_trains_as_one_and_resumes_on_two(tmp_path):
  """Whole training runs (acting, replay, learning, checkpoints): 16 updates on four devices equal 16 on one;
  the four-device run then resumes on two devices, the one-device run on one, and 8 updates on they agree."""
  one, four = tmp_path / "one", tmp_path / "four"
  hold = "noise_hold=episode"  # acting's held noise rides along, split over the devices like the observations
  _child(
    f"from dreamer.train import train\n{_run(['devices=1', hold], one, 16)}\n{_run(['devices=4', hold], four, 16)}"
  )
  _assert_same_run(load_checkpoint(one), load_checkpoint(four))
  l1, l4 = _losses(one), _losses(four)
  assert l1.keys() == l4.keys() and l1
  np.testing.assert_allclose([l4[k] for k in l1], list(l1.values()), rtol=RTOL)
  _child(
    f"from dreamer.train import train\n{_run(['devices=2', hold], four, 24)}\n{_run(['devices=1', hold], one, 24)}"
  )
  resumed = [r for r in read_metrics(four) if r.get("event") == "resume"]
  assert resumed and resumed[-1]["changed"] == {"devices": [4, 2]}
  _assert_same_run(load_checkpoint(one), load_checkpoint(four))


BAD = [
  (["devices=5"], "devices 5 is more than the 4 cpu device(s) JAX sees; allowed: 0 (automatic) or 1..4"),
  (["devices=4", "batch_size=66"], "batch_size 66 does not divide over devices 4"),
  (["devices=4", "num_envs=6"], "num_envs 6 does not divide over devices 4"),
]


def test_device_counts_chosen_and_refused(tmp_path):
  """devices=0 takes the largest count dividing the batch and the environments; a count that does not fit is
  one line, raised before the run directory gets its config."""
  runs = "\n".join(
    f"try:\n  {_run(overrides, tmp_path / str(i))}\nexcept config_lib.ConfigError as e:\n  errors.append(str(e))"
    for i, (overrides, _) in enumerate(BAD)
  )
  code = """
  from dreamer import devices
  from dreamer.train import train
  counts = {f"{b},{e}": devices.layout(config_lib.Config(batch_size=b, num_envs=e)).count
            for b, e in [(64, 8), (64, 2), (6, 8), (7, 8)]}
  errors = []
  """
  out = _child(code, runs, "print(json.dumps({'counts': counts, 'errors': errors}))")
  assert out["counts"] == {"64,8": 4, "64,2": 2, "6,8": 2, "7,8": 1}
  assert len(out["errors"]) == len(BAD)
  for (_, message), error in zip(BAD, out["errors"], strict=True):
    assert message in error and "\n" not in error
  assert not list(tmp_path.rglob("config.json"))


def test_one_device_keeps_plain_device_arrays():
  """On one device nothing is laid out: a run is what it was before devices were a setting."""
  layout = devices_lib.layout(config_lib.Config(devices=1))
  state, rb = layout.place({"w": np.ones(3)}, {"x": np.zeros(2)})
  assert layout.count == 1 and not isinstance(state["w"].sharding, type(layout.split))
  assert json.dumps(rb["x"].tolist()) == "[0.0, 0.0]"


def test_compare_gives_each_concurrent_run_a_device_of_its_own(tmp_path):
  """`dreamer compare --devices 2` with 4 simulated devices: the grid's two runs train at once, one on device 0
  and one on device 1 (each run's summary names its devices); --devices 5 is one line."""
  grid = ["compare", "--config", "debug", "--grid", "num_simulations=2,4", "--seeds", "0", "--quiet"]
  grid += ["--set", "total_env_steps=400", "--set", "stop_return=inf", "--logdir", str(tmp_path / "grid")]
  code = f"""
  import contextlib, io
  from dreamer import cli
  codes = [cli.main({grid + ["--devices", "2"]!r})]
  err = io.StringIO()
  with contextlib.redirect_stderr(err):
    codes.append(cli.main({grid + ["--devices", "5", "--logdir", str(tmp_path / "none")]!r}))
  print(json.dumps({{"codes": codes, "error": err.getvalue()}}))
  """
  out = _child(code)
  assert out["codes"] == [0, 2]
  assert out["error"].strip() == "dreamer: error: --devices 5 is more than the 4 cpu device(s) JAX sees"
  runs = sorted((tmp_path / "grid").rglob("metrics.jsonl"))
  assert len(runs) == 2
  used = [read_metrics(r.parent)[-1]["devices"] for r in runs]
  assert sorted(used) == [["cpu:0"], ["cpu:1"]], used
  starts = [json.loads((r.parent / "config.json").read_text())["first_device"] for r in runs]
  assert sorted(starts) == [0, 1]
