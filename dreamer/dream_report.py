"""The report of a dream job: report.json (the summary), report.md, returns.png, fit.png, distil.png."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from dreamer import plots, stats


def _returns_ci(values) -> list[float]:
  """[mean, low, high]: the mean of per-episode returns and its 95% percentile-bootstrap interval (the
  resamples drawn from a fresh `default_rng(0)`, so every figure is reproducible on its own)."""
  return list(stats.mean_ci(values, rng=np.random.default_rng(0)))


def summary(job, state: dict[str, Any]) -> dict[str, Any]:
  """Everything the report shows, from the job's finished phases."""
  done = state["done"]
  base, after = done["baseline"], done["gate"]["after"]
  returns = {}
  for name in ("experience", "anchor"):
    if name not in base:
      continue
    returns[name] = {"world": base[name]["world"]}
    for mode in ("search", "policy"):
      b, a = np.asarray(base[name][mode]), np.asarray(after[name][mode])
      # Episodes are paired: the same evaluation seeds start the same games before and after.
      returns[name][mode] = {"before": _returns_ci(b), "after": _returns_ci(a), "change": _returns_ci(a - b)}
  adapt, dist = done["adapt"], done["distil"]
  real = job.exp.meta["env_steps"]
  return {
    "accepted": done["gate"]["accepted"],
    "reasons": done["gate"]["reasons"],
    "checkpoint": done["write"]["checkpoint"],
    "inputs": state["inputs"],
    "settings": state["settings"],
    "experience": {"world": job.exp.meta["world"], "env_steps": real, "games": len(job.exp.meta["game_returns"])},
    "anchor": ({"world": job.anchor.meta["world"], "env_steps": job.anchor.meta["env_steps"]} if job.anchor else None),
    "returns": returns,
    "compute": {
      "adapt": {"updates": adapt["updates"], "model_steps": adapt["model_steps"], "seconds": adapt["seconds"]},
      dist["mode"]: {
        "updates": dist["updates"],
        "model_steps": dist["model_steps"],
        "forward_steps": dist["forward_steps"],
        "seconds": dist["seconds"],
      },
      "evaluation_seconds": done["baseline"]["seconds"] + done["gate"]["seconds"],
      # Phases done in an earlier process of a resumed job have their own peak (None: from before the count).
      "peak_rss_bytes": max(
        (done[k].get("peak_rss_bytes") or 0 for k in ("baseline", "adapt", "distil", "gate")), default=0
      )
      or None,
      "imagined_per_real_step": dist["imagined_per_real_step"],
      "model_steps_per_real_step": (adapt["model_steps"] + dist["model_steps"]) / real,
    },
    "fit": adapt["fit"],
    "adapt_history": adapt["history"],
    "teacher_from_update": adapt["teacher_from_update"],
    "teacher_check": adapt.get("teacher_check"),
    "distil": {"mode": dist["mode"], "before": dist["before"], "after": dist["after"], "history": dist["history"]},
  }


def markdown(s: dict[str, Any]) -> str:
  """report.md of a job's summary `s`."""
  lines = _verdict_lines(s)
  lines += _returns_lines(s["returns"])
  lines += _compute_lines(s["compute"])
  lines += _fit_lines(s["fit"], teacher_from_update=s["teacher_from_update"])
  lines += _distil_lines(s["distil"])
  lines += ["", "## Settings", "", "```json", json.dumps(s["settings"], indent=1), "```", ""]
  return "\n".join(lines)


def _verdict_lines(s: dict[str, Any]) -> list[str]:
  """The gate's verdict and reasons, then the job's inputs and outputs."""
  return [
    "# Dream report",
    "",
    f"**{'ACCEPTED' if s['accepted'] else 'REJECTED'}**: " + "; ".join(s["reasons"]) + ".",
    "",
    f"- checkpoint in: `{s['inputs']['checkpoint']}`; out: `{s['checkpoint']}`"
    + ("" if s["accepted"] else " (the original weights)"),
    f"- experience: `{s['experience']['world']}`, {s['experience']['env_steps']} real env steps "
    f"({s['experience']['games']} games ended)",
    "- anchor: " + (f"`{s['anchor']['world']}`, {s['anchor']['env_steps']} env steps" if s["anchor"] else "none"),
    "- phase 3: "
    + (
      "compute-matched control (real-data fine-tuning, no imagination)"
      if s["distil"]["mode"] == "control"
      else "rehearse + distil"
    ),
    "",
  ]


