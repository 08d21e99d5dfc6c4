"""Tests of rock_jax.analysis.stats against SciPy and hand-worked values."""

import dataclasses
import math

import numpy as np
import pytest
from scipy import stats as sp_stats

from rock_jax.analysis import stats

B = 10_000
N = 300


def _binary(seed, p_base, p_variant, n=N):
  rng = np.random.default_rng(seed)
  base = (rng.random(n) < p_base).astype(np.float64)
  variant = (rng.random(n) < p_variant).astype(np.float64)
  return base, variant


def _continuous(seed, shift, n=N):
  rng = np.random.default_rng(seed)
  base = rng.normal(0.5, 0.2, n)
  return base, base + rng.normal(shift, 0.3, n)


def _quantile_tolerance(diff, lattice):
  """4-sigma bound on |ours - scipy| for a 2.5% / 97.5% bootstrap quantile.

  A sample quantile at level p from B draws has standard deviation
  sqrt(p (1 - p) / B) / f(x_p), f the density there. The bootstrap mean of n
  differences is close to Normal(mean, se) with se = std(diff) / sqrt(n)
  (ddof=0: the bootstrap resamples the empirical distribution), so
  f(x_p) = phi(z_p) / se. The two implementations draw independently, so
  their difference has sqrt(2) times that deviation. On lattice data (0/1
  correctness: the mean lives on multiples of 1/n) each estimate is snapped
  to a lattice point, which adds up to one lattice step.
  """
  p = 0.025
  se = diff.std() / math.sqrt(diff.size)
  density = sp_stats.norm.pdf(sp_stats.norm.ppf(1 - p)) / se
  sd_quantile = math.sqrt(p * (1 - p) / B) / density
  return 4 * math.sqrt(2) * sd_quantile + (1 / diff.size if lattice else 0.0)


def _scipy_ci(diff, seed):
  res = sp_stats.bootstrap(
    (diff,),
    np.mean,
    n_resamples=B,
    confidence_level=0.95,
    method="percentile",
    rng=np.random.default_rng(seed),
  )
  return res.confidence_interval.low, res.confidence_interval.high


@pytest.mark.parametrize(
  "base, variant, lattice",
  [
    (*_binary(1234, 0.6, 0.55), True),
    (*_binary(99, 0.6, 0.6), True),
    (*_continuous(5, 0.02), False),
  ],
  ids=["binary_effect", "binary_null", "continuous"],
)
def test_bootstrap_ci_matches_scipy(base, variant, lattice):
  diff = variant - base
  result = stats.paired_bootstrap(base, variant, n_resamples=B, seed=0)
  assert result.delta == variant.mean() - base.mean()
  assert result.n == N and result.n_resamples == B
  tol = _quantile_tolerance(diff, lattice)
  # For n=300 binary differences (std ~0.7): sd_quantile ~1.1e-3, so the
  # bound is ~0.0062 + 0.0033 (one lattice step).
  assert tol < (0.01 if lattice else 0.007)
  low, high = _scipy_ci(diff, seed=7)
  assert result.ci_low == pytest.approx(low, abs=tol)
  assert result.ci_high == pytest.approx(high, abs=tol)
  assert result.ci_low <= result.delta <= result.ci_high


def _exact_null_shifted_p(diff):
  """P(|S* - K| >= |K|) for integer differences, S* the resampled sum.

  S* is a sum of n i.i.d. draws from the empirical distribution of `diff`;
  its law is the n-fold convolution of that distribution, computed here in
  exact integer arithmetic (no float ties).
  """
  diff = diff.astype(np.int64)
  n, lo = diff.size, int(diff.min())
  pmf_one = np.bincount(diff - lo) / n
  pmf = np.array([1.0])
  for _ in range(n):
    pmf = np.convolve(pmf, pmf_one)
  sums = np.arange(pmf.size) + n * lo
  k = int(diff.sum())
  return float(pmf[np.abs(sums - k) >= abs(k)].sum())


