"""`dreamer runs DIR`: the training runs under a folder, one line each, with their state and latest numbers.

A run directory is one holding `config.json` and `metrics.jsonl` (as `dreamer train --logdir` writes them).
Its status is, in this order:
  running     a live process holds its lock (`dreamer/runlock.py`); `reason` names the holder;
  diverged    its last state in metrics.jsonl is a `{"event": "diverged"}` record; `reason` is its error;
  finished    its closing summary reached total_env_steps or solved (stop_return), and nothing stopped it;
  stopped     its closing summary says what stopped it (`reason`: SIGINT, SIGTERM, stop_after_updates), or it
              has no closing summary and no process holds it (`reason`: killed);
  unreadable  config.json or metrics.jsonl cannot be read; `reason` says why.
`preset` is the config's `preset` key (the name or path given to `--config`); None ('—') for runs made before
it was recorded or without a preset.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from dreamer import compare, dream_ratio, runlock
from dreamer import config as config_lib
from dreamer.logger import read_metrics

FIELDS = (
  "path",
  "world",
  "preset",
  "env_steps",
  "updates",
  "search_best",
  "search_last",
  "policy_best",
  "policy_last",
  "wall_s",
  "dream_ratio",
  "status",
  "reason",
)


def find(root: str | Path) -> list[Path]:
  """The run directories at or under `root` (links to directories are not followed), sorted by path."""
  found = [Path(d) for d, _, files in os.walk(root) if "config.json" in files and "metrics.jsonl" in files]
  return sorted(found, key=lambda p: p.relative_to(root).parts)


def status(records: Sequence[dict[str, Any]], *, total_env_steps: Any, holder: str | None) -> tuple[str, str | None]:
  """(status, reason) of a run from its metrics (`read_metrics`), its config's total_env_steps and the holder of
  its lock (`runlock.holder`)."""
  if holder is not None:
    return "running", holder
  # A resume marker opens a new segment: a divergence or summary before it no longer says how the run ended.
  end = next((r for r in reversed(records) if r.get("summary") or r.get("event") in ("diverged", "resume")), None)
  if end is None or end.get("event") == "resume":
    return "stopped", "killed"
  if end.get("event") == "diverged":
    return "diverged", str(end.get("error", "non-finite loss or weights"))
  if end.get("stopped") is not None:
    return "stopped", str(end["stopped"])
  steps = end.get("env_steps")
  reached = _number(steps) is not None and _number(total_env_steps) is not None and steps >= total_env_steps
  if end.get("solved") is True or reached:
    return "finished", None
  # A summary short of the config's total: a resume with a larger total_env_steps was killed before it logged.
  return "stopped", "killed"


def _number(value: Any) -> float | None:
  """`value` as a float when metrics.jsonl holds a finite number there (the logger writes non-finite ones as
  null), else None."""
  if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
    return float(value)
  return None


def _latest(records: Sequence[dict[str, Any]], key: str) -> Any:
  """The newest record's value of `key`, None when no record has it."""
  return next((r[key] for r in reversed(records) if _number(r.get(key)) is not None), None)


def _returns(records: Sequence[dict[str, Any]], key: str) -> tuple[float | None, float | None]:
  """(best, last) of evaluation metric `key` over the run's evaluations (the closing summary repeats the last)."""
  values = [_number(r.get(key)) for r in compare.evaluations(records)]
  finite = [v for v in values if v is not None]
  return (max(finite) if finite else None), (values[-1] if values else None)


def _dream_ratio(records: Sequence[dict[str, Any]], config: dict[str, Any], run_dir: Path) -> float | None:
  """The run's own count (its summary's, or its newest training record's), or for runs from before the count
  the same count rebuilt from its counters, as `compare.load_run` does; None when the config no longer loads."""
  logged = _latest(records, "dream/ratio")
  if logged is not None:
    return float(logged)
  env_steps, updates = int(_latest(records, "env_steps") or 0), int(_latest(records, "updates") or 0)
  try:
    resolved = config_lib.from_dict(config, str(run_dir / "config.json"))
  except config_lib.ConfigError:
    return None
  return dream_ratio.Dreams.rebuilt(resolved, env_steps, updates).record(env_steps)["dream/ratio"]


