"""One function per analysis: compute, write figures, describe.

Each takes the pipeline's `Context` and returns `(numbers, section)`: the
JSON-ready numbers and the report `Section` built from them.
"""

from __future__ import annotations

import functools

import jax
import numpy as np

from rock_jax import config_lib
from rock_jax.analysis import (
  census,
  freeze,
  gradients,
  knockout,
  persistence,
  plots,
  report,
  stats,
)

_GROUP_NAMES = {
  "rock": "rock",
  "high_kl_rare": "rare high-KL",
  "random": "random",
}


def _median(x):
  """Median ignoring NaN; NaN (without a warning) when nothing is left."""
  x = np.asarray(x, np.float64)
  x = x[~np.isnan(x)]
  return float(np.median(x)) if x.size else float("nan")


def _mean(x):
  x = np.asarray(x, np.float64)
  x = x[~np.isnan(x)]
  return float(np.mean(x)) if x.size else float("nan")


def preamble(ctx) -> tuple[str, ...]:
  a = ctx.config.analysis
  if ctx.corpus is None:
    return ("Freeze experiments only (no models were loaded).",)
  n, width = ctx.corpus.kl_BxN.shape
  return (
    f"Corpus: greedy completions of the analysed student on {n} problems of "
    f"split `{a.split or ctx.config.data.eval_split}` (up to {width} "
    "generated tokens), teacher-forced through the teacher; ℓ_t is the exact "
    "full-vocabulary reverse KL at each generated position, credited to the "
    "token emitted there.",
    f"Rock set: the top K = {a.k} types by R(v) = count × mean KL "
    f"(min count {a.min_count}, {a.exclude_most_frequent} most frequent "
    "types excluded).",
  )


def _table_rows(ctx, ids, ts, limit=None):
  rows = []
  for rank, i in enumerate(np.asarray(ids)[:limit], 1):
    row = [rank, int(i), ctx.text(i), int(ts.count_V[i]), ts.mean_V[i]]
    row.append(ts.kl_sum_V[i])
    if ctx.truth is not None:
      row.append(int(i) in ctx.truth)
    rows.append(tuple(row))
  columns = ["rank", "id", "token", "count", "mean KL", "R(v)"]
  if ctx.truth is not None:
    columns.append("planted")
  return tuple(columns), tuple(rows)


