"""Shared set-up for the data tests: fixture paths and a tiny embedded task."""

import pathlib

from rock_jax.data import builders

FIXTURES = pathlib.Path(__file__).parents[1] / "fixtures"


def prepare_embedded(data_dir, **options) -> str:
  """Prepares a small embedded dataset (64 train, 16 test) under data_dir."""
  return builders.prepare(
    "embedded", data_dir, **{"train_size": 64, "test_size": 16, **options}
  )
