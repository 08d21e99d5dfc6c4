"""`chunked_token_divergence`: the per-token loss from hidden states and heads.

Shapes: B batch, T positions, V vocabulary, D student hidden, E teacher
hidden, K chunks, C positions per chunk.
"""

import functools
import numbers

import jax
import jax.numpy as jnp
import numpy as np

from rock_jax.losses import spans
from rock_jax.losses.divergences import gather
from rock_jax.losses.logit_space import (
  check_ids,
  freeze_teacher,
  logit_cotangent,
  make_spec,
  mixed_loss,
  normalizer,
  scaled,
  value_and_normalizers,
)

# Tokens per chunk. The loss+grad holds about four fp32 [C, V] buffers, so
# memory follows C, not the sequence (benchmarks/loss_memory.py); on CPU 128
# is also the fastest chunk at the Qwen vocabulary. Accelerators with memory
# to spare feed their matmul units better with larger chunks.
DEFAULT_CHUNK_SIZE = 128


def _raw_chunk_logits(h_s, w_s, h_t, w_t):
  """Unscaled float32 logits of one [B, C] chunk for both models."""
  z_s = jnp.einsum("bcd,dv->bcv", h_s, w_s, preferred_element_type=jnp.float32)
  z_t = jnp.einsum("bce,ev->bcv", h_t, w_t, preferred_element_type=jnp.float32)
  return z_s, z_t


def _chunk_logits(spec, h_s, w_s, h_t, w_t):
  """Scaled float32 logits of one [B, C] chunk for both models."""
  z_s, z_t = _raw_chunk_logits(h_s, w_s, h_t, w_t)
  return scaled(z_s, spec.temperature), scaled(z_t, spec.temperature)


def _sampled_logprob(spec, z_raw, norm_s, ids):
  """log softmax(z_raw)[ids] at temperature 1, from the chunk's raw logits.

  At temperature 1 the divergence's normaliser is this one; otherwise one
  more reduction over V of the logits already in hand, not another matmul.
  """
  z_max, log_sum = norm_s if spec.temperature == 1.0 else normalizer(z_raw)
  return (gather(z_raw, ids) - z_max) - log_sum


def _chunk_value(spec, z_raw, z_t, ids, layout, cross_c):
  """The divergence value, its normalisers and CE for one chunk; across
  tokenizers the coarsened divergence (`spans.coarse_value`, temperature 1)
  and the student's normaliser."""
  if cross_c is not None:
    _, _, _, _, log_z_t, log_groups_t = cross_c
    # The groups' log-ratios ride in the teacher-normaliser slot, which the
    # coarsened divergence does not use.
    value, norm_s, group_a = spans.coarse_value(
      z_raw, z_t, log_z_t, log_groups_t, layout
    )
    return value, norm_s, group_a, None
  z_s, z_t = scaled(z_raw, spec.temperature), scaled(z_t, spec.temperature)
  return value_and_normalizers(spec, z_s, z_t, ids)


# `logprobs` (static) adds a second output, the student's own log-probs of the
# ids; without it the program is exactly the divergence alone. `cross` is
# None or `(layout, (exact, start, reward, value, teacher_log_z,
# teacher_log_groups) chunked)` (`spans.CrossTerms`, `spans.GroupLayout`).
@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 1))
def _chunked(
  spec, logprobs, hs_KxBxCxD, ws_DxV, ht_KxBxCxE, wt_ExV, ids_KxBxC, cross
):
  out, _ = _chunked_fwd(
    spec, logprobs, hs_KxBxCxD, ws_DxV, ht_KxBxCxE, wt_ExV, ids_KxBxC, cross
  )
  return out


def _in_layout(cross, ids_KxBxC, ws_DxV):
  """`(layout, chunked terms, ids, ws)`: across tokenizers the ids and the
  student head's columns in the layout's order (the group masses are sums
  of contiguous columns, the comparable ids the last, in the order of the
  teacher head's columns), else as given."""
  if cross is None:
    return None, None, ids_KxBxC, ws_DxV
  layout, cross_KxBxC = cross
  return layout, cross_KxBxC, *spans.in_layout(layout, ids_KxBxC, ws_DxV)


