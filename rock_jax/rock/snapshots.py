"""Tracker snapshots: `<workdir>/tracker/step_<N>.npz` (a folder or a URL).

A run saves the Rock-Token tracker at every evaluation and at the end, so
analyses can follow each token's online loss and stagnation over the run
(`rock_jax.analysis.persistence.online`).
"""

from __future__ import annotations

import dataclasses
import io

import jax.numpy as jnp
import numpy as np

from rock_jax import storage
from rock_jax.rock import tracker

DIR = "tracker"
# Static fields of `RockState`: stored as numbers, restored as Python floats.
_STATIC = ("decay", "fast_decay")


def save(workdir: str, step: int, state: tracker.RockState) -> str:
  """Writes the tracker at `step`; returns the file's path."""
  path = storage.join(workdir, DIR, f"step_{step:07d}.npz")
  arrays = {
    f.name: np.asarray(getattr(state, f.name))
    for f in dataclasses.fields(state)
    if f.name not in _STATIC
  }
  with storage.open_for_write(path) as f:
    np.savez(f, decay=state.decay, fast_decay=state.fast_decay, **arrays)
  return path


def load(path: str) -> tracker.RockState:
  """A tracker written by `save`."""
  with np.load(io.BytesIO(storage.read_bytes(path))) as f:
    # Kept as Python floats: a float32 round trip would change the state's
    # tree metadata.
    decays = {k: float(f[k]) for k in _STATIC}
    arrays = {k: jnp.asarray(f[k]) for k in f.files if k not in decays}
  return tracker.RockState(**decays, **arrays)


def paths(workdir: str) -> list[str]:
  """A run's snapshot files, oldest first."""
  return storage.glob(workdir, f"{DIR}/step_*.npz")
