"""Parameter checkpoints with orbax: `run_dir/checkpoints/<env_steps>/` holds the parameters, the resolved
config and the world spec, enough to evaluate or continue from them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

from dreamer import config as config_lib
from dreamer.networks import Params

FORMAT_VERSION = 1


class CheckpointError(ValueError):
  """A checkpoint path that cannot be used: the message is one line meant for the user."""


def save_params(run_dir: Path, env_steps: int, params: Params, config: config_lib.Config, spec) -> Path:
  path = (Path(run_dir) / "checkpoints" / f"{env_steps:010d}").resolve()
  if path.exists():
    return path
  with ocp.StandardCheckpointer() as ckpt:
    ckpt.save(path / "params", jax.device_get(params))
  meta = {"format_version": FORMAT_VERSION, "env_steps": env_steps, "config": config.to_dict(),
          "spec": {"obs_shape": list(spec.obs_shape), "obs_dtype": np.dtype(spec.obs_dtype).name,
                   "num_actions": spec.num_actions}}
  (path / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
  return path


def latest(path: str | Path) -> Path:
  """A checkpoint directory itself, or the newest under `path/checkpoints` or `path`."""
  path = Path(path)
  if (path / "meta.json").exists():
    return path
  for parent in (path / "checkpoints", path):
    found = sorted(p for p in parent.glob("*") if (p / "meta.json").exists()) if parent.is_dir() else []
    if found:
      return found[-1]
  raise CheckpointError(f"no checkpoint found at {str(path)!r}: give a run directory or one of its "
                        f"checkpoints/<step> directories")


def load_params(path: str | Path, abstract_params: Params) -> Params:
  with ocp.StandardCheckpointer() as ckpt:
    return ckpt.restore(Path(path).resolve() / "params", abstract_params)


def read_meta(path: Path) -> dict[str, Any]:
  meta = json.loads((path / "meta.json").read_text())
  if meta.get("format_version") != FORMAT_VERSION:
    raise CheckpointError(f"checkpoint {str(path)!r} has format version {meta.get('format_version')}, "
                          f"this dreamer reads version {FORMAT_VERSION}")
  return meta
