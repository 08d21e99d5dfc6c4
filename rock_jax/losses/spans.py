"""Cross-tokenizer terms: the teacher's log-probs of its own tokens, span
sums, and the per-position terms `chunked_token_divergence(cross=...)` reads.

Shapes: B batch, T student positions, M teacher positions, V student
vocabulary, E teacher hidden, K spans (at most T), C positions per chunk.

A span is a stretch of text that both tokenisations cover with whole tokens
(`rock_jax.data.alignment`). Where it is one token on both sides with the same
string (an exact position) the loss is the configured divergence between the
two next-token distributions restricted to the shared vocabulary (the student
ids that have a teacher id of the same string), both renormalised over it.
Elsewhere each student token of span k gets the span's log-ratio

  r_k = Σ_{i in k} log p_s(x_i) − Σ_{j in k} log p_t(y_j),

the single-sample estimate of the reverse KL between the two models'
distributions over the span's text, as the per-token reward of
`pg_reverse_kl`: its gradient is r_k·∇log p_s(x_i) at each student token, so
the span's total is r_k·∇log p_s(span), the score-function gradient of that
KL with the span as one action. The value logged at each of its n_k student
tokens is r_k / n_k, so a span's values sum to its estimate.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from rock_jax.losses.divergences import gather
from rock_jax.losses.logit_space import normalizer


class CrossTerms(NamedTuple):
  """What `chunked_token_divergence` reads across tokenizers.

  Attributes:
    shared_V: bool, student ids with a teacher id of the same string.
    exact_BxT: bool, exact positions (the divergence on the shared ids).
    reward_BxT: float32, the span log-ratio r_k at span positions: the
      coefficient of ∇log p_s(x) in their gradient.
    value_BxT: float32, the value reported at span positions (r_k / n_k).
  """

  shared_V: jax.Array
  exact_BxT: jax.Array
  reward_BxT: jax.Array
  value_BxT: jax.Array


def token_logprobs(hidden_BxMxE, head_ExV, ids_BxM, chunk_size=128):
  """float32 log softmax(hidden @ head)[ids] [B, M], chunk by chunk along M
  (no [B, M, V] buffer), without gradient: the teacher's log-probs of its
  own tokens."""
  hidden_BxMxE, head_ExV = jax.lax.stop_gradient((hidden_BxMxE, head_ExV))
  batch, length = ids_BxM.shape
  size = max(1, min(length, chunk_size // batch))
  chunks = -(-length // size)
  pad = chunks * size - length

  def to_chunks(x):
    x = jnp.pad(x, [(0, 0), (0, pad)] + [(0, 0)] * (x.ndim - 2))
    return jnp.swapaxes(x.reshape(batch, chunks, size, *x.shape[2:]), 0, 1)

  def chunk(xs):
    h, ids = xs
    z = jnp.einsum(
      "bce,ev->bcv", h, head_ExV, preferred_element_type=jnp.float32
    )
    z_max, log_sum = normalizer(z)
    return gather(z, ids) - z_max - log_sum

  out = jax.lax.map(chunk, (to_chunks(hidden_BxMxE), to_chunks(ids_BxM)))
  return jnp.swapaxes(out, 0, 1).reshape(batch, -1)[:, :length]


def span_sums(values_BxT, span_BxT, count):
  """float32 [B, count]: per row, the sum of `values` over each span index
  (positions with span -1 are left out)."""
  dropped = jnp.where(span_BxT < 0, count, span_BxT)
  sums = jax.vmap(
    lambda v, s: jax.ops.segment_sum(v, s, num_segments=count + 1)
  )(jnp.where(span_BxT < 0, 0.0, values_BxT.astype(jnp.float32)), dropped)
  return sums[:, :count]


def _at_positions(per_span_BxK, span_BxT):
  """Each position's entry of its span ([B, T]; 0 where span is -1)."""
  picked = jnp.take_along_axis(per_span_BxK, jnp.maximum(span_BxT, 0), axis=1)
  return jnp.where(span_BxT < 0, 0.0, picked)


def span_logprob(logprobs_BxM, teacher_span_BxM, span_BxT):
  """[B, T]: at each student position, the teacher's log-probs of its own
  tokens of that position's span, summed (0 where span is -1)."""
  count = span_BxT.shape[1]
  return _at_positions(
    span_sums(logprobs_BxM, teacher_span_BxM, count), span_BxT
  )


def cross_terms(
  shared_V, exact_BxT, span_BxT, student_logprobs_BxT, teacher_span_logprob_BxT
) -> CrossTerms:
  """The `CrossTerms` of a batch.

  Args:
    shared_V, exact_BxT: as in `CrossTerms`.
    span_BxT: each student position's span index (-1: no loss there).
    student_logprobs_BxT: the student's log-probs of its sampled tokens, as
      the sampler recorded them (the reward is held constant).
    teacher_span_logprob_BxT: at each position, the teacher's log-prob of
      its own tokens of that position's span, summed.
  """
  count = span_BxT.shape[1]
  in_span = (span_BxT >= 0).astype(jnp.float32)
  student = _at_positions(
    span_sums(student_logprobs_BxT, span_BxT, count), span_BxT
  )
  n = _at_positions(span_sums(in_span, span_BxT, count), span_BxT)
  reward = jax.lax.stop_gradient(student - teacher_span_logprob_BxT) * in_span
  return CrossTerms(shared_V, exact_BxT, reward, reward / jnp.maximum(n, 1.0))
