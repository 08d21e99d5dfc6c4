"""Freeze experiments: uniform OPD against the freeze variants over seeds
(paper Fig. 5)."""

from __future__ import annotations

import numpy as np

from rock_jax.analysis import freeze, plots, report
from rock_jax.study.sections.common import figure


def _figures(ctx, result) -> tuple[report.Figure, ...]:
  # Seeds whose evaluations differ in number have no mean curve.
  variants = {k: v for k, v in result["variants"].items() if "curve_mean" in v}
  bands = {
    k: (
      v["steps"],
      np.subtract(v["curve_mean"], v["curve_sd"]),
      np.add(v["curve_mean"], v["curve_sd"]),
    )
    for k, v in variants.items()
  }
  target = (result["target"], f"target {result['target']:.3f}")
  return (
    figure(
      ctx,
      plots.curves,
      "freeze_steps.png",
      {k: (v["steps"], v["curve_mean"]) for k, v in variants.items()},
      bands=bands,
      hline=target,
      title="Accuracy against steps (mean ± sd over seeds)",
      xlabel="step",
      ylabel="greedy accuracy",
      caption="Paper Fig. 5, on this run's task.",
    ),
    figure(
      ctx,
      plots.curves,
      "freeze_wall.png",
      {k: (v["wall_mean"], v["curve_mean"]) for k, v in variants.items()},
      hline=target,
      title="Accuracy against training wall time",
      xlabel="seconds",
      ylabel="greedy accuracy",
      caption=(
        "Freezing skips no computation, so time per step is the same "
        "up to rollout lengths."
      ),
    ),
  )


def _final_table(result) -> report.Table:
  rows = []
  for label, v in result["variants"].items():
    reached = [s for s in v["steps_to_target"] if np.isfinite(s)]
    rows.append(
      (
        label,
        len(v["seeds"]),
        v["final_mean"],
        v["final_sd"],
        ", ".join(f"{x:.3f}" for x in v["final"]),
        float(np.median(reached)) if reached else np.nan,
        f"{len(reached)}/{len(v['seeds'])}",
        float(np.mean(v["seconds_per_step"])),
        v.get("detection_precision"),
        v.get("detection_recall"),
      )
    )
  return report.Table(
    columns=(
      "variant",
      "seeds",
      "final mean",
      "sd",
      "per seed",
      "median steps to target",
      "reached",
      "s / step",
      "detection P",
      "detection R",
    ),
    rows=tuple(rows),
    caption="Final greedy accuracy over seeds",
  )


def _paired_table(result) -> report.Table:
  rows = []
  for label, p in result["paired"].items():
    seeds, pooled = p.get("seed_bootstrap", {}), p.get("bootstrap", {})
    rows.append(
      (
        label,
        p["mean_difference"],
        p["sd_difference"],
        seeds.get("ci_low"),
        seeds.get("ci_high"),
        seeds.get("p_value"),
        pooled.get("ci_low"),
        pooled.get("ci_high"),
      )
    )
  return report.Table(
    columns=(
      "variant − uniform",
      "mean Δ",
      "sd Δ",
      "95% CI low",
      "95% CI high",
      "p",
      "problems-only CI low",
      "problems-only CI high",
    ),
    rows=tuple(rows),
    caption="Paired by seed on the final evaluation. The CI and p resample "
    "seeds, then problems within each seed, so they include the spread "
    "between training seeds; the problems-only interval resamples pooled "
    "(seed, problem) pairs and is too narrow when seeds disagree",
  )


def section(ctx):
  """Uniform OPD against the freeze variants over seeds."""
  a = ctx.analysis
  runs = freeze.load_runs(freeze.run_dirs(a.freeze_runs))
  result = freeze.summarize(runs, a.target_fraction)
  section = report.Section(
    title="Freeze experiments",
    numbers={"target accuracy": result["target"]},
    paragraphs=(
      f"Target = {a.target_fraction:g} × the uniform runs' mean final "
      "accuracy. Steps to target are interpolated between evaluations; the "
      "paper's wall-clock speed-up is read as fewer steps to the same "
      "accuracy.",
    ),
    tables=(_final_table(result), _paired_table(result)),
    figures=_figures(ctx, result),
  )
  return result, section