def _chunked_fwd(
  spec, logprobs, hs_KxBxCxD, ws_DxV, ht_KxBxCxE, wt_ExV, ids_KxBxC, cross
):
  layout, cross_KxBxC, ids, ws = _in_layout(cross, ids_KxBxC, ws_DxV)

  def step(carry, xs):
    h_s, h_t, ids, cross_c = xs
    z_raw, z_t = _raw_chunk_logits(h_s, ws, h_t, wt_ExV)
    out = _chunk_value(spec, z_raw, z_t, ids, layout, cross_c)
    if logprobs:
      out = out + (_sampled_logprob(spec, z_raw, out[1], ids),)
    return carry, out

  _, (value, norm_s, norm_t, cross_entropy, *logprob) = jax.lax.scan(
    step, None, (hs_KxBxCxD, ht_KxBxCxE, ids, cross_KxBxC)
  )
  # Residuals are the inputs plus five per-token vectors (across tokenizers
  # one holds the G groups' log-ratios): nothing of size V per token
  # survives the forward.
  residuals = (hs_KxBxCxD, ws_DxV, ht_KxBxCxE, wt_ExV, ids_KxBxC)
  loss = mixed_loss(spec, value, cross_entropy)
  if cross is not None:
    _, start, _, span_value, _, _ = cross_KxBxC
    loss = jnp.where(start, loss, span_value)
  out = (loss, logprob[0]) if logprobs else loss
  return out, residuals + (norm_s, norm_t, value, cross)


def _chunk_cotangent(spec, z_s, z_t, xs, layout):
  """One chunk's student-logit cotangent (`spans.coarse_cotangent` across
  tokenizers)."""
  _, _, ids, norm_s, norm_t, value, ct, cross_c = xs
  if cross_c is None:
    return logit_cotangent(spec, z_s, z_t, ids, norm_s, norm_t, value, ct)
  exact, start, reward, _, log_z_t, _ = cross_c
  return spans.coarse_cotangent(
    spec.kind,
    z_s,
    z_t,
    ids,
    norm_s,
    value,
    (exact, start, reward, log_z_t, norm_t, ct),
    layout,
  )


def _chunked_bwd(spec, logprobs, residuals, ct):
  hs, ws_DxV, ht, wt_ExV, ids, norm_s, norm_t, value, cross = residuals
  layout, cross_KxBxC, ids, ws = _in_layout(cross, ids, ws_DxV)
  # The log-probs are reported, not differentiated: their cotangent is dropped.
  ct_KxBxC = ct[0] if logprobs else ct

  def step(dws_DxV, xs):
    h_s, h_t = xs[:2]
    # Recompute this chunk's logits rather than store [B·T, V] of them.
    z_s, z_t = _chunk_logits(spec, h_s, ws, h_t, wt_ExV)
    g = _chunk_cotangent(spec, z_s, z_t, xs, layout)
    # Feed the matmuls what autodiff of a `ws_DxV.dtype` head would (bf16
    # matmuls are much faster on accelerators), accumulating in float32.
    g = g.astype(ws.dtype)
    dh_s = jnp.einsum("bcv,dv->bcd", g, ws, preferred_element_type=jnp.float32)
    dws_DxV = dws_DxV + jnp.einsum(
      "bcd,bcv->dv", h_s, g, preferred_element_type=jnp.float32
    )
    return dws_DxV, dh_s.astype(h_s.dtype)

  dws, dhs = jax.lax.scan(
    step,
    jnp.zeros(ws.shape, jnp.float32),
    (hs, ht, ids, norm_s, norm_t, value, ct_KxBxC, cross_KxBxC),
  )
  if layout is not None:
    dws = jnp.take(dws, layout.column_V, axis=1)
  return dhs, dws.astype(ws_DxV.dtype), None, None, None, None


_chunked.defvjp(_chunked_fwd, _chunked_bwd)


