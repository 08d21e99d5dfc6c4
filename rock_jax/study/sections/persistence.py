"""Persistence: early against late per-type KL (paper Fig. 3c/d), and the
tracker's online view over the run."""

from __future__ import annotations

from rock_jax.analysis import census, persistence, plots, report
from rock_jax.study.sections.common import GROUP_NAMES, figure

_CAPTIONS = {
  "own": "each checkpoint on its own greedy rollouts",
  "fixed": "the late checkpoint's rollouts, re-scored by the early one",
}


def _compare(ctx, early, mode) -> dict:
  """Per group, the early and late per-type mean KL in one context mode."""
  c = ctx.census
  if mode == "own":
    corpus = ctx.collect(early)
    kl, ids, mask = corpus.kl_BxN, corpus.ids_BxN, corpus.mask_BxN
  else:
    kl = census.score(
      ctx.kl_cfg,
      early,
      ctx.params("teacher"),
      c.corpus.batch,
      ctx.session.sharders,
      ctx.analysis.batch_size,
    )
    ids, mask = c.corpus.ids_BxN, c.corpus.mask_BxN
  ts_early = census.type_stats(ids, kl, mask, ctx.vocab_size)
  return persistence.compare(ts_early, c.stats, c.groups)


def _mode_figures(ctx, mode, result) -> list[report.Figure]:
  labels = {n: GROUP_NAMES[n] for n in result}
  return [
    figure(
      ctx,
      plots.scatter,
      f"persistence_{mode}.png",
      {labels[n]: (r["early"], r["late"]) for n, r in result.items()},
      title=f"Per-type mean KL, early vs late ({mode} contexts)",
      xlabel="early checkpoint",
      ylabel="late checkpoint",
      diagonal=True,
      log=True,
      caption=f"Paper Fig. 3c: {_CAPTIONS[mode]}; below the diagonal = learnt.",
    ),
    figure(
      ctx,
      plots.histogram,
      f"persistence_change_{mode}.png",
      {labels[n]: r["late"] - r["early"] for n, r in result.items()},
      title=f"Change of per-type mean KL ({mode} contexts)",
      xlabel="late − early mean KL",
      caption="Paper Fig. 3d: the distribution of ΔKL per group.",
    ),
  ]


def _mode_table(mode, result) -> report.Table:
  return report.Table(
    columns=(
      "group",
      "types",
      "median early",
      "median late",
      "relative median change",
      "Wilcoxon p",
    ),
    rows=tuple(
      (
        GROUP_NAMES[n],
        r["n"],
        r["median_before"],
        r["median_after"],
        r["relative_median_change"],
        r["p_value"],
      )
      for n, r in result.items()
    ),
    caption=f"Per-type mean KL, {_CAPTIONS[mode]}",
  )


def _online_figures(ctx, online) -> list[report.Figure]:
  groups = ctx.census.groups
  figures = []
  for key, what in (
    ("median_loss", "median EMA mean KL"),
    ("median_improvement", "median online improvement"),
  ):
    curves = {GROUP_NAMES[n]: (online["steps"], online[n][key]) for n in groups}
    figures.append(
      figure(
        ctx,
        plots.curves,
        f"persistence_online_{key}.png",
        curves,
        title=f"Tracker: {what} per group over the run",
        xlabel="step",
        ylabel=what,
        hline=(0.0, "no change") if key == "median_improvement" else None,
        caption=(
          "From the tracker snapshots the run saved at each "
          "evaluation (`rock.mean_loss`, `rock.improvement`)."
        ),
      )
    )
  return figures


def section(ctx):
  """Early against late per-type KL, and the tracker's online view."""
  a = ctx.analysis
  numbers, figures, tables, paragraphs = {}, [], [], ()
  early_path = a.early or persistence.earliest_export(ctx.workdir)
  if early_path:
    early = ctx.session.load_params("student", early_path, "analysis.early")
    numbers["early"] = early_path
    modes = (
      ("own", "fixed")
      if a.persistence_contexts == "both"
      else (a.persistence_contexts,)
    )
    for mode in modes:
      result = _compare(ctx, early, mode)
      numbers[mode] = result
      figures += _mode_figures(ctx, mode, result)
      tables.append(_mode_table(mode, result))
  else:
    paragraphs = (
      "No early checkpoint: set analysis.early, or train with "
      "train.export_every to keep intermediate exports.",
    )
  online = persistence.online(ctx.workdir, ctx.census.groups)
  numbers["online"] = online
  if online["steps"]:
    figures += _online_figures(ctx, online)
  return numbers, report.Section(
    title="Persistence",
    paragraphs=paragraphs,
    tables=tuple(tables),
    figures=tuple(figures),
  )
