"""Tests of rock_jax.analysis.multiple against hand-worked values."""

import numpy as np
import pytest

from rock_jax.analysis import multiple


def test_benjamini_hochberg_hand_example():
  # m = 5, q = 0.2; thresholds q * k / m = 0.04, 0.08, 0.12, 0.16, 0.20.
  # sorted p:       0.001  0.09   0.10   0.11   0.90
  # p_(k) <= thr:   yes    no     yes    yes    no
  # The largest k passing is 4, so step-up rejects the four smallest,
  # including 0.09 although it misses its own threshold.
  p = [0.10, 0.90, 0.001, 0.11, 0.09]
  np.testing.assert_array_equal(
    multiple.benjamini_hochberg(p, q=0.2), [True, False, True, True, True]
  )
  # q = 0.1: thresholds 0.02, 0.04, 0.06, 0.08, 0.10; only 0.001 passes.
  np.testing.assert_array_equal(
    multiple.benjamini_hochberg(p, q=0.1), [False, False, True, False, False]
  )
  assert multiple.benjamini_hochberg([]).shape == (0,)
  assert multiple.benjamini_hochberg([0.5]).tolist() == [False]
  with pytest.raises(ValueError, match="p-values"):
    multiple.benjamini_hochberg([0.1, 1.5])


def test_bonferroni_hand_example():
  # m = 5, alpha = 0.05: reject p < 0.01 (strict).
  p = [0.001, 0.01, 0.0099, 0.2, 0.04]
  out = multiple.bonferroni(p)
  assert out.dtype == bool
  np.testing.assert_array_equal(out, [True, False, True, False, False])
  np.testing.assert_array_equal(
    multiple.bonferroni(p, alpha=0.25), [True, True, True, False, True]
  )
  assert multiple.bonferroni([]).shape == (0,)
