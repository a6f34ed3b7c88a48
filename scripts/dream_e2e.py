"""End-to-end measurement of `dreamer dream`: train on task A, record a short stretch of play on task B, dream,
and compare with the compute-matched control; prints JSON.

Per seed: `dreamer train` on A; `dreamer play` on A (the anchor) and on B; `dreamer dream` with the anchor, and
the same with `--control` (real-data fine-tuning of the same model-step compute, no imagination). Then
`dreamer eval` of the checkpoint and of both outputs (the accepted weights, or the original ones where the
gate rejected) on B and A, on evaluation episodes the jobs never saw (and no two seeds share): the gate chose
on its own episodes, so its figures are biased upward, and these are not. Across seeds, from those fresh
episodes: the rise of B's policy-only return (dream and control), dream minus control, and the fraction of
A's policy-only return kept, each with a 95% percentile-bootstrap CI over seeds; the gate's own figures are
listed beside them. Every step skips what a previous invocation finished, so the command can be re-issued.

  python scripts/dream_e2e.py --logdir runs/e2e --task-b cartpole:heavy-pole --seeds 0 1 2 --jobs 2
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import subprocess
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from dreamer import stats  # noqa: E402
from dreamer.suites import commit  # noqa: E402


def sh(args: list[str], log: Path, done: Path) -> None:
  """Runs a dreamer command unless `done` exists; its output goes to `log`."""
  if done.exists():
    return
  with open(log, "w") as f:
    code = subprocess.run([sys.executable, "-m", "dreamer.cli", *args], stdout=f, stderr=subprocess.STDOUT).returncode
  if code != 0:
    raise SystemExit(f"{' '.join(args)} failed with exit code {code}; see {log}")


def eval_seed(seed: int, a: argparse.Namespace) -> int:
  """Seed of `seed`'s fresh evaluation: env i of an evaluation world starts from seed + i, so the seeds are
  strided by the episode count, or two runs' episodes would start from the same states."""
  return a.eval_seed + seed * a.eval_episodes


def kept(after: float, before: float) -> float:
  """The fraction of a return kept, read as the gate reads it (against |before|: -20 -> -21 keeps 95%)."""
  return 1.0 + (after - before) / abs(before) if before else float("nan")


def evaluate(checkpoint: Path, world: str, seed: int, a: argparse.Namespace, out: Path) -> dict:
  """`dreamer eval` JSON (search_return, policy_return, ...) on `a.eval_episodes` fresh episodes, cached."""
  if not out.exists():
    res = subprocess.run(
      [
        sys.executable,
        "-m",
        "dreamer.cli",
        "eval",
        "--checkpoint",
        str(checkpoint),
        "--world",
        world,
        "--episodes",
        str(a.eval_episodes),
        "--seed",
        str(eval_seed(seed, a)),
      ],
      capture_output=True,
      text=True,
    )
    if res.returncode != 0:
      raise SystemExit(f"dreamer eval of {checkpoint} on {world} failed: {res.stderr[-2000:]}")
    out.write_text(res.stdout.strip().splitlines()[-1] + "\n")
  return json.loads(out.read_text())


def one_seed(seed: int, a: argparse.Namespace) -> dict:
  """Every step of one seed (each skipped when a previous invocation finished it): the jobs' reports and the
  fresh evaluations of the checkpoint and of both outputs."""
  root = Path(a.logdir)
  run, anchor, rec = train_and_record(seed, a)
  out = {mode: dream(mode, seed, a, checkpoint=run, experience=rec, anchor=anchor) for mode in ("dream", "control")}
  fresh = {}
  for name, ckpt in (
    ("checkpoint", run),
    ("dream", root / "dream" / f"seed{seed}"),
    ("control", root / "control" / f"seed{seed}"),
  ):
    for task, world in (("B", a.task_b), ("A", a.task_a)):
      # The file name holds what the evaluation depends on, so a changed --eval-* is never served from cache.
      cache = root / f"eval-{name}-{task}-seed{seed}-{a.eval_episodes}x{eval_seed(seed, a)}.json"
      fresh[f"{name}_{task}"] = evaluate(ckpt, world, seed, a, cache)
  return {"reports": out, "fresh": fresh}


def train_and_record(seed: int, a: argparse.Namespace) -> tuple[Path, Path, Path]:
  """`dreamer train` on A, then `dreamer play` on A (the anchor) and on B; (run, anchor, B recording) dirs."""
  root = Path(a.logdir)
  run, anchor, rec = root / "A" / f"seed{seed}", root / "rec" / f"A-seed{seed}", root / "rec" / f"B-seed{seed}"
  for d in (run.parent, rec.parent):
    d.mkdir(parents=True, exist_ok=True)
  # A finished run is a no-op for dreamer train (a stopped one resumes), so training always runs.
  sh(
    [
      *("train", "--config", a.config, "--seed", str(seed), "--logdir", str(run), "--quiet"),
      *("--set", f"world={a.task_a}", *(x for s in a.train_set for x in ("--set", s))),
    ],
    root / f"train-seed{seed}.log",
    root / "never",
  )
  sh(
    ["play", "--checkpoint", str(run), "--steps", str(a.steps), "--seed", str(seed), "--out", str(anchor)],
    root / f"play-A-seed{seed}.log",
    anchor / "experience.json",
  )
  sh(
    [
      "play",
      "--checkpoint",
      str(run),
      "--world",
      a.task_b,
      "--steps",
      str(a.steps),
      "--seed",
      str(seed),
      "--out",
      str(rec),
    ],
    root / f"play-B-seed{seed}.log",
    rec / "experience.json",
  )
  return run, anchor, rec


