"""Cross-tokenizer terms: the teacher's log-probs of its own tokens, span
sums, and the per-position terms `chunked_token_divergence(cross=...)` reads.

Shapes: B batch, T student positions, M teacher positions, V student (or,
for the teacher's own scores, teacher) vocabulary, E teacher hidden, K spans
(at most T), C positions per chunk, W the vocabulary sorted by group (W = V,
`GroupLayout`), Q its blocks of BLOCK columns, L its loose columns, N rows.

A span is a stretch of text that both tokenisations cover with whole tokens
(`rock_jax.data.alignment`). At a span's first student position both models
have read the same text, and their next-token distributions induce one
distribution each over the same outcomes: each comparable id (a string both
vocabularies hold with the same longer strings, `alignment.vocab_map`), or
else the next byte (`alignment.first_byte_groups`). The loss there is the
reverse KL between these two coarsened distributions, exact, with its
analytic gradient; with one vocabulary every id is comparable and it is the
full reverse KL. The student's later tokens inside a span (it split the
span's text into several) get the span's log-ratio

  r_k = Σ_{i in k} log p_s(x_i) − Σ_{j in k} log p_t(y_j),

the single-sample estimate of the reverse KL between the two models over the
span's text, as the per-token reward of `pg_reverse_kl` (gradient
r_k·∇log p_s(x_i)); the value logged at each of the span's n_k tokens is
r_k / n_k.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from rock_jax.losses.divergences import gather, score
from rock_jax.losses.logit_space import normalizer

# Outcomes besides the comparable ids: the next byte (256), or an id without
# bytes (`rock_jax.data.alignment.first_byte_groups`).
GROUPS = 257


class CrossTerms(NamedTuple):
  """What `chunked_token_divergence` reads across tokenizers.

  Attributes:
    group_V: int32, -1 for student ids with a comparable teacher id, else
      the id's first-byte group (`alignment.first_byte_groups`).
    exact_BxT: bool, positions whose span is one comparable token on both
      sides (`pg_reverse_kl` takes its sampled-token gradient there).
    start_BxT: bool, each span's first student position (the coarsened
      divergence); the others take the span reward.
    reward_BxT: float32, the span log-ratio r_k: the coefficient of
      ∇log p_s(x) at the positions inside a span.
    value_BxT: float32, the value reported there (r_k / n_k).
    teacher_log_z_BxT: float32, the teacher's log-normaliser over its whole
      vocabulary after the span's shared prefix.
    teacher_log_groups_BxTxG: float32, the teacher's log-probability of
      each first-byte group of its non-comparable ids there (-inf: none).
  """

  group_V: jax.Array
  exact_BxT: jax.Array
  start_BxT: jax.Array
  reward_BxT: jax.Array
  value_BxT: jax.Array
  teacher_log_z_BxT: jax.Array
  teacher_log_groups_BxTxG: jax.Array


class TeacherLogProbs(NamedTuple):
  """`teacher_log_probs`: at each teacher position."""

  own_BxM: jax.Array  # log-prob of the teacher's own next token
  log_z_BxM: jax.Array  # log-normaliser over the whole vocabulary
  log_groups_BxMxG: jax.Array  # log-prob of each first-byte group


# Columns per block of the vocabulary sorted by group (`group_layout`): a block
# of one group is summed as a reshape, the columns of a block two groups share
# one by one. On CPU a scatter-add over V costs about a head matmul; this costs
# a fraction of one.
BLOCK = 16


class GroupLayout(NamedTuple):
  """The vocabulary's ids sorted by first-byte group, comparable ids last
  (`group_layout`); W = V columns in that order.

  Attributes:
    order_W: int32, the id at each column.
    column_V: int32, each id's column.
    group_W: int32, each column's group (-1: comparable).
    whole_Q: bool, the blocks of BLOCK columns of one group.
    key_Q: int32, each block's first group (GROUPS: comparable ids).
    loose_L: int32, the columns of the blocks two groups share and of the
      tail past the last whole block (then column 0 as padding).
    loose_key_L: int32, their groups (GROUPS: comparable ids, padding).
  """

  order_W: jax.Array
  column_V: jax.Array
  group_W: jax.Array
  whole_Q: jax.Array
  key_Q: jax.Array
  loose_L: jax.Array
  loose_key_L: jax.Array


def group_layout(group_V, groups: int) -> GroupLayout:
  """The `GroupLayout` of `group_V` (-1 or a group below `groups`), under
  jit: one sort of V ids per step, shapes fixed by V alone."""
  size = group_V.shape[0]
  key_V = jnp.where(group_V < 0, groups, group_V).astype(jnp.int32)
  order_W = jnp.argsort(key_V, stable=True).astype(jnp.int32)
  key_W = key_V[order_W]
  column_V = (
    jnp.zeros(size, jnp.int32)
    .at[order_W]
    .set(jnp.arange(size, dtype=jnp.int32))
  )
  blocks = size // BLOCK
  ends_Qx2 = key_W[: blocks * BLOCK].reshape(blocks, BLOCK)[:, :: BLOCK - 1]
  whole_Q = ends_Qx2[:, 0] == ends_Qx2[:, -1]
  # Sorted keys change at most `groups` times: so many blocks are shared.
  loose = jnp.pad(
    jnp.repeat(~whole_Q, BLOCK),
    (0, size - blocks * BLOCK),
    constant_values=True,
  )
  count = min(groups, blocks) * BLOCK + size - blocks * BLOCK
  (loose_L,) = jnp.nonzero(loose, size=count, fill_value=0)
  padding_L = jnp.arange(count) >= jnp.sum(loose)
  return GroupLayout(
    order_W,
    column_V,
    jnp.where(key_W == groups, -1, key_W),
    whole_Q,
    ends_Qx2[:, 0],
    loose_L.astype(jnp.int32),
    jnp.where(padding_L, groups, key_W[loose_L]),
  )


def group_sums(p, layout: GroupLayout, groups: int):
  """[..., groups] sums of `p` [..., W] (columns in `layout` order) over each
  group, comparable ids left out."""
  p_NxW = p.reshape(-1, p.shape[-1])
  blocks = layout.whole_Q.shape[0]
  sums_NxQ = p_NxW[:, : blocks * BLOCK].reshape(len(p_NxW), blocks, BLOCK)
  sums_NxQ = sums_NxQ.sum(-1)

  def by_group(x_NxL, key_L):
    sums = jax.ops.segment_sum(
      x_NxL.T, key_L, groups + 1, indices_are_sorted=True
    )
    return sums[:groups].T

  whole = by_group(jnp.where(layout.whole_Q, sums_NxQ, 0.0), layout.key_Q)
  loose = by_group(p_NxW[:, layout.loose_L], layout.loose_key_L)
  return (whole + loose).reshape(p.shape[:-1] + (groups,))


def in_layout(layout: GroupLayout, ids, *heads_ExV):
  """`(ids, *heads)`: ids and heads' columns in `layout` order."""
  heads = (jnp.take(head, layout.order_W, axis=1) for head in heads_ExV)
  return layout.column_V[ids], *heads


