"""pass@k and the per-problem gather of `rock_jax.evaluate`."""

import numpy as np
import pytest

from rock_jax import evaluate


def test_pass_at_k_is_the_unbiased_estimator():
  assert evaluate.pass_at_k(4, 0, 1) == 0.0
  assert evaluate.pass_at_k(4, 4, 3) == 1.0
  assert evaluate.pass_at_k(4, 1, 1) == 0.25  # c / n
  assert evaluate.pass_at_k(4, 1, 2) == 0.5  # 1 - C(3, 2) / C(4, 2)
  assert evaluate.pass_at_k(5, 2, 3) == pytest.approx(0.9)  # 1 - 1 / 10
  assert evaluate.pass_at_k(5, 3, 3) == 1.0  # fewer than k wrong ones
  with pytest.raises(ValueError, match=r"0 <= c=5 <= n=4 and 1 <= k=1"):
    evaluate.pass_at_k(4, 5, 1)
  with pytest.raises(ValueError, match=r"1 <= k=5 <= n"):
    evaluate.pass_at_k(4, 1, 5)


def test_one_process_gathers_its_own_values():
  gathered = evaluate.gather_per_example([1, 0, 3], 3)
  assert gathered.dtype == np.int32
  np.testing.assert_array_equal(gathered, [1, 0, 3])
