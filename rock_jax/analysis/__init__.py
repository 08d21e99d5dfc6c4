"""The paper's Rock-Token analyses, on arrays and model parameters.

Modules, in dependency order:
  stats        bootstraps (problems; seeds), sign test, Wilcoxon, Mann-Whitney,
               Jaccard
  multiple     Benjamini-Hochberg and Bonferroni corrections
  census       the analysis corpus, per-type R(v), top-K, coverage, groups
  gradients    logit-space gradient diagnostics, parameter-gradient share
  persistence  early against late per-type KL; tracker snapshots over a run
  knockout     ban a token at decoding, paired bootstrap, pillar classes
  freeze       finished freeze runs compared over seeds
  plots        matplotlib figures (Agg, no pyplot state)
  report       Markdown and self-contained HTML reports

The configured run of them is `rock_jax.study`.
"""