def teacher_log_probs(
  hidden_BxMxE, head_ExV, ids_BxM, group_V, groups, chunk_size=128
) -> TeacherLogProbs:
  """The teacher's log-probs of its own tokens, its log-normalisers and the
  log-mass of each first-byte group of its non-comparable ids (`group_V`),
  chunk by chunk along M (no [B, M, V] buffer), without gradient."""
  hidden_BxMxE, head_ExV = jax.lax.stop_gradient((hidden_BxMxE, head_ExV))
  layout = group_layout(group_V, groups)
  columns_BxM, head_ExW = in_layout(layout, ids_BxM, head_ExV)
  batch, length = ids_BxM.shape
  size = max(1, min(length, chunk_size // batch))
  chunks = -(-length // size)
  pad = chunks * size - length

  def to_chunks(x):
    x = jnp.pad(x, [(0, 0), (0, pad)] + [(0, 0)] * (x.ndim - 2))
    return jnp.swapaxes(x.reshape(batch, chunks, size, *x.shape[2:]), 0, 1)

  def chunk(xs):
    h, columns = xs
    z = jnp.einsum(
      "bce,ew->bcw", h, head_ExW, preferred_element_type=jnp.float32
    )
    z_max, log_sum = normalizer(z)
    log_z = z_max + log_sum
    mass = group_sums(jnp.exp(z - z_max[..., None]), layout, groups)
    log_groups = jnp.log(mass) - log_sum[..., None]
    return gather(z, columns) - log_z, log_z, log_groups

  out = jax.lax.map(chunk, (to_chunks(hidden_BxMxE), to_chunks(columns_BxM)))
  return TeacherLogProbs(
    *(
      jnp.swapaxes(x, 0, 1).reshape(batch, -1, *x.shape[3:])[:, :length]
      for x in out
    )
  )


def _log_probs(z_s, z_t, log_z_t, norm_s):
  """The student's log-probs and probabilities over its W columns and the
  teacher's log-probs over the comparable ids, the last columns (`z_t`
  [..., S]): `(logp_s, p_s, shared_logp_s, shared_p_s, shared_logp_t)`."""
  z_max, log_sum = norm_s
  logp_s = (z_s - z_max[..., None]) - log_sum[..., None]
  p_s = jnp.exp(logp_s)
  first = z_s.shape[-1] - z_t.shape[-1]
  shared = logp_s[..., first:], p_s[..., first:]
  return logp_s, p_s, *shared, z_t - log_z_t[..., None]


def coarse_value(z_s, z_t, log_z_t, log_groups_t, layout: GroupLayout):
  """Reverse KL between the coarsened distributions of a [B, C] chunk (the
  student's logits' columns in `layout` order, the teacher's on the
  comparable ids only, the layout's last): `(value, norm_s, group_a)`, the
  groups' log-ratios [B, C, G] kept for the backward (no second pass over
  the vocabulary for the group masses)."""
  norm_s = normalizer(z_s)
  _, p_s, logp_s, shared_p_s, logp_t = _log_probs(z_s, z_t, log_z_t, norm_s)
  mass_s = group_sums(p_s, layout, log_groups_t.shape[-1])
  group_a = jnp.log(mass_s) - log_groups_t
  ids = shared_p_s * (logp_s - logp_t)
  ids = jnp.sum(jnp.where(shared_p_s > 0, ids, 0.0), axis=-1)
  groups = jnp.sum(jnp.where(mass_s > 0, mass_s * group_a, 0.0), axis=-1)
  return ids + groups, norm_s, group_a


def coarse_cotangent(kind, z_s, z_t, ids, norm_s, value, cross_c, layout):
  """The student-logit cotangent of a [B, C] chunk across tokenizers (as in
  `coarse_value`, `ids` in `layout` order) for a per-token cotangent folded
  into `cross_c` (temperature 1): at a span's first position the coarsened
  divergence's (`pg_reverse_kl`: its sampled gradient at exact positions),
  inside a span reward · score."""
  exact, start, reward, log_z_t, group_a, ct = cross_c
  logp_s, p_s, shared_logp_s, _, logp_t = _log_probs(z_s, z_t, log_z_t, norm_s)
  # Per-column log-ratios A of the coarsened outcomes: a non-comparable
  # id's group's, a comparable id's own.
  first = z_s.shape[-1] - z_t.shape[-1]
  grouped = jnp.take(group_a, layout.group_W[:first], axis=-1)
  a = jnp.concatenate([grouped, shared_logp_s - logp_t], axis=-1)
  # d/dz of Σ p·A with A held constant: p ⊙ (A − KL).
  g = jnp.where(p_s > 0, p_s * (a - value[..., None]), 0.0)
  if kind == "pg_reverse_kl":
    # Exact positions sample a comparable id; others are masked out.
    k1 = gather(logp_s, ids) - gather(logp_t, jnp.maximum(ids - first, 0))
    g = jnp.where(exact[..., None], k1[..., None] * score(logp_s, ids), g)
  inside = reward[..., None] * score(logp_s, ids)
  g = jnp.where(start[..., None], g, inside)
  # `where`, not a product: a masked position may hold a non-finite term.
  return jnp.where(ct[..., None] == 0, 0.0, ct[..., None] * g)


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
  group_V,
  exact_BxT,
  start_BxT,
  span_BxT,
  student_logprobs_BxT,
  teacher_span_logprob_BxT,
  teacher_log_z_BxT,
  teacher_log_groups_BxTxG,
) -> CrossTerms:
  """The `CrossTerms` of a batch.

  Args:
    group_V, exact_BxT, start_BxT, teacher_log_z_BxT,
      teacher_log_groups_BxTxG: as in `CrossTerms`.
    span_BxT: each student position's span index (-1: no loss there).
    student_logprobs_BxT: the student's log-probs of its sampled tokens, as
      the sampler recorded them (the reward is held constant).
    teacher_span_logprob_BxT: at each position, the teacher's log-prob of
      its own tokens of that position's span, summed (`span_logprob`).
  """
  count = span_BxT.shape[1]
  in_span = (span_BxT >= 0).astype(jnp.float32)
  student = _at_positions(
    span_sums(student_logprobs_BxT, span_BxT, count), span_BxT
  )
  n = _at_positions(span_sums(in_span, span_BxT, count), span_BxT)
  reward = jax.lax.stop_gradient(student - teacher_span_logprob_BxT) * in_span
  return CrossTerms(
    group_V,
    exact_BxT,
    start_BxT,
    reward,
    reward / jnp.maximum(n, 1.0),
    teacher_log_z_BxT,
    teacher_log_groups_BxTxG,
  )
