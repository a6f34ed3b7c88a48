"""Trains a preset over several seeds and reports, per seed, when evaluation with search first reached a return.

Prints JSON: for each seed the env steps, wall-clock seconds and updates at the first evaluation whose mean
return acting with search was >= --threshold, and the policy-network-only return at that evaluation.
Runs one seed after another (so wall-clock figures are not shared between runs).

  python scripts/solve_time.py --config cartpole --seeds 0 1 2 --threshold 475 [--set key=value ...]
  python scripts/solve_time.py --runs RUN_DIR ...   # only read finished runs
  python scripts/solve_time.py --config debug --seeds 0 --threshold 1 --within-s 60   # the debug preset's budget
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from dreamer.compare import evaluations, first_reach  # noqa: E402
from dreamer.logger import read_metrics  # noqa: E402


def reach_of_run(run_dir: Path, threshold: float) -> dict:
  """The run's first evaluation whose return acting with search was >= `threshold`, and its eval curve."""
  evals = evaluations(read_metrics(run_dir))
  curve = [(r["env_steps"], r["eval/search_return"], r["eval/policy_return"]) for r in evals]
  i = first_reach([r["eval/search_return"] for r in evals], threshold)
  if i is None:
    return {"run": str(run_dir), "reached": False, "curve": curve}
  r = evals[i]
  return {
    "run": str(run_dir),
    "reached": True,
    "env_steps": r["env_steps"],
    "wall_s": r["wall_s"],
    "updates": r["updates"],
    "search_return": r["eval/search_return"],
    "policy_return": r["eval/policy_return"],
    "curve": curve,
  }


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--config", default="cartpole")
  parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
  parser.add_argument("--threshold", type=float, default=475.0)
  parser.add_argument("--set", action="append", default=[], dest="overrides", metavar="KEY=VALUE")
  parser.add_argument("--logdir", help="keep the runs here (default: a temporary directory)")
  parser.add_argument("--runs", nargs="+", help="read these finished run directories instead of training")
  parser.add_argument(
    "--within-s",
    type=float,
    metavar="S",
    help="also report whether each run reached the threshold within S wall-clock seconds (the debug preset's "
    "budget is 60: --config debug --threshold 1 --within-s 60)",
  )
  args = parser.parse_args()
  commit = subprocess.run(
    ["git", "rev-parse", "HEAD"], cwd=Path(__file__).resolve().parent.parent, capture_output=True, text=True
  ).stdout.strip()
  results = []
  if args.runs:
    results = [reach_of_run(Path(r), args.threshold) for r in args.runs]
  else:
    with tempfile.TemporaryDirectory() as tmp:
      root = Path(args.logdir or tmp)
      for seed in args.seeds:
        run_dir = root / f"{Path(args.config).stem}-seed{seed}"
        cmd = [
          sys.executable,
          "-m",
          "dreamer.cli",
          "train",
          "--config",
          args.config,
          "--seed",
          str(seed),
          "--logdir",
          str(run_dir),
          "--quiet",
        ] + [f"--set={o}" for o in args.overrides]
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
        results.append({"seed": seed, **reach_of_run(run_dir, args.threshold)})
  reached = [r for r in results if r["reached"]]
  summary = {
    "config": args.config,
    "overrides": args.overrides,
    "threshold": args.threshold,
    "commit": commit,
    "reached": f"{len(reached)}/{len(results)}",
    "runs": results,
  }
  if args.within_s is not None:
    summary["within_s"] = args.within_s
    summary["reached_within_s"] = f"{sum(r['wall_s'] <= args.within_s for r in reached)}/{len(results)}"
  if reached:
    summary["median_env_steps"] = statistics.median(r["env_steps"] for r in reached)
    summary["median_wall_s"] = statistics.median(r["wall_s"] for r in reached)
  print(json.dumps(summary, indent=1))


if __name__ == "__main__":
  main()
