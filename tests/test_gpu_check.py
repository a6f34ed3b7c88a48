"""scripts/gpu_check.py: its smoke run on the CPU (the same code a GPU runs, at tiny sizes, so it cannot rot), the
stop of a part's process at its deadline, the accelerator names, and the install line when a package is missing."""

import argparse
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "gpu_check.py"
sys.path.insert(0, str(SCRIPT.parent))

import gpu_check  # noqa: E402


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
  """(document printed, document written, out folder) of one smoke run."""
  out = tmp_path_factory.mktemp("gpu_check")
  done = subprocess.run(
    [sys.executable, str(SCRIPT), "--smoke", "--out", str(out)], capture_output=True, text=True, timeout=3600
  )
  assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
  return json.loads(done.stdout), json.loads((out / "gpu_check.json").read_text()), out


@pytest.mark.slow
def test_smoke_prints_what_it_writes_and_no_errors(smoke):
  printed, written, _ = smoke
  assert printed == written
  assert printed["errors"] == [] and printed["smoke"] is True
  assert printed["commit"] and printed["budget"]["seconds"] > 0


@pytest.mark.slow
def test_smoke_device_section(smoke):
  device = smoke[0]["device"]
  assert device["backend"] == "cpu" and device["name"] and device["count"] >= 1
  assert device["jax"] and device["jaxlib"] and device["python"]
  assert device["accelerator"] is None  # a CPU is not in the cost model's table


@pytest.mark.slow
def test_smoke_throughput_of_both_presets_and_both_dtypes(smoke):
  # The smoke runs each preset once, the dtypes in turn, the training run's preset in its dtype (float32).
  throughput = smoke[0]["throughput"]
  assert {p: set(d) for p, d in throughput.items()} == {"atari100k": {"bfloat16"}, "atari100k-fast": {"float32"}}
  for preset, by_dtype in throughput.items():
    for dtype, run in by_dtype.items():
      assert "error" not in run, (preset, dtype, run)
      assert "world=atari:Breakout" in run["overrides"] and f"compute_dtype={dtype}" in run["overrides"]
      assert run["settings"]["search"] == ("gumbel" if preset == "atari100k-fast" else "puct")
      for key in ["learner_updates_per_s", "acting_env_steps_per_s", "search_nodes_per_s", "world_env_steps_per_s"]:
        assert run[key] > 0, (preset, dtype, key)
      assert run["compile_s"]["act"] > 0 and run["compile_s"]["train_chunk"] > 0
      assert run["peak_memory"]["bytes"] > 0 and "RSS" in run["peak_memory"]["source"]
      projected = run["projected_run_s"]  # smoke: 64 env steps, learning from the 32nd, 2 envs, chunks of 2
      assert projected["acting_steps"] == 32 and projected["updates"] > 0
      assert projected["learning"] == pytest.approx(projected["updates"] / run["learner_updates_per_s"])
      assert projected["acting"] == pytest.approx(64 / run["acting_env_steps_per_s"])
      assert projected["total_without_eval"] == pytest.approx(projected["learning"] + projected["acting"])


@pytest.mark.slow
def test_smoke_cost_and_achieved_flops(smoke):
  for by_dtype in smoke[0]["throughput"].values():
    for run in by_dtype.values():
      cost = run["cost"]
      assert cost["peak"] is None  # no named peak on a CPU: achieved FLOP/s only
      assert "CPU" in cost["counted_on"]
      for part in ["update", "acting_step"]:
        assert cost[part]["flops"] > 0 and cost[part]["per_s"] > 0
        assert cost[part]["achieved_tflops"] == pytest.approx(cost[part]["flops"] * cost[part]["per_s"] / 1e12)
        assert "fraction_of_peak" not in cost[part]
      assert cost["update"]["per_s"] == run["learner_updates_per_s"]


@pytest.mark.slow
def test_smoke_training_writes_metrics(smoke):
  train, out = smoke[0]["train"], smoke[2]
  assert "error" not in train, train
  assert Path(train["run_dir"]) == out / "train"
  assert train["summary"]["env_steps"] == 64 and train["summary"]["updates"] > 0
  lines = (out / "train" / "metrics.jsonl").read_text().splitlines()
  assert len(lines) == train["metrics"]["records"] >= 1
  assert train["metrics"]["training_records"] >= 1
  assert train["metrics"]["last_training_record"]["updates"] > 0
  assert "world=atari:Breakout" in train["overrides"] and train["preset"] == "atari100k-fast"


