"""Argument checks shared by both entry points, and the teacher's one freeze.

Shapes: B batch, T positions (any leading per-token shape).

The teacher crosses into the loss through `_freeze_teacher`, the single
`jax.lax.stop_gradient`: no gradient ever reaches teacher logits, hidden
states or head.
"""

import numbers
from typing import NamedTuple

import jax
import jax.numpy as jnp

from rock_jax.losses.divergences import DIVERGENCES


class _Spec(NamedTuple):
  """Static, hashable description of one divergence (a custom_vjp nondiff)."""

  kind: str
  beta: float
  temperature: float
  kd_ratio: float

  @property
  def uses_ids(self):
    """Whether the loss reads the sampled ids (a sampled kind or a CE term)."""
    return DIVERGENCES[self.kind].sampled or self.kd_ratio < 1.0


def _is_number(x):
  """A static real number (Python or NumPy scalar), not an array or a bool."""
  return isinstance(x, numbers.Real) and not isinstance(x, bool)


def _spec(kind, beta, temperature, kd_ratio, sampled_ids, leading_shape):
  """Validates the arguments shared by both entry points; returns the spec."""
  if kind not in DIVERGENCES:
    raise ValueError(f"unknown kind {kind!r}; available: {sorted(DIVERGENCES)}")
  if not _is_number(beta) or not 0.0 <= beta <= 1.0:
    raise ValueError(
      f"beta={beta!r} must be a static number in [0, 1] "
      "(jsd: 0 = forward KL, 1 = reverse KL)"
    )
  if not _is_number(temperature) or not temperature > 0:
    raise ValueError(f"temperature={temperature!r} must be a static number > 0")
  if not _is_number(kd_ratio) or not 0.0 <= kd_ratio <= 1.0:
    raise ValueError(
      f"kd_ratio={kd_ratio!r} must be a static number in [0, 1] "
      "(1 = pure divergence, 0 = pure cross-entropy on sampled_ids_BxT)"
    )
  # The unnormalised generalised JSD vanishes at both ends; TRL, ms-swift and
  # Liger define the endpoints as the KL it approaches after dividing by β or
  # 1 − β, and so do we.
  if kind == "jsd" and beta == 0.0:
    kind = "forward_kl"
  elif kind == "jsd" and beta == 1.0:
    kind = "reverse_kl"
  spec = _Spec(kind, float(beta), float(temperature), float(kd_ratio))
  if spec.uses_ids:
    if DIVERGENCES[kind].sampled:
      need = f"kind={kind!r} needs sampled_ids_BxT, the token sampled"
    else:
      need = (
        f"kd_ratio={kd_ratio!r} < 1 needs sampled_ids_BxT, the "
        "cross-entropy label (in Stage-1 KD, the teacher's sampled token)"
      )
    _check_ids(sampled_ids, leading_shape, f"{need} at each position")
  return spec


def _check_ids(sampled_ids, leading_shape, need):
  """Raises `need` if the ids are missing, or if their shape or dtype is off."""
  if sampled_ids is None:
    raise ValueError(need)
  if tuple(sampled_ids.shape) != tuple(leading_shape):
    raise ValueError(
      f"sampled_ids_BxT.shape={tuple(sampled_ids.shape)} must equal the "
      f"per-token shape {tuple(leading_shape)}"
    )
  if not jnp.issubdtype(sampled_ids.dtype, jnp.integer):
    raise ValueError(
      f"sampled_ids_BxT.dtype={sampled_ids.dtype} must be an integer type"
    )


def _freeze_teacher(teacher):
  """The one place where teacher arrays enter the loss: never differentiated."""
  return jax.lax.stop_gradient(teacher)