def _returns_lines(returns: dict[str, Any]) -> list[str]:
  """Returns before and after, and their paired change, per world and way of acting."""
  lines = [
    "## Returns (mean over evaluation episodes, 95% bootstrap CI; change is paired by episode)",
    "",
    "| world | acting | before | after | change |",
    "| --- | --- | --- | --- | --- |",
  ]
  for name, r in returns.items():
    for mode in ("policy", "search"):
      cis = " | ".join(stats.format_ci(r[mode][when], digits=2) for when in ("before", "after", "change"))
      lines.append(f"| {name} `{r['world']}` | {'policy alone' if mode == 'policy' else 'with search'} | {cis} |")
  return lines


def _mib(n: int | None) -> str:
  return "not recorded" if not n else f"{n / 2**20:,.0f} MiB"


def _compute_lines(c: dict[str, Any]) -> list[str]:
  """Updates, model steps and seconds of each phase, and the imagined steps per real one."""
  phase = "control" if "control" in c else "distil"
  return [
    "",
    "## Compute",
    "",
    "| phase | updates | model steps | seconds |",
    "| --- | --- | --- | --- |",
    f"| adapt | {c['adapt']['updates']} | {c['adapt']['model_steps']:,} | {c['adapt']['seconds']:.1f} |",
    f"| {phase} | {c[phase]['updates']} | {c[phase]['model_steps']:,} | {c[phase]['seconds']:.1f} |",
    f"| evaluation | | | {c['evaluation_seconds']:.1f} |",
    "",
    f"Peak resident memory of the job's process: {_mib(c.get('peak_rss_bytes'))}.",
    "",
    f"Phase 3 in forward-pass equivalents (a backpropagated model step counts 3; the control is matched "
    f"on these): {c[phase]['forward_steps']:,}.",
    "",
    f"Imagined model steps of rehearsal per real recorded env step: **{c['imagined_per_real_step']:.1f}**; "
    f"all model steps (adapt unroll included) per real recorded step: {c['model_steps_per_real_step']:.1f}.",
    "",
  ]


def _fit_lines(fits: dict[str, Any], *, teacher_from_update: int) -> list[str]:
  """Per world with held-out data, the checkpoint's and the teacher's errors at each unroll depth."""
  lines = [
    "## Model fit on held-out recorded data, by unroll depth",
    "",
    (
      f"The teacher is the adapted model after update {teacher_from_update}."
      if teacher_from_update
      else "The teacher is the checkpoint's own model (adaptation found no better held-out fit, or searched worse"
      " than the checkpoint: see teacher_check in report.json)."
    )
    + " |error| is in return units.",
    "",
  ]
  for name, fit in fits.items():
    ck, te = fit["checkpoint"], fit["teacher"]
    if not ck:
      continue
    lines += [
      f"{name}:",
      "",
      "| depth | reward prefix abs err: checkpoint -> teacher | value abs err | consistency cosine |",
      "| --- | --- | --- | --- |",
    ]
    for k in range(len(ck["value_abs"])):
      pre = "-" if ck["prefix_abs"][k] is None else f"{ck['prefix_abs'][k]:.3f} -> {te['prefix_abs'][k]:.3f}"
      cos = "-" if ck["cosine"][k] is None else f"{ck['cosine'][k]:.3f} -> {te['cosine'][k]:.3f}"
      val = "-" if ck["value_abs"][k] is None else f"{ck['value_abs'][k]:.3f} -> {te['value_abs'][k]:.3f}"
      lines.append(f"| {k} | {pre} | {val} | {cos} |")
    lines.append("")
  return lines