def census_(ctx):
  """Rock Score census, coverage, density and stability (paper §2.2)."""
  a = ctx.config.analysis
  vocab = ctx.kl_cfg.student.vocab_size
  corpus = ctx.corpus
  ts = ctx.stats
  rocks = ctx.rocks
  total_kl = ts.kl_sum_V.sum()
  seen = ts.count_V > 0
  density = census.sequence_density(corpus.ids_BxN, corpus.mask_BxN, rocks)
  ks = sorted(set(config_lib.parse_ints(a.k_sweep, "analysis.k_sweep")) | {a.k})
  curve = census.coverage(ts, ks, **ctx.selection)
  stability = census.stability(
    corpus,
    config_lib.parse_ints(a.stability_sizes, "analysis.stability_sizes"),
    ks,
    vocab,
    **ctx.selection,
  )
  unselected = np.flatnonzero(seen)
  unselected = unselected[~np.isin(unselected, rocks)]
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
    "rock_density_median": _median(density),
    "rock_mean_kl": _mean(ts.mean_V[rocks]),
    "unselected_mean_kl": _mean(ts.mean_V[unselected]),
    "coverage": {"ks": ks, "share": curve},
    "stability": stability,
  }
  k_index = ks.index(a.k)
  numbers["coverage_at_k"] = float(curve[k_index])
  numbers["jaccard_at_k"] = stability["mean"][k_index]
  if ctx.truth is not None:
    found = set(rocks.tolist())
    numbers["detection_precision"] = len(found & ctx.truth) / max(len(found), 1)
    numbers["detection_recall"] = len(found & ctx.truth) / len(ctx.truth)
    numbers["planted_ids"] = sorted(ctx.truth)
  columns, rows = _table_rows(ctx, rocks, ts)
  figures = [
    report.Figure(
      path=plots.bars(
        ctx.path("census_top_k.png"),
        [ctx.text(i) for i in rocks],
        ts.kl_sum_V[rocks],
        title=f"Top {len(rocks)} types by Rock Score",
        ylabel="R(v) = count × mean KL",
        highlight=None
        if ctx.truth is None
        else [int(i) in ctx.truth for i in rocks],
        legend=("not planted", "planted rock"),
      ),
      caption="R(v) of the rock set"
      + ("; highlighted: the planted rocks" if ctx.truth else ""),
    ),
    report.Figure(
      path=plots.histogram(
        ctx.path("census_mean_kl.png"),
        {
          f"unselected ({len(unselected)})": ts.mean_V[unselected],
          f"rock ({len(rocks)})": ts.mean_V[rocks],
        },
        title="Per-type mean KL (paper Fig. 2a)",
        xlabel="mean reverse KL per occurrence",
        log_x=True,
      ),
      caption="Rocks are not simply the highest-KL types: they combine "
      "frequency with a moderate mean KL.",
    ),
    report.Figure(
      path=plots.histogram(
        ctx.path("census_density.png"),
        {"sequences": density},
        title="Rock density per sequence (paper Fig. 2b)",
        xlabel="share of a completion's tokens in the rock set",
      ),
      caption="Share of each completion's tokens that are rocks.",
    ),
    report.Figure(
      path=plots.curves(
        ctx.path("census_coverage.png"),
        {
          "KL coverage": (ks, curve),
          "mean Jaccard": (ks, stability["mean"]),
        },
        title="Coverage and stability against K",
        xlabel="K",
        ylabel="share / Jaccard",
        log_x=True,
      ),
      caption="Share of the corpus KL in the top K, and the mean Jaccard of "
      f"the top K on nested prefixes {stability['sizes']} against all "
      "problems.",
    ),
  ]
  shown = {
    "problems": numbers["problems"],
    "generated positions": numbers["positions"],
    "observed types": numbers["observed_types"],
    "student greedy accuracy": numbers["student_accuracy"],
    "global mean KL": numbers["global_mean_kl"],
    "rock share of tokens": numbers["rock_token_share"],
    "median rock density per sequence": numbers["rock_density_median"],
    f"KL coverage at K = {a.k}": numbers["coverage_at_k"],
    f"mean Jaccard at K = {a.k}": numbers["jaccard_at_k"],
  }
  if ctx.truth is not None:
    shown["detection precision"] = numbers["detection_precision"]
    shown["detection recall"] = numbers["detection_recall"]
  section = report.Section(
    title="Rock Score census",
    numbers=shown,
    paragraphs=(
      f"The {len(rocks)} rocks are {shown['rock share of tokens']:.1%} of "
      f"the generated tokens and carry {numbers['rock_kl_share']:.1%} of "
      f"the KL; their mean KL per occurrence is "
      f"{numbers['rock_mean_kl']:.3g} against "
      f"{numbers['unselected_mean_kl']:.3g} for the other types.",
    ),
    tables=(
      report.Table(columns=columns, rows=rows, caption="The rock set"),
      report.Table(
        columns=("K", "KL coverage", "mean Jaccard"),
        rows=tuple(zip(ks, curve, stability["mean"], strict=True)),
        caption="Coverage and stability",
      ),
    ),
    figures=tuple(figures),
  )
  return numbers, section


