"""Per-token distillation losses, their chunked form and the reduction.

Arrays in, arrays out: no model and no config object, so any Flax codebase can
call these inside its own jitted step.

Shapes: B batch, T positions, V vocabulary, D student hidden, E teacher hidden,
K chunks, C positions per chunk.

Conventions shared by every function here:
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
- The teacher crosses into the loss through `_freeze_teacher`, the single
  `jax.lax.stop_gradient`: no gradient ever reaches teacher logits, hidden
  states or head.
- Zero probability follows information theory: a term p·log(p/q) with p = 0
  is 0, whatever q (so −inf logits on the side that weighs the sum are
  harmless, in value and gradient); a term with p > 0 and q = 0 is +inf (the
  divergence is infinite, e.g. reverse KL when the student puts mass on a
  token the teacher gives −inf). Unlike KDFlow we do not drop vocabulary
  entries where the teacher is −inf: a student could then park its mass on
  tokens the teacher forbids at no cost. Mask such entries in both models
  (e.g. slice both to the shared vocabulary) or mask the position. A position
  with zero cotangent (masked or zero-weight in `reduce`) gets exactly zero
  gradient even when its value is infinite.
- Gradients are analytic (custom VJPs), in logit space, shared by the
  unchunked and chunked paths; forward-mode differentiation is not supported.
"""

import functools
import math
import numbers
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp

# Tokens per chunk. One fp32 [C, V] buffer at the Qwen vocabulary is 78 MB for
# C = 128, and the chunked loss+grad holds about four: 0.25x one fp32
# [2048, V] array (benchmarks/loss_memory.py; perf.md C3 asks <= 0.65x). On
# CPU it was also the fastest chunk measured at V = 151,936. Accelerators with
# memory to spare feed their matmul units better with larger chunks (Liger
# uses 1024).
DEFAULT_CHUNK_SIZE = 128


class _Divergence(NamedTuple):
  """One divergence: its per-token value and its logit-space gradient.

  Both take float32 log-probabilities `logp_s`, `logp_t` ([..., V], already
  temperature-scaled), the sampled ids ([...], or None) and beta. `grad` also
  gets the forward value and returns dvalue/dz_s for the scaled student
  logits z_s.
  """

  value: Callable
  grad: Callable
  sampled: bool


def _p_times(p, x):
  """p·x with 0·x = 0 even where x is ±inf (plain 0·inf would be NaN)."""
  return jnp.where(p > 0, p * x, 0.0)


def _centered(p, b):
  """p ⊙ (b − E_p[b]): the softmax chain rule for dL/dp = b."""
  mean = jnp.sum(_p_times(p, b), axis=-1, keepdims=True)
  return _p_times(p, b - mean)


def _reverse_kl_value(logp_s, logp_t, ids, beta):
  del ids, beta
  return jnp.sum(_p_times(jnp.exp(logp_s), logp_s - logp_t), axis=-1)


def _reverse_kl_grad(logp_s, logp_t, ids, beta, value):
  del ids, beta
  # dKL/dz = p_s ⊙ (A − E_ps[A]) with A = log p_s − log p_t, and E_ps[A] is the
  # forward value itself, which saves a reduction over V.
  return _p_times(jnp.exp(logp_s), logp_s - logp_t - value[..., None])


def _forward_kl_value(logp_s, logp_t, ids, beta):
  del ids, beta
  return jnp.sum(_p_times(jnp.exp(logp_t), logp_t - logp_s), axis=-1)


def _forward_kl_grad(logp_s, logp_t, ids, beta, value):
  del ids, beta, value
  return jnp.exp(logp_s) - jnp.exp(logp_t)


def _log_mixture(logp_s, logp_t, beta):
  """log m with m = (1 − β)·p_s + β·p_t, computed in log space."""
  return jnp.logaddexp(logp_s + math.log1p(-beta), logp_t + math.log(beta))


