"""One module per analysis section: compute, write figures, describe.

Each section is `section(ctx) -> (numbers, report.Section)`: the JSON-ready
numbers and the report section built from them, from the shared
`study.context.Context`.

Modules:
  common       group labels, NaN-safe medians and means
  census       Rock Score census, coverage, density, stability (paper §2.2)
  gradients    logit-space gradient geometry per group, parameter share
  persistence  early against late per-type KL; the tracker's online view
  knockout     ban each candidate at decoding; pillar census, sign test
  freeze       uniform OPD against the freeze variants over seeds
"""

from __future__ import annotations

from rock_jax.study.sections import (
  census,
  freeze,
  gradients,
  knockout,
  persistence,
)

SECTIONS = {
  "census": census.section,
  "gradients": gradients.section,
  "persistence": persistence.section,
  "knockout": knockout.section,
  "freeze": freeze.section,
}


def preamble(ctx) -> tuple[str, ...]:
  """The report's opening: what the corpus and the rock set are."""
  a = ctx.analysis
  if ctx.census is None:
    return ("Freeze experiments only (no models were loaded).",)
  n, width = ctx.census.corpus.kl_BxN.shape
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