@pytest.mark.parametrize(
  "base, variant",
  [
    # diff = [0, 0, 1]: S* ~ Binomial(3, 1/3), K = 1, so the extreme set is
    # S* in {0, 2, 3}: p = (8 + 6 + 1) / 27. In floats, d* = 2/3 and
    # delta = 1 - 2/3 differ by an ulp on the boundary S* = 2.
    ([1, 1, 0], [1, 1, 1]),
    ([1, 1, 1, 1, 1, 1, 0, 0, 0, 0], [0, 1, 1, 1, 1, 1, 1, 1, 1, 1]),
    ([1, 0, 1, 0, 0, 1, 0, 1, 1, 0, 0], [1, 1, 0, 1, 1, 1, 0, 1, 1, 1, 0]),
  ],
)
def test_bootstrap_p_value_matches_exact_enumeration(base, variant):
  base, variant = np.array(base, float), np.array(variant, float)
  exact = _exact_null_shifted_p(variant - base)
  result = stats.paired_bootstrap(base, variant, n_resamples=B, seed=3)
  # Monte-Carlo standard deviation of the count fraction is
  # sqrt(p (1 - p) / B) <= 0.005; 4 sigma plus the (1 + .) / (B + 1) bias.
  tol = 4 * math.sqrt(exact * (1 - exact) / B) + 1 / B
  assert result.p_value == pytest.approx(exact, abs=tol)


def test_bootstrap_p_value_exact_three_problems():
  result = stats.paired_bootstrap([1, 1, 0], [1, 1, 1], seed=0)
  # Hand value of the first enumeration case; dropping the boundary tie
  # (S* = 2, probability 6/27) would give ~9/27 instead.
  assert result.p_value == pytest.approx(15 / 27, abs=0.021)


@pytest.mark.parametrize("seed, shift", [(5, 0.02), (11, 0.05), (2, 0.005)])
def test_bootstrap_p_value_matches_normal_approximation(seed, shift):
  base, variant = _continuous(seed, shift)
  diff = variant - base
  se = diff.std() / math.sqrt(N)
  p_normal = 2 * sp_stats.norm.sf(abs(diff.mean()) / se)
  assert 0.001 < p_normal < 0.95  # the tail is actually exercised
  result = stats.paired_bootstrap(base, variant, n_resamples=B, seed=1)
  # Monte-Carlo sd <= 0.005 (4 sigma: 0.02 at p = 0.5, ~0.01 at p = 0.1); the
  # two-sided tail's normal-approximation error is O(1/n) since the skewness
  # term cancels between the tails.
  tol = 4 * math.sqrt(p_normal * (1 - p_normal) / B) + 3 / N
  assert result.p_value == pytest.approx(p_normal, abs=tol)


def test_bootstrap_large_effect_hits_p_floor():
  base, variant = _binary(21, 0.7, 0.4)
  result = stats.paired_bootstrap(base, variant, n_resamples=B)
  assert result.delta < -0.2
  # |delta| / se > 5: no resample is as extreme as the null-shifted delta.
  assert result.p_value == 1 / (B + 1)
  assert result.ci_high < 0


def test_bootstrap_identical_arrays():
  base, _ = _binary(4, 0.5, 0.5)
  result = stats.paired_bootstrap(base, base.copy())
  assert result.delta == 0.0
  assert result.p_value == 1.0
  assert result.ci_low == result.ci_high == 0.0
  shuffled = np.random.default_rng(0).permutation(base)
  assert stats.paired_bootstrap(base, shuffled).delta == 0.0
  assert stats.paired_bootstrap(base, shuffled).p_value == 1.0


def test_bootstrap_deterministic_and_seeded():
  base, variant = _binary(1234, 0.6, 0.55)
  first = stats.paired_bootstrap(base, variant, n_resamples=2000, seed=5)
  again = stats.paired_bootstrap(base, variant, n_resamples=2000, seed=5)
  assert first == again
  others = {
    stats.paired_bootstrap(base, variant, n_resamples=2000, seed=s).p_value
    for s in range(6, 10)
  }
  assert len(others | {first.p_value}) > 1