def _jsd_value(logp_s, logp_t, ids, beta):
  del ids
  log_m = _log_mixture(logp_s, logp_t, beta)
  teacher = jnp.sum(_p_times(jnp.exp(logp_t), logp_t - log_m), axis=-1)
  student = jnp.sum(_p_times(jnp.exp(logp_s), logp_s - log_m), axis=-1)
  return beta * teacher + (1.0 - beta) * student


def _jsd_grad(logp_s, logp_t, ids, beta, value):
  del ids, value
  # dJSD/dp_s = (1 − β)·(log p_s − log m): the β·p_t/m and (1 − β)·p_s/m terms
  # of the two KLs sum to 1 and cancel against the +1 of d(p log p)/dp.
  b = (1.0 - beta) * (logp_s - _log_mixture(logp_s, logp_t, beta))
  return _centered(jnp.exp(logp_s), b)


def _gather(logp, ids):
  return jnp.take_along_axis(logp, ids[..., None], axis=-1)[..., 0]


def _score(logp_s, ids):
  """d log p_s(x)/dz_s = onehot(x) − p_s."""
  onehot = jax.nn.one_hot(ids, logp_s.shape[-1], dtype=jnp.float32)
  return onehot - jnp.exp(logp_s)


def _k1_value(logp_s, logp_t, ids, beta):
  del beta
  return _gather(logp_s, ids) - _gather(logp_t, ids)


def _k1_grad(logp_s, logp_t, ids, beta, value):
  del logp_t, beta, value
  return _score(logp_s, ids)


def _k3_value(logp_s, logp_t, ids, beta):
  del beta
  log_r = _gather(logp_t, ids) - _gather(logp_s, ids)
  return jnp.expm1(log_r) - log_r


def _k3_grad(logp_s, logp_t, ids, beta, value):
  del beta, value
  # d[(r − 1) − log r]/dz = (r − 1)·dlog r/dz = (1 − r)·(onehot − p_s).
  log_r = _gather(logp_t, ids) - _gather(logp_s, ids)
  return -jnp.expm1(log_r)[..., None] * _score(logp_s, ids)


# Name -> implementation. Full-vocabulary kinds are exact at every position;
# k1 and k3 are the single-sample estimators of reverse KL on `sampled_ids`.
DIVERGENCES = {
  "reverse_kl": _Divergence(_reverse_kl_value, _reverse_kl_grad, False),
  "forward_kl": _Divergence(_forward_kl_value, _forward_kl_grad, False),
  "jsd": _Divergence(_jsd_value, _jsd_grad, False),
  "k1": _Divergence(_k1_value, _k1_grad, True),
  "k3": _Divergence(_k3_value, _k3_grad, True),
}


class _Spec(NamedTuple):
  """Static, hashable description of one divergence (a custom_vjp nondiff)."""

  kind: str
  beta: float
  temperature: float
  kd_ratio: float

  @property
  def uses_ids(self):
    """Whether the loss reads the sampled ids (k1, k3 or a cross-entropy)."""
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
    if sampled_ids is None:
      if DIVERGENCES[kind].sampled:
        need = f"kind={kind!r} needs sampled_ids_BxT, the token sampled"
      else:
        need = (
          f"kd_ratio={kd_ratio!r} < 1 needs sampled_ids_BxT, the "
          "cross-entropy label (in Stage-1 KD, the teacher's sampled token)"
        )
      raise ValueError(f"{need} at each position")
    if tuple(sampled_ids.shape) != tuple(leading_shape):
      raise ValueError(
        f"sampled_ids_BxT.shape={tuple(sampled_ids.shape)} must equal the "
        f"per-token shape {tuple(leading_shape)}"
      )
    if not jnp.issubdtype(sampled_ids.dtype, jnp.integer):
      raise ValueError(
        f"sampled_ids_BxT.dtype={sampled_ids.dtype} must be an integer type"
      )
  return spec


def _freeze_teacher(teacher):
  """The one place where teacher arrays enter the loss: never differentiated."""
  return jax.lax.stop_gradient(teacher)


def _scaled(logits, temperature):
  z = logits.astype(jnp.float32)
  return z if temperature == 1.0 else z / temperature


