"""`train.profile_steps` (rock_jax.train.profiling, its parsing in
rock_jax.config.fields)."""

import jax.numpy as jnp
import pytest

from rock_jax.config import fields
from rock_jax.train import profiling


@pytest.mark.parametrize(
  "spec, window",
  [("", None), ("3:5", (3, 5)), ("4", (4, 4)), ("1:10", (1, 10))],
)
def test_parse(spec, window):
  assert fields.profile_window(spec, steps=10) == window


@pytest.mark.parametrize("spec", ["0:2", "5:3", "a:b", "1:2:3", "9:11", ":"])
def test_parse_refuses_naming_the_field(spec):
  with pytest.raises(ValueError, match=r"train.profile_steps=.*train.steps=10"):
    fields.profile_window(spec, steps=10)


def test_trace_of_the_window_only(tmp_path):
  profiler = profiling.Profiler((2, 3), str(tmp_path / "profile"))
  x = jnp.ones((64, 64))
  for step in range(1, 5):
    profiler.before(step)
    assert (profiler.local is not None) == (2 <= step <= 3)
    x = x @ x / 64
    profiler.after(step, x)
  assert profiler.local is None
  names = {p.name for p in (tmp_path / "profile").rglob("*")}
  assert "perfetto_trace.json.gz" in names
