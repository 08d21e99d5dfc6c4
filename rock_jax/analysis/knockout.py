"""Inference-time knockout: is a token a pillar of accuracy (paper §3)?

Each candidate's logit is set to −inf at every decoding step (deterministic
greedy decoding), and the per-problem correctness is compared with the
unbanned run by a paired bootstrap; ≤ −ε with a significant test is a Strong
Pillar, ≥ +ε a Strong Stumbling Block, anything else Neutral. A sign test
over the candidates asks whether knockouts lean one way as a population.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from rock_jax import evaluate
from rock_jax.analysis import multiple, stats


def greedy_run(cfg, params, source, *, logit_bias_V=None, **eval_kwargs):
  """Per-problem correctness and emitted-token counts of one greedy pass.

  Returns:
    (correct bool [P] in stored order, count_V int64 [V]).
  """
  correct, count_V = [], np.zeros(cfg.vocab_size, np.int64)
  for graded in evaluate.greedy_batches(
    cfg,
    params,
    source,
    role="student",
    logit_bias_V=logit_bias_V,
    **eval_kwargs,
  ):
    correct.extend(graded.correct)
    for ids in graded.completion_ids:
      count_V += np.bincount(ids, minlength=cfg.vocab_size)
  return np.asarray(correct, bool), count_V


def ban(vocab_size: int, token_id: int) -> np.ndarray:
  """The logit bias that removes one token from the vocabulary."""
  bias = np.zeros(vocab_size, np.float32)
  bias[token_id] = -np.inf
  return bias


def knockout(
  run: Callable,
  candidates,
  vocab_size: int,
  *,
  n_resamples: int = 10000,
  alpha: float = 0.05,
  epsilon: float = 0.01,
  seed: int = 0,
  on_candidate: Callable | None = None,
) -> dict:
  """Bans each candidate in turn and tests its effect on accuracy.

  Args:
    run: `logit_bias_V or None -> (correct [P], count_V [V])`, e.g.
      `functools.partial(greedy_run, cfg, params, source, ...)`.
    candidates: token ids, in screening order.
    vocab_size: V.
    n_resamples, alpha, epsilon, seed: the bootstrap and the census rule.
    on_candidate: called with (index, row) after each candidate (progress).

  Returns:
    {"baseline": accuracy, "problems": P, "rows": [per candidate: id,
    delta, ci_low, ci_high, p_value, class, emitted (must be 0),
    baseline_count], "census": {class: n}, "sign_test" over the significant
    rows and "sign_test_all" over every nonzero Δ, "bonferroni" and
    "benjamini_hochberg" rejection counts}.
  """
  base, base_count = run(None)
  rows = []
  for index, token_id in enumerate(np.asarray(candidates).tolist()):
    correct, count = run(ban(vocab_size, token_id))
    result = stats.paired_bootstrap(
      base, correct, n_resamples=n_resamples, alpha=alpha, seed=seed
    )
    row = {
      "id": int(token_id),
      **result.to_dict(),
      "class": stats.classify(result, epsilon=epsilon, alpha=alpha),
      "emitted": int(count[token_id]),
      "baseline_count": int(base_count[token_id]),
    }
    if row["emitted"]:
      raise AssertionError(
        f"token {token_id} was banned but emitted {row['emitted']} times"
      )
    rows.append(row)
    if on_candidate is not None:
      on_candidate(index, row)
  deltas = np.asarray([r["delta"] for r in rows])
  p_values = np.asarray([r["p_value"] for r in rows])
  significant = deltas[p_values < alpha]
  return {
    "baseline": float(base.mean()),
    "problems": len(base),
    "rows": rows,
    "census": {c: sum(r["class"] == c for r in rows) for c in stats.CLASSES},
    "sign_test": stats.sign_test(significant).to_dict(),
    "sign_test_all": stats.sign_test(deltas).to_dict(),
    "bonferroni": int(multiple.bonferroni(p_values, alpha).sum()),
    "benjamini_hochberg": int(multiple.benjamini_hochberg(p_values, 0.2).sum()),
  }