def _normalizer(z):
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


def _value_and_normalizers(spec, z_s, z_t, ids):
  """Per-token divergence, both softmax normalisers (for the backward) and CE.

  The cross-entropy on `ids` is None at kd_ratio = 1: nothing is traced for it.
  """
  norm_s, norm_t = _normalizer(z_s), _normalizer(z_t)
  logp_s = _log_probs(z_s, norm_s)
  value = DIVERGENCES[spec.kind].value(
    logp_s, _log_probs(z_t, norm_t), ids, spec.beta
  )
  cross_entropy = None if spec.kd_ratio == 1.0 else -_gather(logp_s, ids)
  return value, norm_s, norm_t, cross_entropy


def _loss(spec, value, cross_entropy):
  """The per-token loss from `_value_and_normalizers`' value and CE."""
  if cross_entropy is None:
    return value
  return _mix(spec.kd_ratio, value, cross_entropy)


def _logit_cotangent(spec, z_s, z_t, ids, norm_s, norm_t, value, ct):
  """Cotangent of the raw student logits for a per-token cotangent `ct`."""
  logp_s = _log_probs(z_s, norm_s)
  logp_t = _log_probs(z_t, norm_t)
  g = DIVERGENCES[spec.kind].grad(logp_s, logp_t, ids, spec.beta, value)
  if spec.kd_ratio < 1.0:
    # d(−log p_s(y))/dz_s = p_s − onehot(y), the negated score.
    g = _mix(spec.kd_ratio, g, -_score(logp_s, ids))
  scale = (ct.astype(jnp.float32) / spec.temperature)[..., None]
  # `where`, not a product: a masked position may hold an infinite divergence
  # whose logit gradient is not finite, and 0·inf is NaN.
  return jnp.where(scale == 0, 0.0, scale * g)


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _from_logits(spec, student, teacher, ids):
  return _from_logits_fwd(spec, student, teacher, ids)[0]


def _from_logits_fwd(spec, student, teacher, ids):
  z_s = _scaled(student, spec.temperature)
  z_t = _scaled(teacher, spec.temperature)
  value, norm_s, norm_t, cross_entropy = _value_and_normalizers(
    spec, z_s, z_t, ids
  )
  # Keep the raw logits, not log-probs: the backward recomputes the
  # elementwise log-softmax instead of storing two more [..., V] arrays. It
  # needs the divergence's value (reverse KL reuses it), not the loss's; the
  # CE gradient needs no value.
  loss = _loss(spec, value, cross_entropy)
  return loss, (student, teacher, ids, norm_s, norm_t, value)


def _from_logits_bwd(spec, residuals, ct):
  student, teacher, ids, norm_s, norm_t, value = residuals
  g = _logit_cotangent(
    spec,
    _scaled(student, spec.temperature),
    _scaled(teacher, spec.temperature),
    ids,
    norm_s,
    norm_t,
    value,
    ct,
  )
  return g.astype(student.dtype), None, None


_from_logits.defvjp(_from_logits_fwd, _from_logits_bwd)


