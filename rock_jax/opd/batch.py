"""What one OPD step trains on: the sampled batch, seen by both models.

Legend: B batch, S student sequence (prompt P_s + completion N), U teacher
sequence (prompt P_t + the same completion, or across tokenizers its own
M-token rendering of it), N completion length, L a rollout's width, E teacher
hidden, V vocab.

Prompts are left-padded to fixed widths and the completion follows them, so
in both sequences the completion is the last N columns, and hidden state
column P - 1 + t predicts completion token t. Teacher and student may see
different prompts (privileged information goes to the teacher only).
"""

from __future__ import annotations

import functools

import flax.struct
import jax
import jax.numpy as jnp


@flax.struct.dataclass
class OPDBatch:
  """Student rollouts, re-rendered for the teacher."""

  student_tokens_BxS: jax.Array
  student_mask_BxS: jax.Array
  teacher_tokens_BxU: jax.Array
  teacher_mask_BxU: jax.Array
  completion_mask_BxN: jax.Array
  # The sampler's log-probabilities of the completion tokens (its model's
  # own log-softmax): the denominators of the importance weights when the
  # sampler's weights are stale.
  sampler_logprobs_BxN: jax.Array | None = None
  # Across tokenizers (`rock_jax.data.retokenize.CrossBatch`), else None:
  # each completion position's span and the teacher position that scores it,
  # the teacher tokens' spans, the exact positions and each span's first
  # position. The completion mask then holds only the positions the loss
  # reads.
  span_BxN: jax.Array | None = None
  teacher_span_BxM: jax.Array | None = None
  exact_BxN: jax.Array | None = None
  teacher_index_BxN: jax.Array | None = None
  start_BxN: jax.Array | None = None

  @property
  def cross(self) -> bool:
    """Whether the teacher reads its own tokenisation of the completion."""
    return self.span_BxN is not None

  @property
  def teacher_width(self) -> int:
    """How many of the teacher sequence's last columns are completion."""
    source = self.teacher_span_BxM if self.cross else self.completion_mask_BxN
    return source.shape[1]

  @property
  def completion_BxN(self) -> jax.Array:
    return self.student_tokens_BxS[:, -self.completion_mask_BxN.shape[1] :]

  def sequence(self, role: str) -> tuple[jax.Array, jax.Array]:
    """One model's (tokens, mask): its prompt followed by the completion."""
    if role == "teacher":
      return self.teacher_tokens_BxU, self.teacher_mask_BxU
    return self.student_tokens_BxS, self.student_mask_BxS


@flax.struct.dataclass
class TeacherScores:
  """What the loss needs of the teacher, computed on the teacher's devices:
  its final hidden states at the completion positions and its LM head.

  Across tokenizers the hidden states are those at the teacher position of
  each student position's span, the head holds the columns of the
  student's comparable ids only, in id order (`opd.cross.mapped_head`;
  `group_V`: -1 for those ids, else their first-byte group),
  `span_logprob_BxN` holds the teacher's log-probability
  of each position's span, and `log_z_BxN`, `log_groups_BxNxG` its
  log-normaliser over its own vocabulary and the log-mass of each
  first-byte group there (`opd.cross`).
  """

  hidden_BxNxE: jax.Array
  head_ExV: jax.Array
  span_logprob_BxN: jax.Array | None = None
  group_V: jax.Array | None = None
  log_z_BxN: jax.Array | None = None
  log_groups_BxNxG: jax.Array | None = None


@functools.partial(jax.jit, static_argnames=("width",))
def batch_from_rollout(
  tokens_BxL,
  completion_mask_BxL,
  student_BxP,
  teacher_BxP,
  logprobs_BxL=None,
  *,
  width,
) -> OPDBatch:
  """Both models' sequences around a sampled completion (the last `width`
  columns of a rollout), each after its own left-padded prompt.

  `student_BxP` and `teacher_BxP` are each role's `(tokens, mask)`;
  `logprobs_BxL` the rollout's `logprobs`, kept for importance weights.
  """
  completion = tokens_BxL[:, -width:]
  mask = completion_mask_BxL[:, -width:]
  (s_tok, s_mask), (t_tok, t_mask) = student_BxP, teacher_BxP
  return OPDBatch(
    student_tokens_BxS=jnp.concatenate([s_tok, completion], axis=1),
    student_mask_BxS=jnp.concatenate([s_mask, mask], axis=1),
    teacher_tokens_BxU=jnp.concatenate([t_tok, completion], axis=1),
    teacher_mask_BxU=jnp.concatenate([t_mask, mask], axis=1),
    completion_mask_BxN=mask,
    sampler_logprobs_BxN=None
    if logprobs_BxL is None
    else logprobs_BxL[:, -width:].astype(jnp.float32),
  )


def with_teacher_tokens(batch: OPDBatch, teacher_BxP, cross) -> OPDBatch:
  """`batch` with the teacher's own tokens of each completion after its
  prompt, across tokenizers.

  Args:
    batch: from `batch_from_rollout`.
    teacher_BxP: the teacher's `(tokens, mask)` prompts.
    cross: a `retokenize.CrossBatch` of the batch's completions (host
      arrays, this process's rows).
  """
  t_tok, t_mask = teacher_BxP
  return batch.replace(
    teacher_tokens_BxU=jnp.concatenate([t_tok, cross.teacher_ids_BxM], 1),
    teacher_mask_BxU=jnp.concatenate([t_mask, cross.teacher_mask_BxM], 1),
    completion_mask_BxN=cross.loss_mask_BxN,
    span_BxN=cross.span_BxN,
    teacher_span_BxM=cross.teacher_span_BxM,
    exact_BxN=cross.exact_BxN,
    teacher_index_BxN=cross.teacher_index_BxN,
    start_BxN=cross.start_BxN,
  )
