"""`importance_weights`: truncated per-token importance weights (TIS).

Shapes: B batch, T positions (any per-token shape works).
"""

import jax
import jax.numpy as jnp

from rock_jax.losses.spec import _is_number


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
  if not _is_number(cap) or not cap > 0:
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