def token_divergence(
  student_logits_BxTxV,
  teacher_logits_BxTxV,
  kind="reverse_kl",
  beta=0.5,
  temperature=1.0,
  sampled_ids_BxT=None,
  kd_ratio=1.0,
):
  """Per-token divergence between student and teacher next-token distributions.

  Optionally mixed with cross-entropy on `sampled_ids_BxT` (`kd_ratio`).

  Kinds (p_s, p_t: temperature-scaled softmaxes):
    reverse_kl: exact Σ_v p_s·(log p_s − log p_t) at every position; the
      paper's ℓ_t and the default.
    forward_kl: exact Σ_v p_t·(log p_t − log p_s).
    jsd: generalised JSD(β) = β·KL(p_t‖m) + (1 − β)·KL(p_s‖m) with
      m = β·p_t + (1 − β)·p_s, in log space; β = 0 is forward KL and β = 1
      reverse KL (the TRL / ms-swift / Liger convention).
    k1: log p_s(x) − log p_t(x) on the sampled token x. Its expectation under
      x ~ p_s is reverse KL, but `jax.grad` of it is the score function
      ∇ log p_s(x), whose expectation is zero: it is the Thinking Machines
      advantage, to be used as `-stop_gradient(k1)` times ∇ log p_s(x) in a
      policy-gradient loss, not minimised directly.
    k3: (r − 1) − log r with r = p_t(x)/p_s(x) (Schulman), a non-negative,
      lower-variance estimate of reverse KL. `jax.grad` of it is
      (1 − r)·∇ log p_s(x), whose expectation under x ~ p_s is the gradient of
      forward KL(p_t‖p_s), not of reverse KL.

  Args:
    student_logits_BxTxV: student logits, any float dtype, [..., V].
    teacher_logits_BxTxV: teacher logits, same shape; never differentiated.
    kind: a key of `DIVERGENCES`.
    beta: JSD mixture weight in [0, 1]; only `jsd` uses it.
    temperature: KD temperature > 0 applied to both logits (no T² rescale).
    sampled_ids_BxT: integer token ids, required by k1 and k3 and by
      kd_ratio < 1 (the cross-entropy labels), otherwise ignored.
    kd_ratio: static weight r in [0, 1] of the divergence; the loss is
      r·divergence + (1 − r)·(−log p_s(sampled_ids_BxT)). The default 1 is
      the pure divergence, the paper's Stage-1 KD uses 0.5 with forward_kl.

  Returns:
    float32 per-token loss of shape [...] (the logits without V). Its
    gradient w.r.t. the student logits is analytic and has the logits' dtype.
  """
  student_shape = tuple(student_logits_BxTxV.shape)
  teacher_shape = tuple(teacher_logits_BxTxV.shape)
  if student_shape != teacher_shape or len(student_shape) < 2:
    raise ValueError(
      f"student_logits_BxTxV.shape={student_shape} and "
      f"teacher_logits_BxTxV.shape={teacher_shape} must be equal with at "
      "least 2 dims (slice both to the shared vocabulary if the tokenizers "
      "agree)"
    )
  spec = _spec(
    kind, beta, temperature, kd_ratio, sampled_ids_BxT, student_shape[:-1]
  )
  ids = sampled_ids_BxT if spec.uses_ids else None
  return _from_logits(
    spec, student_logits_BxTxV, _freeze_teacher(teacher_logits_BxTxV), ids
  )


def _chunk_logits(spec, h_s, w_s, h_t, w_t):
  """Scaled float32 logits of one [B, C] chunk for both models."""
  z_s = jnp.einsum("bcd,dv->bcv", h_s, w_s, preferred_element_type=jnp.float32)
  z_t = jnp.einsum("bce,ev->bcv", h_t, w_t, preferred_element_type=jnp.float32)
  return _scaled(z_s, spec.temperature), _scaled(z_t, spec.temperature)


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _chunked(spec, hs_KxBxCxD, ws_DxV, ht_KxBxCxE, wt_ExV, ids_KxBxC):
  value_KxBxC, _ = _chunked_fwd(
    spec, hs_KxBxCxD, ws_DxV, ht_KxBxCxE, wt_ExV, ids_KxBxC
  )
  return value_KxBxC


def _chunked_fwd(spec, hs_KxBxCxD, ws_DxV, ht_KxBxCxE, wt_ExV, ids_KxBxC):
  def step(carry, xs):
    h_s, h_t, ids = xs
    z_s, z_t = _chunk_logits(spec, h_s, ws_DxV, h_t, wt_ExV)
    return carry, _value_and_normalizers(spec, z_s, z_t, ids)

  _, (value, norm_s, norm_t, cross_entropy) = jax.lax.scan(
    step, None, (hs_KxBxCxD, ht_KxBxCxE, ids_KxBxC)
  )
  # Residuals are the inputs plus five per-token vectors: nothing of size V
  # per token survives the forward.
  residuals = (hs_KxBxCxD, ws_DxV, ht_KxBxCxE, wt_ExV, ids_KxBxC)
  return _loss(spec, value, cross_entropy), residuals + (norm_s, norm_t, value)