def test_bootstrap_blocks_bound_memory(monkeypatch):
  sizes = []
  real_rng = np.random.default_rng

  class Recorder:
    def __init__(self, seed):
      self._rng = real_rng(seed)

    def integers(self, low, high, size):
      sizes.append(int(np.prod(size)))
      return self._rng.integers(low, high, size=size)

  base, variant = _binary(1234, 0.6, 0.55)
  monkeypatch.setattr(stats, "_MAX_INDICES", 1000)
  monkeypatch.setattr(np.random, "default_rng", Recorder)
  result = stats.paired_bootstrap(base, variant, n_resamples=B)
  monkeypatch.undo()
  assert max(sizes) <= 1000 and sum(sizes) == B * N
  diff = variant - base
  low, high = _scipy_ci(diff, seed=7)
  tol = _quantile_tolerance(diff, lattice=True)
  assert result.ci_low == pytest.approx(low, abs=tol)
  assert result.ci_high == pytest.approx(high, abs=tol)


def test_bootstrap_to_dict():
  result = stats.paired_bootstrap([0, 1, 1], [1, 1, 1], n_resamples=50)
  d = result.to_dict()
  assert list(d) == [
    "delta",
    "ci_low",
    "ci_high",
    "p_value",
    "n",
    "n_resamples",
  ]
  assert d["delta"] == pytest.approx(1 / 3) and d["n"] == 3
  with pytest.raises(dataclasses.FrozenInstanceError):
    result.delta = 0.0


def test_bootstrap_errors():
  with pytest.raises(ValueError, match=r"got 3 \(base\) and 4 \(variant\)"):
    stats.paired_bootstrap([0, 1, 1], [0, 1, 1, 0])
  with pytest.raises(ValueError, match="empty"):
    stats.paired_bootstrap([], [])
  with pytest.raises(ValueError, match="n_resamples must be >= 1, got 0"):
    stats.paired_bootstrap([0, 1], [1, 1], n_resamples=0)
  for alpha in (0.0, 1.0, -0.1):
    with pytest.raises(ValueError, match=r"alpha must be in \(0, 1\)"):
      stats.paired_bootstrap([0, 1], [1, 1], alpha=alpha)
  with pytest.raises(ValueError, match="finite"):
    stats.paired_bootstrap([0, np.nan], [1, 1])
  with pytest.raises(ValueError, match="1-D"):
    stats.paired_bootstrap([[0, 1]], [[1, 1]])


def _result(delta, p_value):
  return stats.BootstrapResult(delta, delta - 0.1, delta + 0.1, p_value, 10, 10)


@pytest.mark.parametrize(
  "delta, p_value, expected",
  [
    (-0.05, 0.001, "strong_pillar"),
    (-0.01, 0.049, "strong_pillar"),  # boundary delta == -epsilon
    (-0.0099, 0.001, "neutral"),
    (-0.05, 0.05, "neutral"),  # p == alpha is not significant
    (0.0, 0.001, "neutral"),
    (0.01, 0.001, "strong_stumbling_block"),  # boundary delta == epsilon
    (0.2, 0.01, "strong_stumbling_block"),
    (0.2, 0.3, "neutral"),
  ],
)
def test_classify(delta, p_value, expected):
  assert stats.classify(_result(delta, p_value)) == expected
  assert expected in stats.CLASSES


def test_classify_custom_thresholds():
  r = _result(-0.03, 0.02)
  assert stats.classify(r, epsilon=0.05) == "neutral"
  assert stats.classify(r, alpha=0.01) == "neutral"
  assert stats.classify(r, epsilon=0.03, alpha=0.03) == "strong_pillar"
  assert stats.CLASSES == ("strong_pillar", "neutral", "strong_stumbling_block")


def test_sign_test_hand_values():
  result = stats.sign_test([-1.0] * 10 + [0.0] * 5)
  assert (result.negative, result.positive) == (10, 0)
  assert result.p_value == pytest.approx(2 * 2.0**-10, rel=1e-12)
  assert result.p_value == pytest.approx(1.953125e-3, rel=1e-12)
  assert result.p_one_sided_negative == pytest.approx(9.765625e-4, rel=1e-12)
  flipped = stats.sign_test([1.0] * 10)
  assert flipped.p_value == pytest.approx(1.953125e-3, rel=1e-12)
  assert flipped.p_one_sided_negative == 1.0


