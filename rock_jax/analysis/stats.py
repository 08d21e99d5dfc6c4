"""Host-side statistics for the Rock-Token analyses (NumPy/SciPy, float64).

* `paired_bootstrap` / `classify`: per-token knockout effects on per-problem
  correctness, with a percentile CI and a null-shifted bootstrap p-value, and
  the pillar / neutral / stumbling-block label derived from them;
  `seed_bootstrap`: the same over seeds and problems (training variants).
* `sign_test`, `wilcoxon`, `mann_whitney`: paired and unpaired comparisons of
  per-type quantities (e.g. gradient norms before and after freezing).
* `jaccard`, `steps_to_target`, `mean_std`: small summaries for the report.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Iterable, Sequence

import numpy as np
from scipy import stats as sp_stats

CLASSES = ("strong_pillar", "neutral", "strong_stumbling_block")

# Upper bound on resampled indices held at once by `paired_bootstrap`
# (~80 MB of int64 plus as much float64); the resamples are drawn in blocks.
_MAX_INDICES = 10_000_000


class _Record:
  """Base of the result dataclasses: their fields as a JSON-ready dict."""

  def to_dict(self) -> dict:
    """The fields as a plain dict (JSON-serialisable)."""
    return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class BootstrapResult(_Record):
  """A paired bootstrap of `mean(variant) - mean(base)`.

  Attributes:
    delta: the observed difference of means, variant minus base.
    ci_low: lower end of the percentile confidence interval.
    ci_high: upper end of the percentile confidence interval.
    p_value: two-sided null-shifted bootstrap p-value of `delta == 0`.
    n: number of paired problems.
    n_resamples: number of bootstrap resamples.
  """

  delta: float
  ci_low: float
  ci_high: float
  p_value: float
  n: int
  n_resamples: int


@dataclasses.dataclass(frozen=True)
class SignTest(_Record):
  """An exact binomial sign test over the nonzero values.

  Attributes:
    negative: number of negative values.
    positive: number of positive values.
    p_value: two-sided exact binomial p-value (success probability 0.5).
    p_one_sided_negative: P(X >= negative) for X ~ Binomial(n, 0.5), n the
      number of nonzero values; small when negatives dominate.
  """

  negative: int
  positive: int
  p_value: float
  p_one_sided_negative: float


def _as_1d(name: str, values) -> np.ndarray:
  array = np.asarray(values, dtype=np.float64)
  if array.ndim != 1:
    raise ValueError(f"{name} must be 1-D, got shape {array.shape}")
  return array


def paired_bootstrap(
  base,
  variant,
  *,
  n_resamples: int = 10000,
  alpha: float = 0.05,
  seed: int = 0,
) -> BootstrapResult:
  """Paired bootstrap of the change in mean correctness, variant minus base.

  The same resampled problem indices are applied to both arrays, i.e. the
  bootstrap is over the per-problem differences `variant - base`.

  Args:
    base: 1-D per-problem correctness (0/1 or floats) of the baseline.
    variant: the same problems, in the same order, under the variant.
    n_resamples: number of bootstrap resamples B (>= 1).
    alpha: the CI is the (alpha/2, 1 - alpha/2) percentile interval; in (0, 1).
    seed: seed of `np.random.default_rng`; fixes the resampled indices.

  Returns:
    A `BootstrapResult`. `p_value` is `(1 + #{|d* - delta| >= |delta|}) /
    (B + 1)` over the bootstrap differences d*, and exactly 1.0 when
    `delta == 0`.

  Raises:
    ValueError: on mismatched or empty inputs, non-finite values,
      `n_resamples < 1` or `alpha` outside (0, 1).
  """
  base = _as_1d("base", base)
  variant = _as_1d("variant", variant)
  if base.shape != variant.shape:
    raise ValueError(
      f"base and variant must have the same length, got {base.shape[0]} "
      f"(base) and {variant.shape[0]} (variant)"
    )
  n = base.shape[0]
  if n == 0:
    raise ValueError("base and variant are empty (length 0 and 0)")
  if not (np.all(np.isfinite(base)) and np.all(np.isfinite(variant))):
    raise ValueError("base and variant must be finite")
  if n_resamples < 1:
    raise ValueError(f"n_resamples must be >= 1, got {n_resamples}")
  if not 0.0 < alpha < 1.0:
    raise ValueError(f"alpha must be in (0, 1), got {alpha}")

  delta = float(variant.mean() - base.mean())
  d_star = _resample((variant - base)[None], n_resamples, seed, False)
  return _bootstrap_result(delta, d_star, alpha, n)


def _resample(diff_SxN, n_resamples, seed, over_seeds) -> np.ndarray:
  """Bootstrap means of paired differences: problems drawn within each row,
  and the rows themselves drawn too if `over_seeds`."""
  s, n = diff_SxN.shape
  rng = np.random.default_rng(seed)
  block = max(1, _MAX_INDICES // (s * n))
  d_star = np.empty(n_resamples, dtype=np.float64)
  for start in range(0, n_resamples, block):
    size = min(block, n_resamples - start)
    rows = np.arange(s)[None, :, None]
    if over_seeds:
      rows = rng.integers(0, s, size=(size, s, 1))
    idx = rng.integers(0, n, size=(size, s, n))
    d_star[start : start + size] = diff_SxN[rows, idx].mean(axis=(1, 2))
  return d_star


def _bootstrap_result(delta, d_star, alpha, n) -> BootstrapResult:
  """The percentile CI and null-shifted p-value of resampled deltas."""
  ci_low, ci_high = np.quantile(d_star, [alpha / 2, 1 - alpha / 2])
  if delta == 0.0:
    p_value = 1.0
  else:
    # d* and delta are computed differently (mean of differences vs
    # difference of means), so on lattice data (0/1 correctness) a resample
    # exactly on the boundary |d* - delta| == |delta| can land a few ulps
    # either side; the slack counts such ties as extreme, as ">=" intends.
    slack = 1e-12 * max(1.0, abs(delta))
    extreme = np.count_nonzero(np.abs(d_star - delta) >= abs(delta) - slack)
    p_value = (1.0 + extreme) / (len(d_star) + 1.0)
  return BootstrapResult(
    delta=delta,
    ci_low=float(ci_low),
    ci_high=float(ci_high),
    p_value=float(p_value),
    n=int(n),
    n_resamples=len(d_star),
  )


def seed_bootstrap(
  base_SxN, variant_SxN, *, n_resamples=10000, alpha=0.05, seed=0
) -> BootstrapResult:
  """Paired two-level bootstrap over seeds, then problems within a seed.

  Each resample draws S seeds with replacement and, for each, N of its
  paired problems with replacement; the spread therefore includes how
  much a run's outcome varies with its training seed, which a bootstrap
  over pooled (seed, problem) pairs leaves out. Same CI and p-value as
  `paired_bootstrap`; `n` is the number of seeds.
  """
  base = np.asarray(base_SxN, np.float64)
  variant = np.asarray(variant_SxN, np.float64)
  if base.ndim != 2 or base.shape != variant.shape or not base.size:
    raise ValueError(
      "base and variant must be non-empty [seeds, problems] arrays of one "
      f"shape, got {base.shape} and {variant.shape}"
    )
  if not 0.0 < alpha < 1.0:
    raise ValueError(f"alpha must be in (0, 1), got {alpha}")
  diff = variant - base
  d_star = _resample(diff, n_resamples, seed, True)
  return _bootstrap_result(float(diff.mean()), d_star, alpha, diff.shape[0])


def classify(
  result: BootstrapResult, *, epsilon: float = 0.01, alpha: float = 0.05
) -> str:
  """Labels a knockout effect; one of `CLASSES`.

  Knocking out a token whose removal lowers accuracy (delta <= -epsilon,
  significant) marks it a pillar; one whose removal raises accuracy is a
  stumbling block.

  Args:
    result: the bootstrap of knockout-minus-baseline correctness.
    epsilon: minimum absolute accuracy change to count as an effect.
    alpha: significance level for `result.p_value`.

  Returns:
    "strong_pillar", "strong_stumbling_block" or "neutral".
  """
  if result.p_value < alpha:
    if result.delta <= -epsilon:
      return "strong_pillar"
    if result.delta >= epsilon:
      return "strong_stumbling_block"
  return "neutral"


def sign_test(values) -> SignTest:
  """Exact two-sided binomial sign test of the nonzero `values`.

  Zeros (and NaNs) are dropped.

  Args:
    values: 1-D array-like of signed quantities (e.g. per-token changes).

  Returns:
    A `SignTest`; with no nonzero values, zero counts and p-values 1.0.
  """
  values = np.asarray(values, dtype=np.float64).reshape(-1)
  values = values[~np.isnan(values)]
  negative = int(np.count_nonzero(values < 0))
  positive = int(np.count_nonzero(values > 0))
  total = negative + positive
  if total == 0:
    return SignTest(0, 0, 1.0, 1.0)
  two_sided = sp_stats.binomtest(negative, total, 0.5).pvalue
  one_sided = sp_stats.binomtest(
    negative, total, 0.5, alternative="greater"
  ).pvalue
  return SignTest(negative, positive, float(two_sided), float(one_sided))


def _median(values: np.ndarray) -> float:
  return float(np.median(values)) if values.size else float("nan")


def wilcoxon(before, after) -> dict:
  """Paired Wilcoxon signed-rank test of `after - before`, two-sided.

  Pairs with a NaN on either side are dropped; zero differences are dropped
  before the test (`zero_method="wilcox"`) but count in `n` and in the
  medians.

  Args:
    before: 1-D per-type values before the intervention.
    after: the same types, in the same order, after it.

  Returns:
    A dict with "n" (pairs without NaN), "median_before", "median_after",
    "median_change" (median of after - before), "relative_median_change"
    (median_change / median_before; nan if median_before is 0),
    "statistic" and "p_value" (nan and 1.0 without a nonzero difference).

  Raises:
    ValueError: if the shapes differ.
  """
  before = np.asarray(before, dtype=np.float64)
  after = np.asarray(after, dtype=np.float64)
  if before.shape != after.shape:
    raise ValueError(
      f"before and after must have the same shape, got {before.shape} "
      f"(before) and {after.shape} (after)"
    )
  before, after = before.reshape(-1), after.reshape(-1)
  keep = ~(np.isnan(before) | np.isnan(after))
  before, after = before[keep], after[keep]
  change = after - before
  median_before = _median(before)
  median_change = _median(change)
  if median_before == 0.0 or math.isnan(median_before):
    relative = float("nan")
  else:
    relative = median_change / median_before
  nonzero = change[change != 0]
  if nonzero.size < 1:
    statistic, p_value = float("nan"), 1.0
  else:
    # "wilcox" discards zero differences anyway; dropping them here keeps
    # SciPy's "auto" method on the exact null distribution for small
    # samples, which it abandons for the normal one when zeros are present.
    res = sp_stats.wilcoxon(
      nonzero, zero_method="wilcox", alternative="two-sided"
    )
    statistic, p_value = float(res.statistic), float(res.pvalue)
  return {
    "n": int(before.size),
    "median_before": median_before,
    "median_after": _median(after),
    "median_change": median_change,
    "relative_median_change": float(relative),
    "statistic": statistic,
    "p_value": p_value,
  }


def mann_whitney(a, b) -> dict:
  """Two-sided Mann-Whitney U test of two independent groups; NaNs dropped.

  Args:
    a: values of the first group.
    b: values of the second group.

  Returns:
    A dict with "n_a", "n_b", "median_a", "median_b", "statistic" (U of `a`)
    and "p_value" (nan and 1.0 if either group is empty).
  """
  a = np.asarray(a, dtype=np.float64).reshape(-1)
  b = np.asarray(b, dtype=np.float64).reshape(-1)
  a, b = a[~np.isnan(a)], b[~np.isnan(b)]
  if a.size == 0 or b.size == 0:
    statistic, p_value = float("nan"), 1.0
  else:
    res = sp_stats.mannwhitneyu(a, b, alternative="two-sided")
    statistic, p_value = float(res.statistic), float(res.pvalue)
  return {
    "n_a": int(a.size),
    "n_b": int(b.size),
    "median_a": _median(a),
    "median_b": _median(b),
    "statistic": statistic,
    "p_value": p_value,
  }


def jaccard(a: Iterable[int], b: Iterable[int]) -> float:
  """Jaccard similarity |A ∩ B| / |A ∪ B| of two collections of ints.

  Args:
    a: ints (e.g. token ids); duplicates are ignored.
    b: ints.

  Returns:
    The similarity in [0, 1]; 1.0 when both are empty.
  """
  set_a = {int(x) for x in a}
  set_b = {int(x) for x in b}
  union = set_a | set_b
  if not union:
    return 1.0
  return len(set_a & set_b) / len(union)


def steps_to_target(
  steps: Sequence[float], accuracy: Sequence[float], target: float
) -> float:
  """First step at which an accuracy curve reaches `target`.

  Linearly interpolated between the last evaluation below the target and
  the first at or above it. NaN evaluations are skipped, so the bracket is
  formed by the neighbouring valid evaluations.

  Args:
    steps: strictly increasing evaluation steps.
    accuracy: the accuracy at each step.
    target: the accuracy to reach.

  Returns:
    The (interpolated) step; the first step if it already reaches the
    target; `nan` if the target is never reached.

  Raises:
    ValueError: on mismatched lengths or steps that do not increase.
  """
  steps = np.asarray(steps, dtype=np.float64).reshape(-1)
  accuracy = np.asarray(accuracy, dtype=np.float64).reshape(-1)
  if steps.size != accuracy.size:
    raise ValueError(
      f"steps and accuracy must have the same length, got {steps.size} "
      f"(steps) and {accuracy.size} (accuracy)"
    )
  if np.any(np.diff(steps) <= 0):
    raise ValueError("steps must be strictly increasing")
  keep = ~np.isnan(accuracy)
  steps, accuracy = steps[keep], accuracy[keep]
  reached = np.nonzero(accuracy >= target)[0]
  if reached.size == 0:
    return float("nan")
  i = int(reached[0])
  if i == 0:
    return float(steps[0])
  s0, s1 = steps[i - 1], steps[i]
  a0, a1 = accuracy[i - 1], accuracy[i]
  # a0 < target <= a1, so a1 > a0 and the division is safe.
  return float(s0 + (target - a0) / (a1 - a0) * (s1 - s0))


def mean_std(values) -> tuple[float, float]:
  """Mean and sample standard deviation (ddof=1).

  Args:
    values: array-like of numbers.

  Returns:
    `(mean, std)`; std is 0.0 for a single value; `(nan, nan)` for none.
  """
  values = np.asarray(values, dtype=np.float64).reshape(-1)
  if values.size == 0:
    return float("nan"), float("nan")
  if values.size == 1:
    return float(values[0]), 0.0
  return float(values.mean()), float(values.std(ddof=1))
