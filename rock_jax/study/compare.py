"""Reproductions of the study side by side: do their conclusions agree?

Runs on one machine are bitwise repeatable, but XLA compiles for the host's
instruction set, so another CPU (or `--xla_cpu_max_isa`) gives other
numerics, another prepared student and other OPD trajectories. What should
carry over is the conclusions, so each reproduction's variant − uniform
difference is read as "lower", "higher" or "no difference detected" from
its seed-and-problem bootstrap interval (`stats.seed_bootstrap`), and the
reproductions agree where every reading is the same.

`machine()` describes where a reproduction ran; `compare(roots, out_dir)`
reads finished `launch/reproduce.py` roots (`<root>/runs/*`,
`<root>/report/machine.json`) and writes `comparison.json` and a report.
"""

from __future__ import annotations

import json
import os
import platform

import numpy as np

from rock_jax import metrics, storage
from rock_jax.analysis import freeze, report

MACHINE_FILE = "machine.json"
# CPU features that decide which vector code XLA's CPU backend emits.
_ISA_FLAGS = ("sse4_2", "avx", "avx2", "fma", "avx512f", "avx512_vp2intersect")


def machine() -> dict:
  """The CPU, its instruction sets, the JAX versions and XLA flags here."""
  import jax  # noqa: PLC0415 (after the launcher set XLA_FLAGS)
  import jaxlib  # noqa: PLC0415

  model, flags = platform.processor(), set()
  if os.path.isfile("/proc/cpuinfo"):
    with open("/proc/cpuinfo") as f:
      for line in f:
        key, _, value = line.partition(":")
        if key.strip() == "model name":
          model = value.strip()
        elif key.strip() == "flags":
          flags = set(value.split())
  return {
    "cpu": model,
    "isa": [f for f in _ISA_FLAGS if f in flags],
    "cores": os.cpu_count(),
    "machine": platform.machine(),
    "jax": jax.__version__,
    "jaxlib": jaxlib.__version__,
    "xla_flags": os.environ.get("XLA_FLAGS", ""),
  }


def _reading(bootstrap: dict) -> str:
  if bootstrap["ci_high"] < 0:
    return "lower"
  if bootstrap["ci_low"] > 0:
    return "higher"
  return "no difference detected"


def _span(values) -> list[float]:
  return [float(np.min(values)), float(np.max(values))]


def summarize(root: str) -> dict:
  """One reproduction: its machine, models, variants and differences."""
  runs = freeze.load_runs(freeze.run_dirs(storage.join(root, "runs", "*")))
  result = freeze.summarize(runs)
  first = runs[0]["summary"]
  machine_file = storage.join(root, "report", MACHINE_FILE)
  out = {
    "root": root,
    "machine": (
      json.loads(storage.read_text(machine_file))
      if storage.isfile(machine_file)
      else None
    ),
    "teacher_accuracy": first["teacher_accuracy"],
    "student_accuracy_before": first["student_accuracy_before"],
    "variants": {},
    "differences": {},
  }
  for label, v in result["variants"].items():
    group = [r["summary"] for r in runs if r["variant"] == label]
    row = {
      "seeds": v["seeds"],
      "final": v["final"],
      "final_mean": v["final_mean"],
      "final_sd": v["final_sd"],
      "final_span": _span(v["final"]),
      "steps_to_target": v["steps_to_target"],
    }
    for key in ("detection_precision", "detection_recall"):
      if all(s.get(key) is not None for s in group):
        row[f"{key}_span"] = _span([s[key] for s in group])
    out["variants"][label] = row
  for label, p in result["paired"].items():
    if "seed_bootstrap" in p:
      out["differences"][label] = {
        **p["seed_bootstrap"],
        "reading": _reading(p["seed_bootstrap"]),
      }
  return out


def _pct(x) -> str:
  return f"{100 * x:+.1f}"


def _conclusions(found, agree) -> report.Table:
  rows = []
  for v in agree:
    for name, f in found.items():
      d = f["differences"][v]
      rows.append(
        (
          v,
          name,
          f"{_pct(d['delta'])} [{_pct(d['ci_low'])}, {_pct(d['ci_high'])}]",
          d["p_value"],
          d["reading"],
          "yes" if agree[v] else "NO",
        )
      )
  return report.Table(
    columns=("variant", "run", "Δ [95% CI]", "p", "reading", "agree"),
    rows=tuple(rows),
  )


def _finals(found) -> report.Table:
  rows = []
  for name, f in found.items():
    for v, row in f["variants"].items():
      p, r = (
        row.get("detection_precision_span"),
        row.get("detection_recall_span"),
      )
      rows.append(
        (
          v,
          name,
          f"{row['final_mean']:.3f} ± {row['final_sd']:.3f}",
          ", ".join(f"{x:.3f}" for x in row["final"]),
          f"{p[0]:.2f}–{p[1]:.2f} / {r[0]:.2f}–{r[1]:.2f}" if p and r else "",
        )
      )
  return report.Table(
    columns=(
      "variant",
      "run",
      "final mean ± sd",
      "per seed",
      "detection P / R",
    ),
    rows=tuple(rows),
  )


def _machines(found) -> report.Table:
  rows = []
  for name, f in found.items():
    m = f["machine"] or {}
    rows.append(
      (
        name,
        m.get("cpu", "?"),
        ", ".join(m.get("isa", [])),
        m.get("xla_flags", ""),
        f["teacher_accuracy"],
        f["student_accuracy_before"],
      )
    )
  return report.Table(
    columns=("run", "CPU", "ISA", "XLA_FLAGS", "teacher", "student before"),
    rows=tuple(rows),
  )


def compare(roots: dict[str, str], out_dir: str) -> dict:
  """Compares finished reproductions; writes JSON and a report.

  Args:
    roots: {label: reproduction root}, e.g. {"default": ..., "SSE4.2": ...}.
    out_dir: where `comparison.json` and `report.md`/`.html` go.

  Returns:
    {"reproductions": {label: `summarize(root)`}, "agree": {variant:
    bool}, "report": {format: path}}.
  """
  found = {label: summarize(root) for label, root in roots.items()}
  shared = set.intersection(*(set(f["differences"]) for f in found.values()))
  agree = {
    v: len({f["differences"][v]["reading"] for f in found.values()}) == 1
    for v in sorted(shared)
  }
  doc = report.Report(
    title="Reproductions compared",
    preamble=(
      "Variant − uniform OPD in accuracy points, 95% interval over seeds "
      "and problems (paired). The readings agree when every reproduction "
      "says the same: lower, higher, or no difference detected.",
    ),
    sections=(
      report.Section(title="Where they ran", tables=(_machines(found),)),
      report.Section(title="Conclusions", tables=(_conclusions(found, agree),)),
      report.Section(title="Final accuracy", tables=(_finals(found),)),
    ),
  )
  result = {"reproductions": found, "agree": agree}
  metrics.write_json(storage.join(out_dir, "comparison.json"), result)
  result["report"] = report.write(doc, out_dir)
  return result
