"""Multiple-comparison corrections for families of tests (e.g. one
knockout per candidate token)."""

from __future__ import annotations

import numpy as np


def _p_values(p_values) -> np.ndarray:
  p = np.asarray(p_values, dtype=np.float64).reshape(-1)
  if np.any(np.isnan(p)) or np.any((p < 0) | (p > 1)):
    raise ValueError("p-values must be in [0, 1] and not NaN")
  return p


def benjamini_hochberg(p_values, q: float = 0.2) -> np.ndarray:
  """Benjamini-Hochberg step-up procedure at false discovery rate `q`.

  With the p-values sorted, p_(1) <= ... <= p_(m), rejects the hypotheses of
  p_(1), ..., p_(k) for the largest k with p_(k) <= q * k / m.

  Args:
    p_values: 1-D array-like of p-values in [0, 1].
    q: the target false discovery rate, > 0.

  Returns:
    Bool array in the input order, True where the hypothesis is rejected.
  """
  p = _p_values(p_values)
  if q <= 0:
    raise ValueError(f"q must be > 0, got {q}")
  m = p.size
  rejected = np.zeros(m, dtype=bool)
  if m == 0:
    return rejected
  order = np.argsort(p, kind="stable")
  thresholds = q * np.arange(1, m + 1) / m
  below = np.nonzero(p[order] <= thresholds)[0]
  if below.size:
    rejected[order[: below[-1] + 1]] = True
  return rejected


def bonferroni(p_values, alpha: float = 0.05) -> np.ndarray:
  """Bonferroni correction: rejects where p < alpha / m.

  Args:
    p_values: 1-D array-like of m p-values in [0, 1].
    alpha: the family-wise error rate.

  Returns:
    Bool array in the input order, True where the hypothesis is rejected.
  """
  p = _p_values(p_values)
  if p.size == 0:
    return np.zeros(0, dtype=bool)
  return p < alpha / p.size
