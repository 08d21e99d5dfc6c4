"""The warm-up + cosine schedule against its closed form."""

import numpy as np
import pytest

from rock_jax.opd import optim


def test_warmup_then_cosine_matches_the_formula():
  schedule = optim.learning_rate_schedule(
    learning_rate=1e-3, total_steps=10, warmup_steps=2, min_lr=1e-4
  )
  for step in range(11):
    if step <= 2:
      want = 1e-3 * step / 2
    else:
      cosine = 0.5 * (1 + np.cos(np.pi * (step - 2) / 8))
      want = 1e-4 + (1e-3 - 1e-4) * cosine
    np.testing.assert_allclose(float(schedule(step)), want, rtol=1e-6)


def test_warmup_as_long_as_the_run_is_linear():
  # A one-step run with a one-step warm-up (nothing left to decay over).
  schedule = optim.learning_rate_schedule(
    learning_rate=1e-3, total_steps=1, warmup_steps=1, min_lr=0.0
  )
  assert float(schedule(0)) == 0.0
  np.testing.assert_allclose(float(schedule(1)), 1e-3, rtol=1e-6)


@pytest.mark.parametrize(
  "kwargs,match",
  [
    (dict(total_steps=0), "total_steps=0"),
    (dict(warmup_steps=11), "warmup_steps=11"),
    (dict(min_lr=2e-3), "min_lr="),
  ],
)
def test_bad_schedules(kwargs, match):
  args = dict(learning_rate=1e-3, total_steps=10, warmup_steps=2, min_lr=0.0)
  with pytest.raises(ValueError, match=match):
    optim.learning_rate_schedule(**args | kwargs)