def test_a_part_is_stopped_by_sigint_at_its_deadline_and_keeps_what_it_printed():
  # Stands in for a training run: reports, then works until a SIGINT, which it answers by reporting and exiting.
  child = (
    "import json, signal, sys, time\n"
    "signal.signal(signal.SIGINT, lambda *_: (print('@gpu_check ' + json.dumps({'stopped': 'SIGINT'}), flush=True),"
    " sys.exit(0)))\n"
    "print('@gpu_check ' + json.dumps({'summary': {'env_steps': 4}}), flush=True)\n"
    "print('noise on stdout', flush=True)\n"
    "time.sleep(120)\n"
  )
  result = gpu_check.run_part([sys.executable, "-c", child], label="fake", timeout=5, stop_after=5)
  assert result["summary"] == {"env_steps": 4} and result["stopped"] == "SIGINT"
  assert "error" not in result


def test_a_part_past_its_share_is_killed_and_says_so():
  child = (
    "import json, time\nprint('@gpu_check ' + json.dumps({'compile_s': {'act': 1.5}}), flush=True)\ntime.sleep(120)\n"
  )
  result = gpu_check.run_part([sys.executable, "-c", child], label="fake", timeout=3)
  assert result["compile_s"] == {"act": 1.5}
  assert result["error"].startswith("timed out after 3 s")


def test_a_failing_part_reports_the_end_of_its_stderr():
  child = "import sys\nprint('the reason', file=sys.stderr)\nsys.exit(3)\n"
  result = gpu_check.run_part([sys.executable, "-c", child], label="fake", timeout=60)
  assert result["error"].startswith("exit status 3") and "the reason" in result["error"]


def test_errors_are_collected_by_path():
  doc = {"device": {"name": "x"}, "throughput": {"atari100k": {"bfloat16": {"error": "boom", "cost": {"error": "c"}}}}}
  assert gpu_check.errors(doc) == ["/throughput/atari100k/bfloat16: boom", "/throughput/atari100k/bfloat16/cost: c"]


@pytest.mark.parametrize(
  "kind, name",
  [
    ("NVIDIA H200", "h200"),
    ("NVIDIA H100 80GB HBM3", "h100-sxm"),
    ("NVIDIA H100 PCIe", None),  # its peaks are not the SXM part's
    ("NVIDIA A100-SXM4-80GB", "a100-80gb"),
    ("TPU v5 lite", "v5e"),
    ("cpu", None),
  ],
)
def test_accelerator_names(kind, name):
  assert gpu_check.accelerator_name(kind) == name


def test_peaks_for_each_dtype():
  h200 = gpu_check.peaks("NVIDIA H200")  # what the device part and every throughput run report
  assert h200["accelerator"] == "h200" and "H200 datasheet" in h200["peak_source"]
  assert gpu_check.dtype_peak(h200, "bfloat16")["tflops"] == {"bfloat16": 989.4}
  assert gpu_check.dtype_peak(h200, "float32")["tflops"] == {"tfloat32": 494.7, "float32": 67.0}
  cpu = gpu_check.peaks("cpu")
  assert cpu == {"accelerator": None, "peak_tflops": None, "peak_source": None}
  assert gpu_check.dtype_peak(cpu, "float32") is None and gpu_check.dtype_peak({}, "float32") is None


H200 = {
  "accelerator": "h200",
  "peak_tflops": {"float32": 67.0, "tfloat32": 494.7, "bfloat16": 989.4},
  "peak_source": "",
}


def test_achieved_flops_by_hand():
  counts = {"update": {"flops": 2.0e12, "bytes": 8.0}, "acting_step": {"flops": 3.0e9, "bytes": 4.0}}
  run = {"learner_updates_per_s": 10.0, "act_search_s_median": 0.5}
  out = gpu_check.achieved(counts, run=run, peak=gpu_check.dtype_peak(H200, "bfloat16"))
  assert out["update"]["achieved_tflops"] == pytest.approx(20.0)  # 2 TFLOP x 10 per second
  assert out["update"]["fraction_of_peak"] == {"bfloat16": pytest.approx(20.0 / 989.4)}
  assert out["acting_step"]["per_s"] == 2.0 and out["acting_step"]["achieved_tflops"] == pytest.approx(0.006)
  assert out["update"]["bytes"] == 8.0 and counts["update"] == {"flops": 2.0e12, "bytes": 8.0}  # not mutated
  cut = gpu_check.achieved(counts, run={"act_search_s_median": 0.25}, peak=None)  # cut before its learner chunk
  assert cut["update"] == {"flops": 2.0e12, "bytes": 8.0} and cut["acting_step"]["per_s"] == 4.0
  assert "fraction_of_peak" not in cut["acting_step"]