def gradients_(ctx):
  """Logit-space gradient geometry per group and the parameter share."""
  a = ctx.config.analysis
  groups = ctx.groups
  tracked = np.concatenate(list(groups.values()))
  diag = gradients.logit_diagnostics(
    ctx.kl_cfg,
    ctx.params("student"),
    ctx.params("teacher"),
    ctx.corpus,
    ctx.stats,
    tracked,
    sharders=ctx.sharders,
    batch_size=a.batch_size,
  )
  slot = {int(i): s for s, i in enumerate(diag["ids"])}
  per_group = {}
  for name, ids in groups.items():
    index = [slot[int(i)] for i in ids]
    per_group[name] = {
      key: diag[key][index]
      for key in ("norm", "cos_balanced", "cos_global", "contribution")
    }
    per_group[name]["ids"] = ids
    per_group[name]["median_norm"] = _median(diag["norm"][index])
    per_group[name]["median_cos"] = _median(diag["cos_balanced"][index])
    per_group[name]["total_contribution"] = float(
      np.nansum(diag["contribution"][index])
    )
  contribution = np.nansum(
    [g["total_contribution"] for g in per_group.values()]
  )
  numbers = {
    "groups": per_group,
    "norm_test_rock_vs_high_kl": stats.mann_whitney(
      per_group["rock"]["norm"], per_group["high_kl_rare"]["norm"]
    ),
    "balanced_norm": diag["balanced_norm"],
    "global_norm": diag["global_norm"],
  }
  n_rows = ctx.config.train.batch_size
  batches = [
    _rows(ctx.corpus.batch, range(s, s + n_rows))
    for s in range(0, ctx.corpus.kl_BxN.shape[0] - n_rows + 1, n_rows)
  ][: a.grad_batches]
  if batches:
    share = gradients.parameter_share(
      ctx.kl_cfg,
      ctx.params("student"),
      ctx.params("teacher"),
      batches,
      ctx.rocks,
      sharders=ctx.sharders,
    )
    numbers["parameter_share"] = share
    numbers["parameter_norm_share_mean"] = float(np.mean(share["norm_share"]))
    numbers["parameter_projection_share_mean"] = float(
      np.mean(share["projection_share"])
    )
  labels = {
    name: f"{_GROUP_NAMES[name]} ({len(groups[name])})" for name in groups
  }
  figures = (
    report.Figure(
      path=plots.violin_or_box(
        ctx.path("gradients_norm.png"),
        {labels[n]: g["norm"] for n, g in per_group.items()},
        title="‖ḡ_t‖ per type (paper Fig. 3a)",
        ylabel="norm of the mean logit gradient",
        log=True,
      ),
      caption="Per-type mean reverse-KL gradient in logit space.",
    ),
    report.Figure(
      path=plots.violin_or_box(
        ctx.path("gradients_cos.png"),
        {labels[n]: g["cos_balanced"] for n, g in per_group.items()},
        title="cos(ḡ_t, G_balanced) per type (paper Fig. 3b)",
        ylabel="cosine to the frequency-balanced gradient",
      ),
      caption="Alignment of each type's mean gradient with G_balanced = "
      "Σ_t ḡ_t.",
    ),
    report.Figure(
      path=plots.scatter(
        ctx.path("gradients_contribution.png"),
        {
          labels[n]: (ctx.stats.count_V[g["ids"]], g["contribution"])
          for n, g in per_group.items()
        },
        title="Contribution n_t·‖ḡ_t‖·cos against frequency",
        xlabel="count n_t",
        ylabel="contribution",
      ),
      caption="Frequent types with a small, aligned gradient add up.",
    ),
  )
  rows = tuple(
    (
      labels[n],
      g["median_norm"],
      g["median_cos"],
      _median(g["cos_global"]),
      g["total_contribution"] / contribution if contribution else np.nan,
    )
    for n, g in per_group.items()
  )
  shown = {
    "Mann-Whitney p (norms, rock vs rare high-KL)": numbers[
      "norm_test_rock_vs_high_kl"
    ]["p_value"],
  }
  paragraphs = []
  if batches:
    shown["rock share of the parameter-gradient norm"] = numbers[
      "parameter_norm_share_mean"
    ]
    shown["rock projection share of the parameter gradient"] = numbers[
      "parameter_projection_share_mean"
    ]
    paragraphs.append(
      f"Parameter space: over {len(batches)} batches of {n_rows} "
      "sequences, the token-mean reverse-KL loss was differentiated once "
      "with only the rock positions and once with only the others "
      "(g_all = g_rock + g_rest). Rock positions are "
      f"{np.mean(share['token_share']):.1%} of the tokens; ‖g_rock‖ / "
      f"‖g_all‖ = {numbers['parameter_norm_share_mean']:.3g}, and the "
      "projection ⟨g_rock, g_all⟩ / ‖g_all‖² = "
      f"{numbers['parameter_projection_share_mean']:.3g} (the rest's "
      "projection is one minus it)."
    )
  section = report.Section(
    title="Gradient diagnostics",
    numbers=shown,
    paragraphs=tuple(paragraphs),
    tables=(
      report.Table(
        columns=(
          "group",
          "median ‖ḡ_t‖",
          "median cos(ḡ_t, G_balanced)",
          "median cos(ḡ_t, G_global)",
          "share of Σ contribution",
        ),
        rows=rows,
        caption="Per-group medians over types",
      ),
    ),
    figures=figures,
  )
  return numbers, section


