"""The teacher's side of a cross-tokenizer step: its scores at the student's
positions, from its hidden states over its own completion tokens.

Legend: B batch, N student completion length, M teacher completion length,
E teacher hidden, V the teacher's vocabulary.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from rock_jax import losses
from rock_jax.opd.batch import OPDBatch


def scores_at_student_positions(
  hidden_BxMxE, head_ExV, batch: OPDBatch, chunk_size: int
):
  """`(hidden_BxNxE, span_logprob_BxN)`: the teacher's hidden state at the
  last teacher token of each student position's span (the exact
  counterpart's, where the span is one token on both sides), and its summed
  log-probability of its own tokens of that span."""
  m = hidden_BxMxE.shape[1]
  tokens, _ = batch.sequence("teacher")
  logprobs_BxM = losses.token_logprobs(
    hidden_BxMxE, head_ExV, tokens[:, -m:], chunk_size
  )
  span_logprob = losses.span_logprob(
    logprobs_BxM, batch.teacher_span_BxM, batch.span_BxN
  )
  hidden_BxNxE = jnp.take_along_axis(
    hidden_BxMxE, batch.teacher_index_BxN[..., None], axis=1
  )
  return jax.lax.stop_gradient((hidden_BxNxE, span_logprob))


def mapped_head(head_ExV, vocab_map_V):
  """The teacher's LM head on the student's ids ([E, V_student]): the
  column of the teacher id of the same string, or any column where there is
  none (the loss restricts both models to the shared ids)."""
  return jnp.take(head_ExV, jnp.maximum(vocab_map_V, 0), axis=1)


def terms(batch: OPDBatch, span_logprob_BxN, shared_V) -> losses.CrossTerms:
  """The loss's `CrossTerms` for a (micro-)batch: the span rewards use the
  sampler's recorded log-probs of the student's tokens."""
  return losses.cross_terms(
    shared_V,
    batch.exact_BxN,
    batch.span_BxN,
    batch.sampler_logprobs_BxN,
    span_logprob_BxN,
  )
