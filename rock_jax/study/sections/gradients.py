"""Gradient diagnostics: logit-space geometry per group (paper Fig. 3a/b)
and the rock positions' share of the parameter gradient."""

from __future__ import annotations

import jax
import numpy as np

from rock_jax.analysis import gradients, plots, report, stats
from rock_jax.study.sections.common import GROUP_NAMES, figure, median

_KEYS = ("norm", "cos_balanced", "cos_global", "contribution")


def _per_group(ctx) -> dict:
  """Per group: every type's diagnostics, medians and total contribution."""
  c = ctx.census
  tracked = np.concatenate(list(c.groups.values()))
  diag = gradients.logit_diagnostics(
    ctx.kl_cfg,
    ctx.params("student"),
    ctx.params("teacher"),
    c.corpus,
    c.stats,
    tracked,
    sharders=ctx.session.sharders,
    batch_size=ctx.analysis.batch_size,
  )
  slot = {int(i): s for s, i in enumerate(diag["ids"])}
  per_group = {}
  for name, ids in c.groups.items():
    index = [slot[int(i)] for i in ids]
    group = {key: diag[key][index] for key in _KEYS}
    group["ids"] = ids
    group["median_norm"] = median(group["norm"])
    group["median_cos"] = median(group["cos_balanced"])
    group["total_contribution"] = float(np.nansum(group["contribution"]))
    per_group[name] = group
  numbers = {
    "groups": per_group,
    "norm_test_rock_vs_high_kl": stats.mann_whitney(
      per_group["rock"]["norm"], per_group["high_kl_rare"]["norm"]
    ),
    "balanced_norm": diag["balanced_norm"],
    "global_norm": diag["global_norm"],
  }
  return numbers


def _parameter_share(ctx, numbers) -> list:
  """Adds the parameter-gradient share over the first batches; returns
  the batches used (none if the corpus is smaller than one)."""
  corpus, n_rows = ctx.census.corpus, ctx.config.train.batch_size
  rows = corpus.kl_BxN.shape[0]
  batches = [
    jax.tree.map(lambda x, s=s: np.asarray(x)[s : s + n_rows], corpus.batch)
    for s in range(0, rows - n_rows + 1, n_rows)
  ][: ctx.analysis.grad_batches]
  if batches:
    share = gradients.parameter_share(
      ctx.kl_cfg,
      ctx.params("student"),
      ctx.params("teacher"),
      batches,
      ctx.census.rocks,
      sharders=ctx.session.sharders,
    )
    numbers["parameter_share"] = share
    numbers["parameter_norm_share_mean"] = float(np.mean(share["norm_share"]))
    numbers["parameter_projection_share_mean"] = float(
      np.mean(share["projection_share"])
    )
  return batches


def _figures(ctx, per_group, labels) -> tuple[report.Figure, ...]:
  count_V = ctx.census.stats.count_V
  return (
    figure(
      ctx,
      plots.violin_or_box,
      "gradients_norm.png",
      {labels[n]: g["norm"] for n, g in per_group.items()},
      title="‖ḡ_t‖ per type (paper Fig. 3a)",
      ylabel="norm of the mean logit gradient",
      log=True,
      caption="Per-type mean reverse-KL gradient in logit space.",
    ),
    figure(
      ctx,
      plots.violin_or_box,
      "gradients_cos.png",
      {labels[n]: g["cos_balanced"] for n, g in per_group.items()},
      title="cos(ḡ_t, G_balanced) per type (paper Fig. 3b)",
      ylabel="cosine to the frequency-balanced gradient",
      caption=(
        "Alignment of each type's mean gradient with G_balanced = Σ_t ḡ_t."
      ),
    ),
    figure(
      ctx,
      plots.scatter,
      "gradients_contribution.png",
      {
        labels[n]: (count_V[g["ids"]], g["contribution"])
        for n, g in per_group.items()
      },
      title="Contribution n_t·‖ḡ_t‖·cos against frequency",
      xlabel="count n_t",
      ylabel="contribution",
      caption="Frequent types with a small, aligned gradient add up.",
    ),
  )


def _parameter_paragraph(ctx, numbers, batches) -> str:
  share = numbers["parameter_share"]
  return (
    f"Parameter space: over {len(batches)} batches of "
    f"{ctx.config.train.batch_size} sequences, the token-mean reverse-KL "
    "loss was differentiated once with only the rock positions and once "
    "with only the others (g_all = g_rock + g_rest). Rock positions are "
    f"{np.mean(share['token_share']):.1%} of the tokens; ‖g_rock‖ / "
    f"‖g_all‖ = {numbers['parameter_norm_share_mean']:.3g}, and the "
    "projection ⟨g_rock, g_all⟩ / ‖g_all‖² = "
    f"{numbers['parameter_projection_share_mean']:.3g} (the rest's "
    "projection is one minus it)."
  )


def section(ctx):
  """Logit-space gradient geometry per group and the parameter share."""
  numbers = _per_group(ctx)
  batches = _parameter_share(ctx, numbers)
  per_group = numbers["groups"]
  labels = {
    n: f"{GROUP_NAMES[n]} ({len(g['ids'])})" for n, g in per_group.items()
  }
  contribution = np.nansum(
    [g["total_contribution"] for g in per_group.values()]
  )
  rows = tuple(
    (
      labels[n],
      g["median_norm"],
      g["median_cos"],
      median(g["cos_global"]),
      g["total_contribution"] / contribution if contribution else np.nan,
    )
    for n, g in per_group.items()
  )
  shown = {
    "Mann-Whitney p (norms, rock vs rare high-KL)": numbers[
      "norm_test_rock_vs_high_kl"
    ]["p_value"],
  }
  paragraphs = ()
  if batches:
    shown["rock share of the parameter-gradient norm"] = numbers[
      "parameter_norm_share_mean"
    ]
    shown["rock projection share of the parameter gradient"] = numbers[
      "parameter_projection_share_mean"
    ]
    paragraphs = (_parameter_paragraph(ctx, numbers, batches),)
  columns = (
    "group",
    "median ‖ḡ_t‖",
    "median cos(ḡ_t, G_balanced)",
    "median cos(ḡ_t, G_global)",
    "share of Σ contribution",
  )
  section = report.Section(
    title="Gradient diagnostics",
    numbers=shown,
    paragraphs=paragraphs,
    tables=(
      report.Table(
        columns=columns, rows=rows, caption="Per-group medians over types"
      ),
    ),
    figures=_figures(ctx, per_group, labels),
  )
  return numbers, section
