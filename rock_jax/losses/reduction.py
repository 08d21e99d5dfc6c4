"""`reduce`: a per-token loss to one scalar, plus exact (sum, count) metrics.

Shapes: B batch, T positions.
"""

import jax
import jax.numpy as jnp

from rock_jax.losses.logit_space import is_number

NORMALIZERS = ("tokens", "weights", "sequences", "sequence_weights")


def reduce(per_token_BxT, mask_BxT, weights_BxT=None, normalize="tokens"):
  """Masked, weighted mean of a per-token loss, plus exact (sum, count) metrics.

  Normalisers (w = weights, ℓ = per-token loss, sums over valid tokens):
    tokens: Σ w·ℓ / N_valid, the paper's formula; λ = 1 reproduces the
      unweighted token mean, and down-weighting lowers the loss scale.
    weights: Σ w·ℓ / Σ w over the whole batch (the reference code's
      denominator; it renormalises the remaining tokens upwards).
    sequences: mean over sequences with a valid token of Σ_t w·ℓ / n_b.
    sequence_weights: mean over such sequences of Σ_t w·ℓ / max(Σ_t w, 1):
      exactly the reference code (one sequence per micro-batch, averaged
      over the accumulation steps).
  Denominators are clipped at 1 only when dividing, so the returned pairs stay
  exact and hosts can combine micro-batches as Σ sums / max(Σ counts, 1).

  Masked and zero-weight tokens contribute exactly 0 to the value and to the
  gradient, even if their per-token loss is inf or NaN.

  Args:
    per_token_BxT: per-token loss (e.g. from `token_divergence`), [B, T].
    mask_BxT: validity mask, bool or numeric (nonzero = valid); fractional
      importance belongs in `weights_BxT`.
    weights_BxT: optional float weights, used as given (never rounded).
    normalize: one of `NORMALIZERS`.

  Returns:
    (loss, metrics): a float32 scalar and a dict of (sum, count) float32 pairs:
    "loss/opd" (the loss's own numerator and denominator), "kl/weighted"
    (Σ w·ℓ, Σ w) and "kl/unweighted" (Σ ℓ, N_valid).
  """
  if normalize not in NORMALIZERS:
    raise ValueError(
      f"unknown normalize {normalize!r}; available: {sorted(NORMALIZERS)}"
    )
  shapes = {"per_token_BxT": per_token_BxT.shape, "mask_BxT": mask_BxT.shape}
  if weights_BxT is not None:
    shapes["weights_BxT"] = weights_BxT.shape
  if len(set(map(tuple, shapes.values()))) != 1 or per_token_BxT.ndim != 2:
    raise ValueError(f"expected equal [B, T] shapes; got {shapes}")

  valid = mask_BxT != 0
  loss = per_token_BxT.astype(jnp.float32)
  if weights_BxT is None:
    weights = jnp.ones(loss.shape, jnp.float32)
  else:
    weights = weights_BxT.astype(jnp.float32)
  weights = jnp.where(valid, weights, 0.0)
  weighted = jnp.where(weights != 0, weights * loss, 0.0)
  unweighted = jnp.where(valid, loss, 0.0)
  count = jnp.sum(valid, dtype=jnp.float32)
  weight_sum = jnp.sum(weights)
  weighted_sum = jnp.sum(weighted)

  if normalize == "tokens":
    numerator, denominator = weighted_sum, count
  elif normalize == "weights":
    numerator, denominator = weighted_sum, weight_sum
  else:
    per_seq_count = jnp.sum(valid, axis=-1, dtype=jnp.float32)
    per_seq_den = (
      per_seq_count if normalize == "sequences" else jnp.sum(weights, axis=-1)
    )
    per_seq = jnp.sum(weighted, axis=-1) / jnp.maximum(per_seq_den, 1.0)
    has_tokens = per_seq_count > 0
    numerator = jnp.sum(jnp.where(has_tokens, per_seq, 0.0))
    denominator = jnp.sum(has_tokens, dtype=jnp.float32)

  metrics = {
    "loss/opd": (numerator, denominator),
    "kl/weighted": (weighted_sum, weight_sum),
    "kl/unweighted": (jnp.sum(unweighted), count),
  }
  return numerator / jnp.maximum(denominator, 1.0), metrics


def importance_weights(logprobs_BxT, sampler_logprobs_BxT, mask_BxT, cap):
  """Truncated importance weights min(cap, π_θ(x) / π_sampler(x)) per token.

  In asynchronous OPD the rollouts come from a sampler whose parameters lag
  the trained student's, so the sampled-token gradient (e.g. of
  `pg_reverse_kl`) is taken under the wrong distribution. Weighting each
  token's loss by the ratio of the student's to the sampler's probability of
  its sampled token corrects for that; truncating the ratio at `cap` bounds
  the variance at the cost of a small bias. This is the truncated importance
  sampling (TIS) correction of verl and tinker; c is the trainer's
  `loss.is_cap` (default 2.0). Multiply the per-token loss by it before
  `reduce` (as the trainer does): it rescales each position's gradient and
  leaves the normaliser alone, which passing it as `weights_BxT` would not
  under `normalize="weights"`. The truncated fraction, if wanted, is the
  caller's `weights == cap` over valid tokens.

  Args:
    logprobs_BxT: the student's log-probabilities of the sampled tokens, e.g.
      from `chunked_token_divergence(..., return_logprobs=True)`.
    sampler_logprobs_BxT: the rollout's recorded log-probabilities of the
      same tokens, same shape.
    mask_BxT: validity mask, bool or numeric (nonzero = valid), same shape.
    cap: static number c > 0 (inf disables truncation).

  Returns:
    float32 weights min(cap, exp(logprobs − sampler_logprobs)), 0 at masked
    positions (whatever the log-probs hold there), with no gradient.
  """
  if not is_number(cap) or not cap > 0:
    raise ValueError(f"cap={cap!r} must be a static number > 0")
  for name, x in (
    ("sampler_logprobs_BxT", sampler_logprobs_BxT),
    ("mask_BxT", mask_BxT),
  ):
    if tuple(x.shape) != tuple(logprobs_BxT.shape):
      raise ValueError(
        f"logprobs_BxT.shape={tuple(logprobs_BxT.shape)} and "
        f"{name}.shape={tuple(x.shape)} must be equal"
      )
  logp = logprobs_BxT.astype(jnp.float32)
  sampler_logp = sampler_logprobs_BxT.astype(jnp.float32)
  # exp overflows to inf for huge ratios, which the cap then truncates; a
  # masked position may hold −inf − (−inf) = NaN, which `where` discards.
  weights = jnp.minimum(jnp.exp(logp - sampler_logp), jnp.float32(cap))
  return jax.lax.stop_gradient(jnp.where(mask_BxT != 0, weights, 0.0))
