"""Sampling completions: settings, `generate`, and its compiled decode loop.

Modules:
  sampling   `Sampling(temperature, top_k, top_p)`, presets, per-row noise
  rollout    `generate` -> `Rollout`: prompts, buckets, checks
  slot_pool  the compiled loop over a pool of KV slots that `generate` runs
"""

from rock_jax.sampler.rollout import (
  DEFAULT_BUCKETS,
  DEFAULT_PAGE_SIZE,
  Rollout,
  bucket,
  check_page_size,
  generate,
  lower,
)
from rock_jax.sampler.sampling import SAMPLERS, Sampling, get_sampling
from rock_jax.sampler.slot_pool import RolloutStats

__all__ = [
  "DEFAULT_BUCKETS",
  "DEFAULT_PAGE_SIZE",
  "SAMPLERS",
  "Rollout",
  "RolloutStats",
  "Sampling",
  "bucket",
  "check_page_size",
  "generate",
  "get_sampling",
  "lower",
]
