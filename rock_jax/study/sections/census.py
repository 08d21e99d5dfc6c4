"""The Rock Score census: coverage, density and stability (paper §2.2)."""

from __future__ import annotations

import numpy as np

from rock_jax.analysis import census, plots, report
from rock_jax.config import fields
from rock_jax.rock import lists as rock_lists
from rock_jax.study.sections.common import figure, mean, median


def _numbers(ctx):
  """The census numbers, the per-sequence densities and the other types."""
  a, c = ctx.analysis, ctx.census
  ts, rocks, corpus = c.stats, c.rocks, c.corpus
  total_kl = ts.kl_sum_V.sum()
  seen = ts.count_V > 0
  unselected = np.flatnonzero(seen)
  unselected = unselected[~np.isin(unselected, rocks)]
  ks = fields.parse_ints(a.k_sweep, "analysis.k_sweep")
  ks = sorted(set(ks) | {a.k})
  curve = census.coverage(ts, ks, **ctx.selection)
  sizes = fields.parse_ints(a.stability_sizes, "analysis.stability_sizes")
  stability = census.stability(
    corpus, sizes, ks, ctx.vocab_size, **ctx.selection
  )
  density = census.sequence_density(corpus.ids_BxN, corpus.mask_BxN, rocks)
  numbers = {
    "problems": int(corpus.kl_BxN.shape[0]),
    "positions": int(corpus.mask_BxN.sum()),
    "observed_types": int(seen.sum()),
    "student_accuracy": float(corpus.correct_B.mean()),
    "global_mean_kl": float(total_kl / max(corpus.mask_BxN.sum(), 1)),
    "k": int(a.k),
    "rock_ids": rocks,
    "rock_texts": [ctx.text(i) for i in rocks],
    "rock_token_share": float(ts.count_V[rocks].sum() / ts.count_V.sum()),
    "rock_kl_share": float(ts.kl_sum_V[rocks].sum() / total_kl),
    "rock_density_median": median(density),
    "rock_mean_kl": mean(ts.mean_V[rocks]),
    "unselected_mean_kl": mean(ts.mean_V[unselected]),
    "coverage": {"ks": ks, "share": curve},
    "stability": stability,
    "coverage_at_k": float(curve[ks.index(a.k)]),
    "jaccard_at_k": stability["mean"][ks.index(a.k)],
  }
  if ctx.truth is not None:
    numbers.update(rock_lists.detection(rocks, ctx.truth))
    numbers["planted_ids"] = sorted(ctx.truth)
  return numbers, density, unselected


def _figures(ctx, numbers, density, unselected) -> tuple[report.Figure, ...]:
  ts, rocks = ctx.census.stats, ctx.census.rocks
  planted = None if ctx.truth is None else [int(i) in ctx.truth for i in rocks]
  ks, curve = numbers["coverage"]["ks"], numbers["coverage"]["share"]
  stability = numbers["stability"]
  return (
    figure(
      ctx,
      plots.bars,
      "census_top_k.png",
      [ctx.text(i) for i in rocks],
      ts.kl_sum_V[rocks],
      title=f"Top {len(rocks)} types by Rock Score",
      ylabel="R(v) = count × mean KL",
      highlight=planted,
      legend=("not planted", "planted rock"),
      caption=(
        "R(v) of the rock set"
        + ("; highlighted: the planted rocks" if ctx.truth else "")
      ),
    ),
    figure(
      ctx,
      plots.histogram,
      "census_mean_kl.png",
      {
        f"unselected ({len(unselected)})": ts.mean_V[unselected],
        f"rock ({len(rocks)})": ts.mean_V[rocks],
      },
      title="Per-type mean KL (paper Fig. 2a)",
      xlabel="mean reverse KL per occurrence",
      log_x=True,
      caption=(
        "Rocks are not simply the highest-KL types: they combine "
        "frequency with a moderate mean KL."
      ),
    ),
    figure(
      ctx,
      plots.histogram,
      "census_density.png",
      {"sequences": density},
      title="Rock density per sequence (paper Fig. 2b)",
      xlabel="share of a completion's tokens in the rock set",
      caption="Share of each completion's tokens that are rocks.",
    ),
    figure(
      ctx,
      plots.curves,
      "census_coverage.png",
      {"KL coverage": (ks, curve), "mean Jaccard": (ks, stability["mean"])},
      title="Coverage and stability against K",
      xlabel="K",
      ylabel="share / Jaccard",
      log_x=True,
      caption=(
        "Share of the corpus KL in the top K, and the mean Jaccard of "
        f"the top K on nested prefixes {stability['sizes']} against all "
        "problems."
      ),
    ),
  )


def _rock_table(ctx) -> report.Table:
  ts, rocks = ctx.census.stats, ctx.census.rocks
  columns = ["rank", "id", "token", "count", "mean KL", "R(v)"]
  if ctx.truth is not None:
    columns.append("planted")
  rows = []
  for rank, i in enumerate(np.asarray(rocks), 1):
    row = [rank, int(i), ctx.text(i), int(ts.count_V[i]), ts.mean_V[i]]
    row.append(ts.kl_sum_V[i])
    if ctx.truth is not None:
      row.append(int(i) in ctx.truth)
    rows.append(tuple(row))
  return report.Table(
    columns=tuple(columns), rows=tuple(rows), caption="The rock set"
  )


def section(ctx):
  """Rock Score census, coverage, density and stability (paper §2.2)."""
  k = ctx.analysis.k
  numbers, density, unselected = _numbers(ctx)
  shown = {
    "problems": numbers["problems"],
    "generated positions": numbers["positions"],
    "observed types": numbers["observed_types"],
    "student greedy accuracy": numbers["student_accuracy"],
    "global mean KL": numbers["global_mean_kl"],
    "rock share of tokens": numbers["rock_token_share"],
    "median rock density per sequence": numbers["rock_density_median"],
    f"KL coverage at K = {k}": numbers["coverage_at_k"],
    f"mean Jaccard at K = {k}": numbers["jaccard_at_k"],
  }
  if ctx.truth is not None:
    shown["detection precision"] = numbers["detection_precision"]
    shown["detection recall"] = numbers["detection_recall"]
  coverage = numbers["coverage"]
  section = report.Section(
    title="Rock Score census",
    numbers=shown,
    paragraphs=(
      f"The {len(numbers['rock_ids'])} rocks are "
      f"{numbers['rock_token_share']:.1%} of the generated tokens and carry "
      f"{numbers['rock_kl_share']:.1%} of the KL; their mean KL per "
      f"occurrence is {numbers['rock_mean_kl']:.3g} against "
      f"{numbers['unselected_mean_kl']:.3g} for the other types.",
    ),
    tables=(
      _rock_table(ctx),
      report.Table(
        columns=("K", "KL coverage", "mean Jaccard"),
        rows=tuple(
          zip(
            coverage["ks"],
            coverage["share"],
            numbers["stability"]["mean"],
            strict=True,
          )
        ),
        caption="Coverage and stability",
      ),
    ),
    figures=_figures(ctx, numbers, density, unselected),
  )
  return numbers, section
