"""The teacher's side of a cross-tokenizer step: its scores at the student's
positions, from its hidden states over its own completion tokens.

Legend: B batch, N student completion length, M teacher completion length,
E teacher hidden, V the teacher's vocabulary (for `mapped_head` the
student's), S the student's comparable ids.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from rock_jax import losses
from rock_jax.opd.batch import OPDBatch, TeacherScores


def check_loss(kind: str, temperature: float, kd_ratio: float) -> None:
  """Raises unless the step's loss is one the span terms estimate: reverse
  KL at temperature 1 without cross-entropy."""
  if kind not in losses.CROSS_KINDS or (temperature, kd_ratio) != (1, 1):
    raise ValueError(
      f"cross_tokenizer=True needs kind in {losses.CROSS_KINDS}, "
      f"temperature 1 and kd_ratio 1; got kind={kind!r}, "
      f"temperature={temperature}, kd_ratio={kd_ratio}"
    )


def check_scored(batch: OPDBatch, scored: bool) -> None:
  """Raises if a cross-tokenizer batch comes with the teacher's parameters:
  its scores are taken on its own tokens first (`score_teacher`)."""
  if batch.cross and not scored:
    raise ValueError(
      "a cross-tokenizer batch needs the teacher's TeacherScores "
      "(score_teacher, head mapped with cross.mapped_head), not its "
      "parameters"
    )


def rows(teacher):
  """`(hidden_BxNxE, cross-tokenizer [B, N] terms)` of a `TeacherScores`,
  split into micro-batches with the batch (Nones for the teacher's
  parameters, and for the terms with one tokenizer)."""
  if not isinstance(teacher, TeacherScores):
    return None, (None,) * 3
  terms = (
    teacher.span_logprob_BxN,
    teacher.log_z_BxN,
    teacher.log_groups_BxNxG,
  )
  return teacher.hidden_BxNxE, terms


def scores_at_student_positions(
  hidden_BxMxE, head_ExV, batch: OPDBatch, group_V, chunk_size: int
):
  """`(hidden_BxNxE, span_logprob_BxN, log_z_BxN, log_groups_BxNxG)`: the
  teacher's hidden state at the first teacher token of each student
  position's span (its prediction after the text both share), its summed
  log-probability of its own tokens of that span, and there its
  log-normaliser and the log-mass of each first-byte group of its
  non-comparable ids (`group_V`, over its vocabulary)."""
  m = hidden_BxMxE.shape[1]
  tokens, _ = batch.sequence("teacher")
  own = losses.teacher_log_probs(
    hidden_BxMxE,
    head_ExV,
    tokens[:, -m:],
    group_V,
    losses.GROUPS,
    chunk_size,
  )
  span_logprob = losses.span_logprob(
    own.own_BxM, batch.teacher_span_BxM, batch.span_BxN
  )
  index = batch.teacher_index_BxN

  def at(x_BxM):
    rows = index.reshape(index.shape + (1,) * (x_BxM.ndim - 2))
    return jnp.take_along_axis(x_BxM, rows, axis=1)

  return jax.lax.stop_gradient(
    (
      at(hidden_BxMxE),
      span_logprob,
      at(own.log_z_BxM),
      at(own.log_groups_BxMxG),
    )
  )


def teacher_groups(groups_V, vocab_size: int):
  """The teacher's `first_byte_groups` over its model's `vocab_size` rows
  (rows past the tokenizer's ids, never emitted, group with no bytes)."""
  padded = jnp.full(vocab_size, losses.GROUPS - 1, jnp.int32)
  return padded.at[: len(groups_V)].set(groups_V[:vocab_size])


def mapped_head(head_ExV, vocab_map_V):
  """The teacher's LM head on the student's comparable ids ([E, S], S ids
  with a teacher id of the same string, in id order): the loss compares
  the two models' log-probs there only. `vocab_map_V` is the host's
  (`Retokenizer.vocab_map_V`), not traced: S sets the shape."""
  (shared,) = np.nonzero(np.asarray(vocab_map_V) >= 0)
  return jnp.take(head_ExV, np.asarray(vocab_map_V)[shared], axis=1)


def terms(
  batch: OPDBatch, span_logprob_BxN, group_V, log_z_BxN, log_groups_BxNxG
) -> losses.CrossTerms:
  """The loss's `CrossTerms` for a (micro-)batch: the span rewards use the
  sampler's recorded log-probs of the student's tokens."""
  return losses.cross_terms(
    group_V,
    batch.exact_BxN,
    batch.start_BxN,
    batch.span_BxN,
    batch.sampler_logprobs_BxN,
    span_logprob_BxN,
    log_z_BxN,
    log_groups_BxNxG,
  )


def micro_teacher(scores: TeacherScores, hidden_BxNxE, terms, crossed: bool):
  """What the loss reads of the teacher for one micro-batch: `(hidden,
  head)`, across tokenizers followed by `terms`' arguments after the
  batch."""
  if not crossed:
    return hidden_BxNxE, scores.head_ExV
  span_logprob, log_z, log_groups = terms
  return (
    hidden_BxNxE,
    scores.head_ExV,
    span_logprob,
    scores.group_V,
    log_z,
    log_groups,
  )