def _rows(batch, index):
  index = np.asarray(list(index))
  return jax.tree.map(lambda x: np.asarray(x)[index], batch)


def persistence_(ctx):
  """Early against late per-type KL, and the tracker's online view."""
  a = ctx.config.analysis
  groups = ctx.groups
  numbers, figures, tables, paragraphs = {}, [], [], []
  early_path = a.early or persistence.earliest_export(ctx.workdir)
  labels = {n: _GROUP_NAMES[n] for n in groups}
  if early_path:
    early = ctx.load_student(early_path)
    numbers["early"] = early_path
    vocab = ctx.kl_cfg.student.vocab_size
    contexts = (
      ("own", "fixed")
      if a.persistence_contexts == "both"
      else (a.persistence_contexts,)
    )
    for mode in contexts:
      if mode == "own":
        corpus = ctx.collect(early)
        kl = corpus.kl_BxN
        ids, mask = corpus.ids_BxN, corpus.mask_BxN
      else:
        kl = census.score(
          ctx.kl_cfg,
          early,
          ctx.params("teacher"),
          ctx.corpus.batch,
          ctx.sharders,
          a.batch_size,
        )
        ids, mask = ctx.corpus.ids_BxN, ctx.corpus.mask_BxN
      ts_early = census.type_stats(ids, kl, mask, vocab)
      result = persistence.compare(ts_early, ctx.stats, groups)
      numbers[mode] = result
      caption = (
        "each checkpoint on its own greedy rollouts"
        if mode == "own"
        else "the late checkpoint's rollouts, re-scored by the early one"
      )
      figures.append(
        report.Figure(
          path=plots.scatter(
            ctx.path(f"persistence_{mode}.png"),
            {labels[n]: (r["early"], r["late"]) for n, r in result.items()},
            title=f"Per-type mean KL, early vs late ({mode} contexts)",
            xlabel="early checkpoint",
            ylabel="late checkpoint",
            diagonal=True,
            log=True,
          ),
          caption=f"Paper Fig. 3c: {caption}; below the diagonal = learnt.",
        )
      )
      figures.append(
        report.Figure(
          path=plots.histogram(
            ctx.path(f"persistence_change_{mode}.png"),
            {labels[n]: r["late"] - r["early"] for n, r in result.items()},
            title=f"Change of per-type mean KL ({mode} contexts)",
            xlabel="late − early mean KL",
          ),
          caption="Paper Fig. 3d: the distribution of ΔKL per group.",
        )
      )
      tables.append(
        report.Table(
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
              labels[n],
              r["n"],
              r["median_before"],
              r["median_after"],
              r["relative_median_change"],
              r["p_value"],
            )
            for n, r in result.items()
          ),
          caption=f"Per-type mean KL, {caption}",
        )
      )
  else:
    paragraphs.append(
      "No early checkpoint: set analysis.early, or train with "
      "train.export_every to keep intermediate exports."
    )
  online = persistence.online(ctx.workdir, groups)
  numbers["online"] = online
  if online["steps"]:
    for key, what in (
      ("median_loss", "median EMA mean KL"),
      ("median_improvement", "median online improvement"),
    ):
      figures.append(
        report.Figure(
          path=plots.curves(
            ctx.path(f"persistence_online_{key}.png"),
            {labels[n]: (online["steps"], online[n][key]) for n in groups},
            title=f"Tracker: {what} per group over the run",
            xlabel="step",
            ylabel=what,
            hline=(0.0, "no change") if key == "median_improvement" else None,
          ),
          caption="From the tracker snapshots the run saved at each "
          "evaluation (`rock.mean_loss`, `rock.improvement`).",
        )
      )
  return numbers, report.Section(
    title="Persistence",
    paragraphs=tuple(paragraphs),
    tables=tuple(tables),
    figures=tuple(figures),
  )