def test_sign_test_against_binomtest():
  values = np.array([-3, -0.1, 2, -5, 0, 0, -1, 4, -2, -7, 0, -0.5, 1e-9])
  result = stats.sign_test(values)
  assert (result.negative, result.positive) == (7, 3)
  assert result.p_value == pytest.approx(
    sp_stats.binomtest(7, 10, 0.5).pvalue, rel=1e-12
  )
  # P(X >= 7), X ~ Binomial(10, 1/2) = (120 + 45 + 10 + 1) / 1024.
  assert result.p_one_sided_negative == pytest.approx(176 / 1024, rel=1e-12)
  assert result.to_dict() == dataclasses.asdict(result)


def test_sign_test_no_nonzero():
  for values in ([], [0.0, 0.0], [np.nan, 0.0]):
    assert stats.sign_test(values) == stats.SignTest(0, 0, 1.0, 1.0)


def test_wilcoxon_against_scipy():
  rng = np.random.default_rng(8)
  before = rng.lognormal(0.0, 0.5, 40)
  after = before * rng.lognormal(-0.2, 0.3, 40)
  after[[3, 17]] = before[[3, 17]]  # zero differences, dropped by the test
  before[5], after[9] = np.nan, np.nan
  keep = np.ones(40, bool)
  keep[[5, 9]] = False
  b, a = before[keep], after[keep]
  # "wilcox" drops the zero differences, so the reference is the test of the
  # 36 nonzero ones (exact null distribution, n <= 50, no ties).
  ref = sp_stats.wilcoxon(a[a != b] - b[a != b], alternative="two-sided")
  out = stats.wilcoxon(before, after)
  assert out["n"] == 38
  assert out["median_before"] == np.median(b)
  assert out["median_after"] == np.median(a)
  assert out["median_change"] == np.median(a - b)
  assert out["relative_median_change"] == pytest.approx(
    np.median(a - b) / np.median(b), rel=1e-12
  )
  assert out["statistic"] == pytest.approx(ref.statistic, rel=1e-12)
  assert out["p_value"] == pytest.approx(ref.pvalue, rel=1e-12)
  assert out["p_value"] < 0.05


def test_wilcoxon_without_zeros_is_plain_scipy():
  rng = np.random.default_rng(12)
  before = rng.normal(1.0, 0.3, 70)
  after = before + rng.normal(0.05, 0.2, 70)
  ref = sp_stats.wilcoxon(after - before, zero_method="wilcox")
  out = stats.wilcoxon(before, after)
  assert out["n"] == 70
  assert out["statistic"] == pytest.approx(ref.statistic, rel=1e-12)
  assert out["p_value"] == pytest.approx(ref.pvalue, rel=1e-12)


def test_wilcoxon_degenerate_and_errors():
  out = stats.wilcoxon([1.0, 2.0, np.nan], [1.0, 2.0, 5.0])
  assert out["n"] == 2 and out["p_value"] == 1.0
  assert math.isnan(out["statistic"])
  assert out["median_change"] == 0.0
  zero = stats.wilcoxon([0.0, 0.0, 0.0], [1.0, 2.0, 3.0])
  assert math.isnan(zero["relative_median_change"])
  assert zero["median_change"] == 2.0
  with pytest.raises(ValueError, match=r"got \(3,\) \(before\) and \(4,\)"):
    stats.wilcoxon([1, 2, 3], [1, 2, 3, 4])


def test_mann_whitney_against_scipy():
  rng = np.random.default_rng(3)
  a = rng.normal(0.0, 1.0, 30)
  b = rng.normal(0.8, 1.0, 25)
  a_nan = np.concatenate([a, [np.nan]])
  b_nan = np.concatenate([[np.nan, np.nan], b])
  ref = sp_stats.mannwhitneyu(a, b, alternative="two-sided")
  out = stats.mann_whitney(a_nan, b_nan)
  assert (out["n_a"], out["n_b"]) == (30, 25)
  assert out["median_a"] == np.median(a)
  assert out["median_b"] == np.median(b)
  assert out["statistic"] == pytest.approx(ref.statistic, rel=1e-12)
  assert out["p_value"] == pytest.approx(ref.pvalue, rel=1e-12)


def test_mann_whitney_empty_group():
  out = stats.mann_whitney([np.nan], [1.0, 2.0])
  assert out["n_a"] == 0 and out["n_b"] == 2
  assert out["p_value"] == 1.0 and math.isnan(out["statistic"])
  assert math.isnan(out["median_a"]) and out["median_b"] == 1.5