def _check_inputs(h_s, w_s, h_t, w_t, chunk_size, return_logprobs, crossed):
  """Shape and static-argument checks of `chunked_token_divergence`."""
  if h_s.ndim != 3 or h_t.ndim != 3 or w_s.ndim != 2 or w_t.ndim != 2:
    raise ValueError(
      f"expected hidden states [B, T, D|E] and heads [D|E, V]; got "
      f"student_hidden_BxTxD.shape={h_s.shape}, "
      f"student_head_DxV.shape={w_s.shape}, "
      f"teacher_hidden_BxTxE.shape={h_t.shape}, "
      f"teacher_head_ExV.shape={w_t.shape}"
    )
  for name, hidden, head, head_name in (
    ("student_hidden_BxTxD", h_s, w_s, "student_head_DxV"),
    ("teacher_hidden_BxTxE", h_t, w_t, "teacher_head_ExV"),
  ):
    if hidden.shape[-1] != head.shape[0]:
      raise ValueError(
        f"{name}.shape={hidden.shape} and {head_name}.shape={head.shape} "
        "disagree on the hidden size"
      )
  # Across tokenizers the teacher's head holds the comparable ids only.
  vocab = w_s.shape[1]
  vocab_ok = w_t.shape[1] <= vocab if crossed else w_t.shape[1] == vocab
  if h_s.shape[:2] != h_t.shape[:2] or not vocab_ok:
    raise ValueError(
      f"student and teacher must share [B, T] and V (across tokenizers the "
      f"teacher's head has the comparable ids' columns); got "
      f"student_hidden_BxTxD.shape={h_s.shape}, "
      f"teacher_hidden_BxTxE.shape={h_t.shape}, "
      f"student_head_DxV.shape={w_s.shape}, "
      f"teacher_head_ExV.shape={w_t.shape}"
    )
  if not isinstance(chunk_size, numbers.Integral) or chunk_size < 1:
    raise ValueError(f"chunk_size={chunk_size!r} must be a positive int")
  if not isinstance(return_logprobs, bool):
    raise ValueError(f"return_logprobs={return_logprobs!r} must be a bool")


# The kinds whose gradient the span reward estimates (reverse KL's).
CROSS_KINDS = ("reverse_kl", "pg_reverse_kl")


def _check_cross(cross, spec, ids, leading_shape, vocab, shared) -> None:
  """Argument checks of `chunked_token_divergence(cross=...)` (`shared`:
  the teacher head's columns)."""
  if cross is None:
    return
  if not isinstance(cross.group_V, jax.core.Tracer):
    comparable = int(np.sum(np.asarray(cross.group_V) < 0))
    if comparable != shared:
      raise ValueError(
        f"teacher_head_ExV has {shared} columns and group_V {comparable} "
        "comparable ids; across tokenizers the teacher's head holds the "
        "comparable ids' columns, in id order (opd.cross.mapped_head)"
      )
  check_ids(
    ids, leading_shape, "cross needs sampled_ids_BxT, the student's tokens"
  )
  if spec.kind not in CROSS_KINDS or spec.temperature != 1.0:
    raise ValueError(
      f"cross-tokenizer terms need kind in {CROSS_KINDS} at temperature 1 "
      f"(the span reward estimates reverse KL's gradient); got "
      f"kind={spec.kind!r}, temperature={spec.temperature}"
    )
  if spec.kd_ratio != 1.0:
    raise ValueError(
      f"cross-tokenizer terms need kd_ratio=1, got {spec.kd_ratio}"
    )
  shapes = {name: tuple(x.shape) for name, x in cross._asdict().items()}
  groups = cross.teacher_log_groups_BxTxG.shape[-1:]
  expected = {
    "group_V": (vocab,),
    **{name: leading_shape for name in cross._fields[1:-1]},
    "teacher_log_groups_BxTxG": leading_shape + groups,
  }
  if shapes != expected:
    raise ValueError(f"CrossTerms shapes {shapes}, expected {expected}")