def _config(run_dir: Path) -> dict[str, Any]:
  """The run's config.json; ValueError naming the file when it cannot be read."""
  try:
    config = json.loads((run_dir / "config.json").read_text())
  except (OSError, ValueError) as e:
    raise ValueError(f"config.json: {getattr(e, 'strerror', None) or e}") from None
  if not isinstance(config, dict):
    raise ValueError("config.json: not a JSON object")
  return config


def _metrics(run_dir: Path) -> list[dict[str, Any]]:
  """The run's `read_metrics`; ValueError naming the file (and line) when it cannot be read."""
  try:
    return read_metrics(run_dir)
  except OSError as e:
    raise ValueError(f"metrics.jsonl: {e.strerror or e}") from None
  except ValueError as e:  # MetricsError puts the run directory in front: the row shows that already
    raise ValueError(str(e).replace(f"{run_dir}/", "")) from None


def describe(run_dir: str | Path, *, root: str | Path) -> dict[str, Any]:
  """One run's row: every key of FIELDS, `path` relative to `root`, None where a value is unknown."""
  run_dir = Path(run_dir)
  row: dict[str, Any] = dict.fromkeys(FIELDS)
  row["path"] = str(run_dir.relative_to(root))
  try:
    config = _config(run_dir)
    row["world"] = config.get("world")
    row["preset"] = config.get("preset") or None
    records = _metrics(run_dir)
  except ValueError as e:
    return {**row, "status": "unreadable", "reason": str(e)}
  end = next((r for r in reversed(records) if r.get("summary")), {})
  row["status"], row["reason"] = status(
    records, total_env_steps=config.get("total_env_steps"), holder=runlock.holder(run_dir)
  )
  row["search_best"], row["search_last"] = _returns(records, "eval/search_return")
  row["policy_best"], row["policy_last"] = _returns(records, "eval/policy_return")
  return {
    **row,
    "env_steps": _latest(records, "env_steps"),
    "updates": _latest(records, "updates"),
    "wall_s": _number(end.get("wall_s")) if end else _number(_latest(records, "wall_s")),
    "dream_ratio": _dream_ratio(records, config, run_dir),
  }


def listing(root: str | Path) -> list[dict[str, Any]]:
  """The rows of every run under `root`; ConfigError (one line) when `root` is not a directory or holds none."""
  root = Path(root)
  if not root.is_dir():
    raise config_lib.ConfigError(f"{str(root)!r} is not a directory")
  found = find(root)
  if not found:
    raise config_lib.ConfigError(
      f"no runs under {str(root)!r}: a run directory holds config.json and metrics.jsonl "
      f"(as written by dreamer train --logdir DIR)"
    )
  return [describe(d, root=root) for d in found]


def _cell(key: str, value: Any) -> str:
  if value is None:
    return "—"
  if key in ("search_best", "search_last", "policy_best", "policy_last"):
    return f"{value:.2f}"
  if key == "wall_s":
    return f"{value:.0f}"
  if key == "dream_ratio":
    return f"{value:.1f}"
  return str(value)


def table(rows: Sequence[dict[str, Any]]) -> str:
  """Aligned plain text: a header and a line per row; text left, numbers right, the status last (with its
  reason in parentheses, except a divergence's long error: see --json) so a long one widens nothing."""
  keys = FIELDS[:-2]
  lines = [[*keys, "status"]]
  for row in rows:
    reason = row["reason"] if row["reason"] is not None and row["status"] != "diverged" else None
    lines.append([_cell(k, row[k]) for k in keys] + [row["status"] + (f" ({reason})" if reason else "")])
  widths = [max(len(line[i]) for line in lines) for i in range(len(keys))]
  left = {"path", "world", "preset"}
  out = []
  for line in lines:
    cells = [c.ljust(w) if k in left else c.rjust(w) for k, c, w in zip(keys, line, widths)]
    out.append("  ".join(cells + [line[-1]]))
  return "\n".join(out)