def knockout_(ctx):
  """Ban each candidate at decoding; pillar census and sign test."""
  a = ctx.config.analysis
  candidates = census.top_k(ctx.stats, a.knockout_candidates, **ctx.selection)
  kwargs = dict(ctx.eval_kwargs)
  if a.knockout_examples:
    kwargs["num_examples"] = a.knockout_examples
  run = functools.partial(
    knockout.greedy_run,
    ctx.kl_cfg.student,
    ctx.params("student"),
    ctx.source,
    sharder=ctx.sharders[0],
    **kwargs,
  )

  def progress(index, row):
    print(
      f"  knockout {index + 1}/{len(candidates)}: {ctx.text(row['id'])!r} "
      f"Δ {row['delta']:+.3f} (p {row['p_value']:.3g}, {row['class']})",
      flush=True,
    )

  result = knockout.knockout(
    lambda bias: run(logit_bias_V=bias),
    candidates,
    ctx.kl_cfg.student.vocab_size,
    n_resamples=a.resamples,
    alpha=a.alpha,
    epsilon=a.epsilon,
    seed=a.bootstrap_seed,
    on_candidate=progress,
  )
  rocks = set(ctx.rocks.tolist())
  for rank, row in enumerate(result["rows"], 1):
    row["rank"] = rank
    row["text"] = ctx.text(row["id"])
    row["in_rock_set"] = row["id"] in rocks
    if ctx.truth is not None:
      row["planted"] = row["id"] in ctx.truth
  rows = result["rows"]
  in_k = [r for r in rows if r["in_rock_set"]]
  result["census_in_rock_set"] = {
    c: sum(r["class"] == c for r in in_k) for c in stats.CLASSES
  }
  result["sign_test_in_rock_set"] = stats.sign_test(
    [r["delta"] for r in in_k if r["p_value"] < a.alpha]
  ).to_dict()
  order = sorted(rows, key=lambda r: r["delta"])
  census_rows = tuple(
    (
      c.replace("_", " "),
      n,
      n / max(len(rows), 1),
      result["census_in_rock_set"][c],
    )
    for c, n in result["census"].items()
  )
  columns = ["rank", "token", "Δ accuracy", "95% CI", "p", "class", "in K"]
  if ctx.truth is not None:
    columns.append("planted")
  table_rows = []
  for r in order:
    if r["class"] == "neutral" and len(table_rows) >= 20:
      continue
    cells = [
      r["rank"],
      r["text"],
      r["delta"],
      f"[{r['ci_low']:+.3f}, {r['ci_high']:+.3f}]",
      r["p_value"],
      r["class"].replace("_", " "),
      r["in_rock_set"],
    ]
    if ctx.truth is not None:
      cells.append(r["planted"])
    table_rows.append(tuple(cells))
  sign = result["sign_test"]
  figure = report.Figure(
    path=plots.bars(
      ctx.path("knockout_delta.png"),
      [r["text"] for r in order],
      [r["delta"] for r in order],
      title="Accuracy change when one token is banned",
      ylabel="Δ accuracy",
      highlight=[r["p_value"] < a.alpha for r in order],
      legend=(f"p ≥ {a.alpha}", f"p < {a.alpha}"),
    ),
    caption=f"Sorted Δ; highlighted: bootstrap p < {a.alpha}.",
  )
  section = report.Section(
    title="Knockout",
    numbers={
      "baseline accuracy": result["baseline"],
      "problems": result["problems"],
      "candidates": len(rows),
      "significant negative / positive": f"{sign['negative']} / "
      f"{sign['positive']}",
      "sign test p (two-sided, significant rows)": sign["p_value"],
      "Bonferroni rejections": result["bonferroni"],
      "Benjamini-Hochberg (q = 0.2) rejections": result["benjamini_hochberg"],
    },
    paragraphs=(
      f"Each of the top {len(rows)} types by R(v) was banned at every "
      "decoding step (logit −∞, greedy, so every difference is the ban's "
      f"own). Strong Pillar: Δ ≤ −{a.epsilon} and a paired bootstrap "
      f"({a.resamples} resamples) rejects Δ = 0 at α = {a.alpha}; Strong "
      "Stumbling Block symmetrically; otherwise Neutral. No banned token "
      "was ever emitted.",
    ),
    tables=(
      report.Table(
        columns=("class", "tokens", "share", f"of them in the K = {a.k} set"),
        rows=census_rows,
        caption="Pillar census",
      ),
      report.Table(
        columns=tuple(columns),
        rows=tuple(table_rows),
        caption="Candidates by Δ (all significant ones, then the neutral "
        "ones up to 20 rows)",
      ),
    ),
    figures=(figure,),
  )
  return result, section


