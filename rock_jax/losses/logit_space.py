"""The forward value and the logit cotangent shared by both custom VJPs.

Shapes: V vocabulary; `...` any leading per-token shape (a [B, T] batch or a
[B, C] chunk: B batch, T positions, C positions per chunk).

- Logits are cast to float32 and divided by `temperature` (both models, the KD
  temperature of KDFlow and TRL) before the log-softmax. The result is NOT
  rescaled by T² (KDFlow's reverse KL and the paper use T = 1 and no T²);
  multiply the loss by T² yourself to keep Hinton's gradient scale.
- `kd_ratio` r < 1 mixes in cross-entropy on the sampled ids y:
  r·divergence + (1 − r)·(−log p_s(y)), KDFlow's `kd_ratio` (0.5 in the
  paper's Stage-1 off-policy KD, with y the teacher's samples; 1, the default,
  is the pure divergence). The cross-entropy uses the same temperature-scaled
  student log-softmax, so it is the plain one only at T = 1 (the default and
  the paper's setting).
- Gradients are analytic (custom VJPs), in logit space, shared by the
  unchunked and chunked paths; forward-mode differentiation is not supported.
  A position with zero cotangent (masked or zero-weight in `reduce`) gets
  exactly zero gradient even when its value is infinite.

Also the argument checks both entry points share (`make_spec`) and the
teacher's one freeze: it crosses into the loss through `freeze_teacher`, the
single `jax.lax.stop_gradient`, so no gradient ever reaches teacher logits,
hidden states or head.
"""

import numbers
from typing import NamedTuple

import jax
import jax.numpy as jnp

from rock_jax.losses.divergences import DIVERGENCES, gather, score


class Spec(NamedTuple):
  """Static, hashable description of one divergence (a custom_vjp nondiff)."""

  kind: str
  beta: float
  temperature: float
  kd_ratio: float

  @property
  def uses_ids(self):
    """Whether the loss reads the sampled ids (a sampled kind or a CE term)."""
    return DIVERGENCES[self.kind].sampled or self.kd_ratio < 1.0


def is_number(x):
  """A static real number (Python or NumPy scalar), not an array or a bool."""
  return isinstance(x, numbers.Real) and not isinstance(x, bool)


def make_spec(kind, beta, temperature, kd_ratio, sampled_ids, leading_shape):
  """Validates the arguments shared by both entry points; returns the spec."""
  if kind not in DIVERGENCES:
    raise ValueError(f"unknown kind {kind!r}; available: {sorted(DIVERGENCES)}")
  if not is_number(beta) or not 0.0 <= beta <= 1.0:
    raise ValueError(
      f"beta={beta!r} must be a static number in [0, 1] "
      "(jsd: 0 = forward KL, 1 = reverse KL)"
    )
  if not is_number(temperature) or not temperature > 0:
    raise ValueError(f"temperature={temperature!r} must be a static number > 0")
  if not is_number(kd_ratio) or not 0.0 <= kd_ratio <= 1.0:
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
  spec = Spec(kind, float(beta), float(temperature), float(kd_ratio))
  if spec.uses_ids:
    if DIVERGENCES[kind].sampled:
      need = f"kind={kind!r} needs sampled_ids_BxT, the token sampled"
    else:
      need = (
        f"kd_ratio={kd_ratio!r} < 1 needs sampled_ids_BxT, the "
        "cross-entropy label (in Stage-1 KD, the teacher's sampled token)"
      )
    check_ids(sampled_ids, leading_shape, f"{need} at each position")
  return spec


def check_ids(sampled_ids, leading_shape, need):
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


def freeze_teacher(teacher):
  """The one place where teacher arrays enter the loss: never differentiated."""
  return jax.lax.stop_gradient(teacher)


def scaled(logits, temperature):
  z = logits.astype(jnp.float32)
  return z if temperature == 1.0 else z / temperature


def normalizer(z):
  """(max, log Σ exp(z − max)) over V: the log-softmax without the [.., V] part.

  Log-probs are rebuilt as (z − max) − log_sum, not z − logsumexp(z): for
  tokens near the max the latter loses their small log-prob to the rounding of
  a logsumexp of size |z| (1e-5 at |z| = 80), an error that p·A terms with
  |A| ~ 100 then amplify a hundredfold.
  """
  z_max = jnp.max(z, axis=-1)
  return z_max, jnp.log(jnp.sum(jnp.exp(z - z_max[..., None]), axis=-1))


def _log_probs(z, normalizer):
  z_max, log_sum = normalizer
  return (z - z_max[..., None]) - log_sum[..., None]


def _mix(kd_ratio, divergence, cross_entropy):
  """kd_ratio·divergence + (1 − kd_ratio)·cross-entropy, values or gradients.

  At kd_ratio = 0 the divergence is dropped rather than multiplied by 0: it
  may be infinite (reverse KL where the teacher gives −inf), and 0·inf is NaN.
  """
  if kd_ratio == 0.0:
    return cross_entropy
  return kd_ratio * divergence + (1.0 - kd_ratio) * cross_entropy


def value_and_normalizers(spec, z_s, z_t, ids):
  """Per-token divergence, both softmax normalisers (for the backward) and CE.

  The cross-entropy on `ids` is None at kd_ratio = 1: nothing is traced for it.
  """
  norm_s, norm_t = normalizer(z_s), normalizer(z_t)
  logp_s = _log_probs(z_s, norm_s)
  value = DIVERGENCES[spec.kind].value(
    logp_s, _log_probs(z_t, norm_t), ids, spec.beta
  )
  cross_entropy = None if spec.kd_ratio == 1.0 else -gather(logp_s, ids)
  return value, norm_s, norm_t, cross_entropy


def mixed_loss(spec, value, cross_entropy):
  """The per-token loss from `value_and_normalizers`' value and CE."""
  if cross_entropy is None:
    return value
  return _mix(spec.kd_ratio, value, cross_entropy)


def logit_cotangent(spec, z_s, z_t, ids, norm_s, norm_t, value, ct):
  """Cotangent of the raw student logits for a per-token cotangent `ct`."""
  logp_s = _log_probs(z_s, norm_s)
  logp_t = _log_probs(z_t, norm_t)
  g = DIVERGENCES[spec.kind].grad(logp_s, logp_t, ids, spec.beta, value)
  if spec.kd_ratio < 1.0:
    # d(−log p_s(y))/dz_s = p_s − onehot(y), the negated score.
    g = _mix(spec.kd_ratio, g, -score(logp_s, ids))
  scale = (ct.astype(jnp.float32) / spec.temperature)[..., None]
  # `where`, not a product: a masked position may hold an infinite divergence
  # whose logit gradient is not finite, and 0·inf is NaN.
  return jnp.where(scale == 0, 0.0, scale * g)