def dream(mode: str, seed: int, a: argparse.Namespace, *, checkpoint: Path, experience: Path, anchor: Path) -> dict:
  """`dreamer dream` (mode 'dream') or its `--control` (mode 'control') of one seed; its report.json."""
  root = Path(a.logdir)
  d = root / mode / f"seed{seed}"
  d.parent.mkdir(parents=True, exist_ok=True)
  extra = ["--control"] if mode == "control" else []
  sets = [x for s in a.set for x in ("--set", s)]
  sh(
    [
      "dream",
      "--checkpoint",
      str(checkpoint),
      "--experience",
      str(experience),
      "--anchor",
      str(anchor),
      "--budget",
      str(a.budget),
      "--seed",
      str(seed),
      "--out",
      str(d),
      "--quiet",
      *extra,
      *sets,
    ],
    root / f"{mode}-seed{seed}.log",
    d / "report.json",
  )
  return json.loads((d / "report.json").read_text())


def seed_row(r: dict) -> dict:
  """One seed's figures: the checkpoint's fresh returns, and per mode its fresh returns, their rise on B and
  the fraction kept on A, beside the gate's own figures and the job's compute."""
  f = {k: v["policy_return"] for k, v in r["fresh"].items()}
  row = {
    "checkpoint": {
      "B_policy": f["checkpoint_B"],
      "A_policy": f["checkpoint_A"],
      "B_search": r["fresh"]["checkpoint_B"]["search_return"],
      "A_search": r["fresh"]["checkpoint_A"]["search_return"],
    }
  }
  for mode, rep in r["reports"].items():
    b, an = rep["returns"]["experience"]["policy"], rep["returns"]["anchor"]["policy"]
    row[mode] = {
      "B_after": f[f"{mode}_B"],
      "B_rise": f[f"{mode}_B"] - f["checkpoint_B"],
      "A_after": f[f"{mode}_A"],
      "A_kept": kept(f[f"{mode}_A"], f["checkpoint_A"]),
      "B_search_after": r["fresh"][f"{mode}_B"]["search_return"],
      "A_search_after": r["fresh"][f"{mode}_A"]["search_return"],
      "gate": {
        "B_before": b["before"][0],
        "B_after": b["after"][0],
        "A_before": an["before"][0],
        "A_after": an["after"][0],
      },
      "accepted": rep["accepted"],
      "model_steps": sum(v["model_steps"] for k, v in rep["compute"].items() if isinstance(v, dict)),
      "seconds": sum(v["seconds"] for k, v in rep["compute"].items() if isinstance(v, dict)),
    }
  return row


def across_seeds(rows: dict[int, dict]) -> dict[str, list[float]]:
  """[mean, low, high] over seeds (95% percentile bootstrap, a fresh `default_rng(0)` each) of every figure
  the summary compares."""
  seeds = list(rows)
  per_seed = {
    "dream_B_rise": [rows[s]["dream"]["B_rise"] for s in seeds],
    "control_B_rise": [rows[s]["control"]["B_rise"] for s in seeds],
    "dream_minus_control_B": [rows[s]["dream"]["B_after"] - rows[s]["control"]["B_after"] for s in seeds],
    "dream_A_kept": [rows[s]["dream"]["A_kept"] for s in seeds],
    "control_A_kept": [rows[s]["control"]["A_kept"] for s in seeds],
    "gate_dream_B_rise": [rows[s]["dream"]["gate"]["B_after"] - rows[s]["dream"]["gate"]["B_before"] for s in seeds],
  }
  return {name: list(stats.mean_ci(v, rng=np.random.default_rng(0))) for name, v in per_seed.items()}


def parser() -> argparse.ArgumentParser:
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--logdir", required=True)
  p.add_argument("--config", default="cartpole", help="preset that trains task A (default: cartpole)")
  p.add_argument("--task-a", default="gym:CartPole-v1")
  p.add_argument("--task-b", default="cartpole:heavy-pole")
  p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
  p.add_argument("--steps", type=int, default=2000, help="real env steps recorded on B (and on A, the anchor)")
  p.add_argument("--budget", type=float, default=1000.0, help="imagined model steps per real recorded step")
  p.add_argument("--set", action="append", default=[], help="a dream setting for both modes (repeatable)")
  p.add_argument(
    "--train-set", action="append", default=[], help="a setting for training task A (repeatable; e.g. task_input=6)"
  )
  p.add_argument("--eval-episodes", type=int, default=100, help="fresh evaluation episodes per world and mode")
  p.add_argument(
    "--eval-seed",
    type=int,
    default=50_000,
    help="fresh evaluation seeds are this + seed x eval-episodes (disjoint episodes per seed)",
  )
  p.add_argument("--jobs", type=int, default=2)
  return p


def main() -> None:
  a = parser().parse_args()
  Path(a.logdir).mkdir(parents=True, exist_ok=True)
  with concurrent.futures.ThreadPoolExecutor(a.jobs) as pool:
    results = dict(zip(a.seeds, pool.map(lambda s: one_seed(s, a), a.seeds)))
  rows = {seed: seed_row(r) for seed, r in results.items()}
  summary = {
    "commit": commit(),
    "task_a": a.task_a,
    "task_b": a.task_b,
    "steps": a.steps,
    "budget": a.budget,
    "settings": a.set,
    "train_settings": a.train_set,
    "eval_episodes": a.eval_episodes,
    "per_seed": rows,
    **across_seeds(rows),
  }
  print(json.dumps(summary, indent=1))


if __name__ == "__main__":
  main()