def _chunked_bwd(spec, residuals, ct_KxBxC):
  hs, ws_DxV, ht, wt_ExV, ids, norm_s, norm_t, value = residuals

  def step(dws_DxV, xs):
    h_s, h_t, ids_c, norm_s_c, norm_t_c, value_c, ct_c = xs
    # Recompute this chunk's logits rather than store [B·T, V] of them.
    z_s, z_t = _chunk_logits(spec, h_s, ws_DxV, h_t, wt_ExV)
    g = _logit_cotangent(
      spec, z_s, z_t, ids_c, norm_s_c, norm_t_c, value_c, ct_c
    )
    # Feed the matmuls what autodiff of a `ws_DxV.dtype` head would (bf16
    # matmuls are much faster on accelerators), accumulating in float32.
    g = g.astype(ws_DxV.dtype)
    dh_s = jnp.einsum(
      "bcv,dv->bcd", g, ws_DxV, preferred_element_type=jnp.float32
    )
    dws_DxV = dws_DxV + jnp.einsum(
      "bcd,bcv->dv", h_s, g, preferred_element_type=jnp.float32
    )
    return dws_DxV, dh_s.astype(h_s.dtype)

  dws, dhs = jax.lax.scan(
    step,
    jnp.zeros(ws_DxV.shape, jnp.float32),
    (hs, ht, ids, norm_s, norm_t, value, ct_KxBxC),
  )
  return dhs, dws.astype(ws_DxV.dtype), None, None, None


_chunked.defvjp(_chunked_fwd, _chunked_bwd)


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
    teacher_head_ExV: teacher LM head, same V as the student's.
    kind, beta, temperature, sampled_ids_BxT: as in `token_divergence`.
    chunk_size: tokens per scan step (across the batch); memory scales with
      it, speed suffers only when it is very small.
    kd_ratio: as in `token_divergence`; the cross-entropy term shares the
      chunked logits, so it adds no [B·T, V] buffer either.

  Returns:
    float32 per-token loss [B, T], equal to `token_divergence` on the
    materialised logits. Gradients flow to the student hidden states and head
    only.
  """
  h_s, w_s = student_hidden_BxTxD, student_head_DxV
  h_t, w_t = teacher_hidden_BxTxE, teacher_head_ExV
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
  if h_s.shape[:2] != h_t.shape[:2] or w_s.shape[1] != w_t.shape[1]:
    raise ValueError(
      f"student and teacher must share [B, T] and V; got "
      f"student_hidden_BxTxD.shape={h_s.shape}, "
      f"teacher_hidden_BxTxE.shape={h_t.shape}, "
      f"student_head_DxV.shape={w_s.shape}, "
      f"teacher_head_ExV.shape={w_t.shape}"
    )
  if not isinstance(chunk_size, numbers.Integral) or chunk_size < 1:
    raise ValueError(f"chunk_size={chunk_size!r} must be a positive int")
  batch, length = h_s.shape[:2]
  spec = _spec(
    kind, beta, temperature, kd_ratio, sampled_ids_BxT, (batch, length)
  )
  h_t, w_t = _freeze_teacher((h_t, w_t))

  positions = max(1, min(length, int(chunk_size) // batch))
  chunks = -(-length // positions)

  def to_chunks(x):
    pad = [(0, 0), (0, chunks * positions - length)] + [(0, 0)] * (x.ndim - 2)
    x = jnp.pad(x, pad).reshape(batch, chunks, positions, *x.shape[2:])
    return jnp.swapaxes(x, 0, 1)

  ids = to_chunks(sampled_ids_BxT) if spec.uses_ids else None
  value_KxBxC = _chunked(spec, to_chunks(h_s), w_s, to_chunks(h_t), w_t, ids)
  value_BxT = jnp.swapaxes(value_KxBxC, 0, 1).reshape(batch, -1)
  return value_BxT[:, :length]


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