def freeze_(ctx):
  """Uniform OPD against the freeze variants over seeds."""
  a = ctx.config.analysis
  runs = freeze.load_runs(freeze.run_dirs(a.freeze_runs))
  result = freeze.summarize(runs, a.target_fraction)
  # Seeds whose evaluations differ in number have no mean curve.
  variants = {k: v for k, v in result["variants"].items() if "curve_mean" in v}
  curves = {k: (v["steps"], v["curve_mean"]) for k, v in variants.items()}
  bands = {
    k: (
      v["steps"],
      np.subtract(v["curve_mean"], v["curve_sd"]),
      np.add(v["curve_mean"], v["curve_sd"]),
    )
    for k, v in variants.items()
  }
  target = (result["target"], f"target {result['target']:.3f}")
  figures = (
    report.Figure(
      path=plots.curves(
        ctx.path("freeze_steps.png"),
        curves,
        bands=bands,
        hline=target,
        title="Accuracy against steps (mean ± sd over seeds)",
        xlabel="step",
        ylabel="greedy accuracy",
      ),
      caption="Paper Fig. 5, on this run's task.",
    ),
    report.Figure(
      path=plots.curves(
        ctx.path("freeze_wall.png"),
        {k: (v["wall_mean"], v["curve_mean"]) for k, v in variants.items()},
        hline=target,
        title="Accuracy against training wall time",
        xlabel="seconds",
        ylabel="greedy accuracy",
      ),
      caption="Freezing skips no computation, so time per step is the same "
      "up to rollout lengths.",
    ),
  )
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
  paired = []
  for label, p in result["paired"].items():
    b = p.get("bootstrap", {})
    paired.append(
      (
        label,
        p["mean_difference"],
        p["sd_difference"],
        b.get("ci_low"),
        b.get("ci_high"),
        b.get("p_value"),
      )
    )
  section = report.Section(
    title="Freeze experiments",
    numbers={"target accuracy": result["target"]},
    paragraphs=(
      f"Target = {a.target_fraction:g} × the uniform runs' mean final "
      "accuracy. Steps to target are interpolated between evaluations; the "
      "paper's wall-clock speed-up is read as fewer steps to the same "
      "accuracy.",
    ),
    tables=(
      report.Table(
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
      ),
      report.Table(
        columns=(
          "variant − uniform",
          "mean Δ",
          "sd Δ",
          "95% CI low",
          "95% CI high",
          "bootstrap p",
        ),
        rows=tuple(paired),
        caption="Paired by seed; the bootstrap resamples (seed, problem) "
        "pairs of the final evaluation",
      ),
    ),
    figures=figures,
  )
  return result, section


def prepare(ctx) -> None:
  """Decodes and scores the corpus, selects the rocks and the groups."""
  a = ctx.config.analysis
  ctx.corpus = ctx.collect(ctx.params("student"))
  ctx.corpus.save(ctx.path("corpus.npz"))
  vocab = ctx.kl_cfg.student.vocab_size
  ctx.stats = census.type_stats(
    ctx.corpus.ids_BxN, ctx.corpus.kl_BxN, ctx.corpus.mask_BxN, vocab
  )
  ctx.rocks = census.top_k(ctx.stats, a.k, **ctx.selection)
  ctx.groups = census.groups(
    ctx.stats,
    ctx.rocks,
    high_kl_k=a.high_kl_k,
    high_kl_min_count=a.high_kl_min_count,
    random_k=a.random_k,
    seed=a.random_seed,
  )


SECTIONS = {
  "census": census_,
  "gradients": gradients_,
  "persistence": persistence_,
  "knockout": knockout_,
  "freeze": freeze_,
}