def chunked_token_divergence(
  student_hidden_BxTxD,
  student_head_DxV,
  teacher_hidden_BxTxE,
  teacher_head_ExV,
  kind="reverse_kl",
  beta=0.5,
  temperature=1.0,
  sampled_ids_BxT=None,
  chunk_size=DEFAULT_CHUNK_SIZE,
  kd_ratio=1.0,
  return_logprobs=False,
  cross=None,
):
  """`token_divergence` from hidden states and LM heads, without [B·T, V].

  The logits `hidden @ head` are formed chunk by chunk in a `lax.scan`, in
  float32 (`preferred_element_type`, so bf16 inputs are fine); a custom VJP
  recomputes each chunk's logits in the backward and accumulates the student
  head gradient in float32. Neither pass holds more than a few [chunk, V]
  buffers, whatever B·T is. Each step covers a [B, C] block with
  C = max(1, chunk_size // B) positions of every sequence, so the batch axis,
  and any sharding of it over devices, is untouched. T is padded to a multiple
  of C and the padding dropped.

  Args:
    student_hidden_BxTxD: student final hidden states (after the final norm).
    student_head_DxV: student LM head (for tied embeddings, the transposed
      embedding table).
    teacher_hidden_BxTxE: teacher final hidden states; E may differ from D.
    teacher_head_ExV: teacher LM head, same V as the student's (with
      `cross`, the columns of the student's comparable ids only, in id
      order: `opd.cross.mapped_head`).
    kind, beta, temperature, sampled_ids_BxT: as in `token_divergence`.
    chunk_size: tokens per scan step (across the batch); memory scales with
      it, speed suffers only when it is very small.
    kd_ratio: as in `token_divergence`; the cross-entropy term shares the
      chunked logits, so it adds no [B·T, V] buffer either.
    return_logprobs: static bool; also return the student's log-probability
      of `sampled_ids_BxT` (required then) under its own distribution,
      log softmax(hidden @ head)[id] at temperature 1 whatever
      `temperature`: what a trainer compares with the sampler's recorded
      log-probs for `importance_weights`. It is computed in the same scan
      from the same logits and carries no gradient.
    cross: `spans.CrossTerms` when the teacher has another tokenizer (its
      hidden states taken at each position's span and its head mapped to
      the student's ids): exact positions get reverse KL coarsened to the
      comparable ids plus a bucket for the rest, the others the span reward
      (`rock_jax.losses.spans`).
      Needs kind reverse_kl or pg_reverse_kl, temperature 1, kd_ratio 1
      and `sampled_ids_BxT`.

  Returns:
    float32 per-token loss [B, T], equal to `token_divergence` on the
    materialised logits. Gradients flow to the student hidden states and head
    only. With `return_logprobs`, the pair (per-token loss, float32 log-probs
    [B, T]).
  """
  h_s, w_s = student_hidden_BxTxD, student_head_DxV
  h_t, w_t = teacher_hidden_BxTxE, teacher_head_ExV
  _check_inputs(
    h_s, w_s, h_t, w_t, chunk_size, return_logprobs, cross is not None
  )
  batch, length = h_s.shape[:2]
  if return_logprobs:
    check_ids(
      sampled_ids_BxT,
      (batch, length),
      "return_logprobs=True needs sampled_ids_BxT, the tokens whose "
      "log-probabilities it returns",
    )
  spec = make_spec(
    kind, beta, temperature, kd_ratio, sampled_ids_BxT, (batch, length)
  )
  h_t, w_t = freeze_teacher((h_t, w_t))
  _check_cross(
    cross, spec, sampled_ids_BxT, (batch, length), w_s.shape[1], w_t.shape[1]
  )

  positions = max(1, min(length, int(chunk_size) // batch))
  chunks = -(-length // positions)

  def to_chunks(x):
    pad = [(0, 0), (0, chunks * positions - length)] + [(0, 0)] * (x.ndim - 2)
    x = jnp.pad(x, pad).reshape(batch, chunks, positions, *x.shape[2:])
    return jnp.swapaxes(x, 0, 1)

  def from_chunks(x_KxBxC):
    return jnp.swapaxes(x_KxBxC, 0, 1).reshape(batch, -1)[:, :length]

  uses_ids = spec.uses_ids or return_logprobs or cross is not None
  ids = to_chunks(sampled_ids_BxT) if uses_ids else None
  if cross is not None:
    groups = cross.teacher_log_groups_BxTxG.shape[-1]
    layout = spans.group_layout(cross.group_V, groups)
    cross = (layout, tuple(to_chunks(x) for x in cross[1:]))
  out = _chunked(
    spec, return_logprobs, to_chunks(h_s), w_s, to_chunks(h_t), w_t, ids, cross
  )
  if not return_logprobs:
    return from_chunks(out)
  value_KxBxC, logprobs_KxBxC = out
  return from_chunks(value_KxBxC), jax.lax.stop_gradient(
    from_chunks(logprobs_KxBxC)
  )