def test_jaccard():
  assert stats.jaccard({1, 2, 3}, [2, 3, 4]) == 0.5
  assert stats.jaccard([1, 2], [3]) == 0.0
  assert stats.jaccard([], []) == 1.0
  assert stats.jaccard([], [7]) == 0.0
  assert stats.jaccard(np.array([5, 5, 6]), (6, 5)) == 1.0
  assert stats.jaccard(np.array([1, 1, 2], np.int32), [2]) == 0.5


def test_steps_to_target():
  steps = [0, 100, 200, 300]
  acc = [0.1, 0.3, 0.5, 0.6]
  # Bracketed by (100, 0.3) and (200, 0.5): 100 + (0.4 - 0.3) / 0.2 * 100.
  assert stats.steps_to_target(steps, acc, 0.4) == pytest.approx(150.0)
  assert stats.steps_to_target(steps, acc, 0.5) == pytest.approx(200.0)
  assert stats.steps_to_target(steps, acc, 0.55) == pytest.approx(250.0)
  assert stats.steps_to_target(steps, acc, 0.05) == 0.0
  assert stats.steps_to_target(steps, acc, 0.1) == 0.0
  assert math.isnan(stats.steps_to_target(steps, acc, 0.7))
  assert math.isnan(stats.steps_to_target([], [], 0.5))
  # A NaN evaluation is skipped: the bracket is (0, 0.1) and (200, 0.5).
  assert stats.steps_to_target(
    [0, 100, 200], [0.1, np.nan, 0.5], 0.3
  ) == pytest.approx(100.0)
  with pytest.raises(ValueError, match=r"got 3 \(steps\) and 2 \(accuracy\)"):
    stats.steps_to_target([0, 1, 2], [0.1, 0.2], 0.5)
  with pytest.raises(ValueError, match="increasing"):
    stats.steps_to_target([0, 2, 1], [0.1, 0.2, 0.3], 0.5)


def test_mean_std():
  values = np.random.default_rng(0).normal(3.0, 2.0, 17)
  mean, std = stats.mean_std(values)
  assert mean == pytest.approx(np.mean(values), rel=1e-14)
  assert std == pytest.approx(np.std(values, ddof=1), rel=1e-14)
  assert stats.mean_std([4.5]) == (4.5, 0.0)
  assert all(math.isnan(x) for x in stats.mean_std([]))
  assert stats.mean_std([1, 3]) == (2.0, pytest.approx(math.sqrt(2)))


def test_seed_bootstrap_spread_is_the_two_level_variance():
  # Rows (seeds) with their own mean: the resampled mean has variance
  # (var of row means + mean within-row var / N) / S (both with ddof 0).
  rng = np.random.default_rng(3)
  s, n = 20, 50
  offsets = rng.normal(0.0, 0.2, size=(s, 1))
  diff = offsets + rng.normal(0.0, 0.5, size=(s, n))
  base = rng.random((s, n))
  result = stats.seed_bootstrap(base, base + diff, n_resamples=20_000)
  assert result.delta == pytest.approx(diff.mean(), abs=1e-12)
  assert result.n == s and result.n_resamples == 20_000
  sd = math.sqrt((diff.mean(1).var() + diff.var(1).mean() / n) / s)
  half = (result.ci_high - result.ci_low) / 2
  assert half == pytest.approx(1.959964 * sd, rel=0.05)
  # Resampling pooled problems only misses the between-seed spread.
  pooled = stats.paired_bootstrap(base.reshape(-1), (base + diff).reshape(-1))
  assert pooled.ci_high - pooled.ci_low < 0.6 * (result.ci_high - result.ci_low)


def test_seed_bootstrap_null_and_bad_shapes():
  rng = np.random.default_rng(4)
  base = (rng.random((5, 200)) < 0.5).astype(float)
  variant = (rng.random((5, 200)) < 0.5).astype(float)
  result = stats.seed_bootstrap(base, variant)
  assert result.ci_low < result.delta < result.ci_high
  assert stats.seed_bootstrap(base, base).p_value == 1.0
  with pytest.raises(ValueError, match=r"\[seeds, problems\]"):
    stats.seed_bootstrap(base[0], variant[0])
  with pytest.raises(ValueError, match=r"\[seeds, problems\]"):
    stats.seed_bootstrap(base, variant[:4])