def test_costs_attach_by_preset_and_dtype_over_each_runs_own_peaks_or_say_why_not():
  counts = {"update": {"flops": 1.0e12, "bytes": 1.0}, "acting_step": {"flops": 1.0e9, "bytes": 1.0}}
  throughput = {
    "atari100k": {"float32": {"learner_updates_per_s": 4.0, "device": H200}, "bfloat16": {}},
    "atari100k-fast": {"float32": {"learner_updates_per_s": 4.0}},  # a run cut before it named its device
  }
  counted = {"atari100k": {"float32": counts, "wall_s": 7.0}, "atari100k-fast": {"error": "timed out"}}
  gpu_check.attach_costs(throughput, counted=counted)
  full = throughput["atari100k"]["float32"]["cost"]
  assert full["update"]["achieved_tflops"] == pytest.approx(4.0) and full["count_s"] == 7.0
  assert full["peak"]["tflops"] == {"tfloat32": 494.7, "float32": 67.0}
  assert throughput["atari100k"]["bfloat16"]["cost"] == {"error": "not counted", "count_s": 7.0}
  assert throughput["atari100k-fast"]["float32"]["cost"] == {"error": "timed out", "count_s": None}


@pytest.mark.parametrize("smoke", [False, True])
def test_costs_count_on_the_cpu_once_per_preset_for_its_runs_dtypes(monkeypatch, smoke):
  started = []
  monkeypatch.setattr(gpu_check, "start_part", lambda cmd, **kw: started.append((cmd, kw)) or len(started))
  args = argparse.Namespace(
    presets=list(gpu_check.PRESETS), dtypes=list(gpu_check.DTYPES), smoke=smoke, train_dtype="float32"
  )
  costs = gpu_check.start_costs(args)
  assert set(costs) == set(gpu_check.PRESETS) and len(started) == 2
  for cmd, kw in started:
    assert kw["env"]["JAX_PLATFORMS"] == "cpu"
    i = cmd.index("--dtypes")
    preset, dtypes = cmd[cmd.index("--preset") + 1], cmd[i + 1 : i + 1 + (1 if smoke else 2)]
    pairs = [d for p, d in gpu_check.throughput_pairs(args) if p == preset]
    assert dtypes == pairs and ("--smoke" in cmd) == smoke


@pytest.mark.parametrize("train_dtype", gpu_check.DTYPES)
def test_the_smoke_runs_the_training_runs_preset_in_the_training_runs_dtype(train_dtype):
  args = argparse.Namespace(presets=list(gpu_check.PRESETS), dtypes=list(gpu_check.DTYPES), train_dtype=train_dtype)
  args.smoke = True
  pairs = dict(gpu_check.throughput_pairs(args))  # each preset once: its dtype
  assert pairs[gpu_check.TRAIN_PRESET] == train_dtype and sorted(pairs.values()) == sorted(gpu_check.DTYPES)
  args.smoke = False
  assert len(gpu_check.throughput_pairs(args)) == len(gpu_check.PRESETS) * len(gpu_check.DTYPES)


def test_a_part_started_first_keeps_what_it_printed_while_others_run():
  early = "import json\nprint('@gpu_check ' + json.dumps({'float32': {'update': 1}}), flush=True)\n"
  running = gpu_check.start_part([sys.executable, "-c", early], label="counter", limit="x")
  other = gpu_check.run_part([sys.executable, "-c", "import time; time.sleep(2)"], label="other", timeout=30)
  assert "error" not in other
  result = gpu_check.finish_part(running, timeout=30)
  assert result["float32"] == {"update": 1} and "error" not in result
  assert result["wall_s"] < other["wall_s"]  # when its output ended, not when it was collected (after `other`)


def test_a_missing_package_prints_how_to_install_from_wheels(monkeypatch, capsys, tmp_path):
  monkeypatch.setattr(gpu_check, "NEEDED", ("json", "no_such_module_for_gpu_check"))
  monkeypatch.setattr(gpu_check, "check", lambda args: pytest.fail("the check ran without its packages"))
  monkeypatch.setattr(sys, "argv", ["gpu_check.py", "--out", str(tmp_path)])
  with pytest.raises(SystemExit) as stop:
    gpu_check.main()
  assert stop.value.code == 2
  line = capsys.readouterr().err.strip()
  assert "\n" not in line and "no_such_module_for_gpu_check" in line and "json" not in line.split(":")[1]
  assert "pip install --no-index --find-links wheels -r wheels/requirements.txt" in line
  assert "scripts/wheels.sh" in line


def test_an_out_folder_that_holds_a_check_is_refused(tmp_path, monkeypatch):
  (tmp_path / "gpu_check.json").write_text("{}")
  monkeypatch.setattr(sys, "argv", ["gpu_check.py", "--out", str(tmp_path), "--smoke"])
  with pytest.raises(SystemExit, match="already holds a check"):
    gpu_check.main()
