"""Keeps a finished run's evidence small enough to commit: `python scripts/archive_run.py RUN_DIR DEST --commit C
--command "dreamer train ..."` writes DEST/config.json (as is), DEST/metrics.jsonl thinned to every evaluation,
every event (resume, diverged), the closing summary and one training record per `--every` env steps, and
DEST/run.json (the commit and command that made it, and what was left out). `dreamer compare --runs DEST...` and
`dreamer runs` read an archived run like the original: they use its evaluations and summary only.

A 100k-step MinAtar run's metrics.jsonl is ~2 MB (a record per chunk); its archive is ~30 kB.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

from dreamer.logger import read_metrics


def thin(records: list[dict], every: int) -> list[dict]:
  """The records kept: evaluations, events and summaries all, training records the first at or past each
  multiple of `every` env steps."""
  kept, next_step = [], 0
  for r in records:
    if "eval/search_return" in r or "event" in r or r.get("summary"):
      kept.append(r)
    elif r.get("env_steps", 0) >= next_step:
      kept.append(r)
      next_step = (r.get("env_steps", 0) // every + 1) * every
  return kept


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("run_dir", type=Path)
  parser.add_argument("dest", type=Path)
  parser.add_argument("--commit", required=True, help="the commit the run was trained at")
  parser.add_argument("--command", required=True, help="the command that trained it")
  parser.add_argument("--every", type=int, default=5000, help="env steps between kept training records")
  args = parser.parse_args()
  records = read_metrics(args.run_dir)
  if not any(r.get("summary") for r in records):
    raise SystemExit(f"archive_run: {str(args.run_dir)!r} has no closing summary: finish the run first")
  kept = thin(records, args.every)
  args.dest.mkdir(parents=True, exist_ok=True)
  shutil.copyfile(args.run_dir / "config.json", args.dest / "config.json")
  with open(args.dest / "metrics.jsonl", "w") as f:
    f.writelines(json.dumps(r) + "\n" for r in kept)
  run = {"commit": args.commit, "command": args.command, "records": len(records), "kept": len(kept)}
  (args.dest / "run.json").write_text(json.dumps(run, indent=2) + "\n")
  print(json.dumps({"dest": str(args.dest), **run}))


if __name__ == "__main__":
  main()