def _distil_lines(d: dict[str, Any]) -> list[str]:
  """Teacher KL, guard keep rate and policy drift before and after phase 3."""
  lines = [
    "## Distillation",
    "",
    "| measure | before phase 3 | after |",
    "| --- | --- | --- |",
    f"| KL(teacher search target \\|\\| student) on imagined states | {d['before']['teacher_kl']:.4f} | "
    f"{d['after']['teacher_kl']:.4f} |",
    f"| imagined states kept by the guard | {d['before']['kept']:.3f} | {d['after']['kept']:.3f} |",
  ]
  for name in ("experience", "anchor"):
    key = f"drift_{name}"
    if key in d["after"]:
      lines.append(
        f"| policy drift KL(checkpoint \\|\\| student) on {name} states | {d['before'][key]:.4f} "
        f"(the teacher) | {d['after'][key]:.4f} |"
      )
  return lines


def _plot_returns(s: dict[str, Any], path: Path) -> None:
  """Bars of the mean return before and after, with their CIs, per world and way of acting."""
  with plots.png(path, dpi=100, figsize=(7, 3.5)) as fig:
    ax = fig.subplots()
    labels, x = [], 0
    for name, r in s["returns"].items():
      for mode in ("policy", "search"):
        for i, when in enumerate(("before", "after")):
          m, lo, hi = r[mode][when]
          ax.bar(
            x + 0.4 * i,
            m,
            0.4,
            yerr=[[m - lo], [hi - m]],
            color=("#999" if when == "before" else "#37c"),
            label=when if x == 0 else None,
            capsize=3,
          )
        labels.append(f"{name}\n{mode}")
        x += 1
    ax.set_xticks(np.arange(x) + 0.2, labels)
    ax.set_ylabel("return")
    ax.legend()
    fig.tight_layout()


def _plot_fit(s: dict[str, Any], path: Path) -> None:
  """The checkpoint's and the teacher's reward and value errors against unroll depth."""
  with plots.png(path, dpi=100, figsize=(8, 3.2)) as fig:
    axes = fig.subplots(1, 2)
    for name, fit in s["fit"].items():
      for ax, key in zip(axes, ("prefix_abs", "value_abs")):
        for who, style in (("checkpoint", "--"), ("teacher", "-")):
          ys = [np.nan if v is None else v for v in fit[who].get(key, [])]
          ax.plot(range(len(ys)), ys, style, marker="o", label=f"{name}, {who}")
        ax.set_xlabel("unroll depth")
        ax.set_title({"prefix_abs": "reward (value prefix) |error|", "value_abs": "value |error|"}[key])
    axes[0].legend(fontsize=7)
    fig.tight_layout()


def _plot_distil(s: dict[str, Any], path: Path) -> None:
  """Phase 3's history: teacher KL, anchor drift, keep rate and loss against updates."""
  hist = s["distil"]["history"]
  with plots.png(path, dpi=100, figsize=(6, 3.2)) as fig:
    ax = fig.subplots()
    if hist:
      xs = [h["updates"] for h in hist]
      for key in ("teacher_kl", "anchor_drift", "kept", "loss"):
        if key in hist[0]:
          ax.plot(xs, [h[key] for h in hist], label=key)
    ax.set_xlabel(f"{s['distil']['mode']} updates")
    ax.legend()
    fig.tight_layout()


def write(out: Path, job, state: dict[str, Any]) -> dict[str, Any]:
  """Writes the report of a finished job into `out` (report.md and report.json atomically); returns the summary."""
  s = summary(job, state)
  for name, text in (("report.md", markdown(s)), ("report.json", json.dumps(s, indent=1) + "\n")):
    tmp = out / f"{name}.tmp"
    tmp.write_text(text)
    os.replace(tmp, out / name)
  _plot_returns(s, out / "returns.png")
  _plot_fit(s, out / "fit.png")
  _plot_distil(s, out / "distil.png")
  return s
