"""`token_divergence`: the per-token loss on materialised logits.

Shapes: B batch, T positions, V vocabulary (any leading per-token shape works
in place of [B, T]).
"""

import functools

import jax

from rock_jax.losses.logit_space import (
  freeze_teacher,
  logit_cotangent,
  make_spec,
  mixed_loss,
  scaled,
  value_and_normalizers,
)


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _from_logits(spec, student, teacher, ids):
  return _from_logits_fwd(spec, student, teacher, ids)[0]


def _from_logits_fwd(spec, student, teacher, ids):
  z_s = scaled(student, spec.temperature)
  z_t = scaled(teacher, spec.temperature)
  value, norm_s, norm_t, cross_entropy = value_and_normalizers(
    spec, z_s, z_t, ids
  )
  # Keep the raw logits, not log-probs: the backward recomputes the
  # elementwise log-softmax instead of storing two more [..., V] arrays. It
  # needs the divergence's value (reverse KL reuses it), not the loss's; the
  # CE gradient needs no value.
  loss = mixed_loss(spec, value, cross_entropy)
  return loss, (student, teacher, ids, norm_s, norm_t, value)


def _from_logits_bwd(spec, residuals, ct):
  student, teacher, ids, norm_s, norm_t, value = residuals
  g = logit_cotangent(
    spec,
    scaled(student, spec.temperature),
    scaled(teacher, spec.temperature),
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
    pg_reverse_kl: reverse KL as optimised by policy-gradient OPD
      (tinker-cookbook, slime). Value and gradient deliberately differ: the
      value is the exact reverse KL above (the logged ℓ_t, e.g. for the
      Rock-Token tracker), while `jax.grad` returns the single-sample
      estimate k1(x)·∇log p_s(x), i.e. the per-token reward
      −(log p_s(x) − log p_t(x)) held constant times the score. Its
      expectation under x ~ p_s is the exact reverse-KL gradient, so it is
      unbiased only for ids sampled from the (temperature-scaled) student;
      for ids from a stale copy of it, see `importance_weights`.

  Args:
    student_logits_BxTxV: student logits, any float dtype, [..., V].
    teacher_logits_BxTxV: teacher logits, same shape; never differentiated.
    kind: a key of `DIVERGENCES`.
    beta: JSD mixture weight in [0, 1]; only `jsd` uses it.
    temperature: KD temperature > 0 applied to both logits (no T² rescale).
    sampled_ids_BxT: integer token ids, required by k1, k3 and
      pg_reverse_kl and by kd_ratio < 1 (the cross-entropy labels),
      otherwise ignored.
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
  spec = make_spec(
    kind, beta, temperature, kd_ratio, sampled_ids_BxT, student_shape[:-1]
  )
  ids = sampled_ids_BxT if spec.uses_ids else None
  return _from_logits(
    spec, student_logits_BxTxV, freeze_teacher(teacher_logits_BxTxV), ids
  )
