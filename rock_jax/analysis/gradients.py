"""Gradient diagnostics: how much of the reverse-KL gradient rocks carry.

In logit space (the paper's §2.6) the gradient of one position's reverse KL
with respect to the student logits is g = p_s ⊙ (A − E_{p_s}[A]) with
A = log p_s − log p_t. Per type t, ḡ_t is the mean g over the positions
emitting t; G_balanced = Σ_t ḡ_t weighs every type once, G_global = Σ_i g_i
every position once; contrib(t) = n_t·‖ḡ_t‖·cos(ḡ_t, G_balanced).

In parameter space, `parameter_share` takes two backward passes of the real
step loss with complementary masks (rock positions, the rest).

Legend: B batch, N completion length, C positions per chunk, D / E hidden,
V vocab, S tracked types.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax

from rock_jax import losses, models, rock
from rock_jax import sharding as shd
from rock_jax.analysis import census
from rock_jax.opd import train_step


def logit_gradient(student_logits_xV, teacher_logits_xV) -> jax.Array:
  """∂ KL(p_s ‖ p_t) / ∂ student logits, in closed form, float32 [..., V]."""
  logp_s = jax.nn.log_softmax(student_logits_xV.astype(jnp.float32), axis=-1)
  logp_t = jax.nn.log_softmax(teacher_logits_xV.astype(jnp.float32), axis=-1)
  p_s = jnp.exp(logp_s)
  # p_t = 0 where p_s > 0 makes the KL infinite; the analyses only see
  # finite teachers, and the where keeps 0·inf out of masked rows.
  a = jnp.where(p_s > 0, logp_s - logp_t, 0.0)
  return p_s * (a - jnp.sum(p_s * a, axis=-1, keepdims=True))


@functools.partial(jax.jit, static_argnames=("cfg", "chunk", "sharders"))
def _accumulate(
  cfg,
  student_params,
  teacher_params,
  batch,
  inv_count_V,
  slot_V,
  acc,
  *,
  chunk,
  sharders,
):
  """Adds one batch's logit gradients to (G_global, G_balanced, slot sums)."""
  n = batch.completion_mask_BxN.shape[1]
  h_t, w_t = train_step.teacher_side(
    cfg, teacher_params, batch, sharders.teacher
  )
  h_s = train_step.completion_hidden(
    cfg.student,
    student_params,
    batch.student_tokens_BxS,
    batch.student_mask_BxS,
    n,
    sharders.student,
  )
  w_s = models.lm_head(cfg.student, student_params)
  ids = batch.completion_BxN.reshape(-1)
  valid = batch.completion_mask_BxN.reshape(-1).astype(jnp.float32)
  h_s = h_s.reshape(-1, h_s.shape[-1])
  h_t = h_t.reshape(-1, h_t.shape[-1])
  pad = -h_s.shape[0] % chunk
  h_s, h_t = (jnp.pad(h, ((0, pad), (0, 0))) for h in (h_s, h_t))
  ids, valid = jnp.pad(ids, (0, pad)), jnp.pad(valid, (0, pad))
  num_slots = acc[2].shape[0]

  def body(carry, xs):
    g_global, g_balanced, slot_sum = carry
    hs, ht, i, m = xs
    z_s = jnp.einsum("cd,dv->cv", hs, w_s, preferred_element_type=jnp.float32)
    z_t = jnp.einsum("ce,ev->cv", ht, w_t, preferred_element_type=jnp.float32)
    g = logit_gradient(z_s, z_t) * m[:, None]
    onehot = jax.nn.one_hot(slot_V[i], num_slots, dtype=jnp.float32)
    return (
      g_global + g.sum(0),
      g_balanced + (g * inv_count_V[i][:, None]).sum(0),
      slot_sum + onehot.T @ g,
    ), None

  def split(x):
    return x.reshape(-1, chunk, *x.shape[1:])

  acc, _ = jax.lax.scan(body, acc, tuple(map(split, (h_s, h_t, ids, valid))))
  return acc


def logit_diagnostics(
  cfg,
  student_params,
  teacher_params,
  corpus: census.Corpus,
  ts: census.TypeStats,
  tracked,
  *,
  sharders,
  batch_size: int,
  chunk: int = 128,
) -> dict:
  """Per-type mean logit gradients over the corpus and their geometry.

  Args:
    cfg: `census.kl_config(...)`.
    student_params, teacher_params: the models the corpus was scored with.
    corpus: the census corpus (its sequences are teacher-forced again).
    ts: its type statistics (counts give the balanced weights).
    tracked: the type ids whose ḡ_t is kept (the comparison groups).
    sharders: both models' layouts (`train_step.Sharders`).
    batch_size: rows per pass.
    chunk: positions per logits block ([chunk, V] buffers).

  Returns:
    {"ids", "count", "norm", "cos_balanced", "cos_global", "contribution"}
    per tracked id (NumPy), plus "balanced_norm" and "global_norm".
  """
  vocab = ts.count_V.shape[0]
  tracked = np.asarray(tracked, np.int64)
  slot_V = np.full(vocab, len(tracked), np.int32)  # the last slot is unused
  slot_V[tracked] = np.arange(len(tracked))
  with np.errstate(divide="ignore"):
    inv_count_V = np.where(ts.count_V > 0, 1.0 / ts.count_V, 0.0)
  acc = (
    jnp.zeros(vocab, jnp.float32),
    jnp.zeros(vocab, jnp.float32),
    jnp.zeros((len(tracked) + 1, vocab), jnp.float32),
  )
  inv_count_V, slot_V = (
    jnp.asarray(inv_count_V, jnp.float32),
    jnp.asarray(slot_V),
  )
  for part, _ in census.row_slices(corpus.batch, batch_size, sharders.student):
    acc = _accumulate(
      cfg,
      student_params,
      teacher_params,
      part,
      inv_count_V,
      slot_V,
      acc,
      chunk=chunk,
      sharders=sharders,
    )
  g_global, g_balanced, slot_sum = (np.asarray(x, np.float64) for x in acc)
  count = ts.count_V[tracked]
  mean_SxV = slot_sum[: len(tracked)] / np.maximum(count, 1)[:, None]
  norm = np.linalg.norm(mean_SxV, axis=1)
  return {
    "ids": tracked,
    "count": count,
    "norm": norm,
    "cos_balanced": _cosine(mean_SxV, g_balanced),
    "cos_global": _cosine(mean_SxV, g_global),
    "contribution": count * norm * _cosine(mean_SxV, g_balanced),
    "balanced_norm": float(np.linalg.norm(g_balanced)),
    "global_norm": float(np.linalg.norm(g_global)),
  }


def _cosine(rows_SxV, vector_V):
  denominator = np.linalg.norm(rows_SxV, axis=1) * np.linalg.norm(vector_V)
  with np.errstate(invalid="ignore", divide="ignore"):
    return np.where(denominator > 0, rows_SxV @ vector_V / denominator, np.nan)


@functools.partial(jax.jit, static_argnames=("cfg", "sharders"))
def _masked_grads(cfg, student_params, teacher_params, batch, rock_V, sharders):
  teacher = train_step.teacher_side(
    cfg, teacher_params, batch, sharders.teacher
  )
  mask = batch.completion_mask_BxN
  is_rock = rock_V[batch.completion_BxN] & mask

  def loss(params, weights):
    per_token = train_step.per_token_loss(
      cfg, params, teacher, batch, sharders.student
    )
    # The step's own normaliser: both halves divide by every valid token,
    # so the two gradients add up to the full step's.
    return losses.reduce(per_token, mask, weights, cfg.normalize)[0]

  grad = jax.grad(loss)
  g_rock = grad(student_params, is_rock.astype(jnp.float32))
  g_rest = grad(student_params, (mask & ~is_rock).astype(jnp.float32))
  dot = optax.tree.vdot(g_rock, g_rest)
  return {
    "rock_norm": optax.tree.norm(g_rock),
    "rest_norm": optax.tree.norm(g_rest),
    "dot": dot,
    "rock_tokens": is_rock.sum(),
    "tokens": mask.sum(),
  }


def parameter_share(
  cfg,
  student_params,
  teacher_params,
  batches,
  rock_ids,
  *,
  sharders,
) -> dict:
  """What share of the step's parameter gradient the rock positions carry.

  Per batch (a real train step's worth of sequences), the token-mean
  reverse-KL loss is differentiated twice, once with only the rock positions
  and once with only the others, so g_all = g_rock + g_rest exactly.

  Returns:
    Per batch lists of "norm_share" ‖g_rock‖ / ‖g_all‖, "projection_share"
    ⟨g_rock, g_all⟩ / ‖g_all‖² (it and the rest's add up to 1),
    "cos_rock_rest", "token_share" and the norms.
  """
  vocab = cfg.student.vocab_size
  rock_V = jnp.asarray(np.asarray(rock.rock_mask(rock_ids, vocab)))
  sharding = sharders.student.sharding((shd.BATCH, shd.LENGTH))
  out = {
    k: []
    for k in (
      "norm_share",
      "projection_share",
      "cos_rock_rest",
      "token_share",
      "rock_norm",
      "rest_norm",
      "all_norm",
    )
  }
  for batch in batches:
    batch = jax.tree.map(
      lambda x: shd.to_global(np.asarray(x), sharding), batch
    )
    r = jax.device_get(
      _masked_grads(
        cfg, student_params, teacher_params, batch, rock_V, sharders
      )
    )
    rock_n, rest_n = float(r["rock_norm"]), float(r["rest_norm"])
    dot = float(r["dot"])
    all_sq = rock_n**2 + rest_n**2 + 2 * dot
    all_n = float(np.sqrt(max(all_sq, 0.0)))
    out["rock_norm"].append(rock_n)
    out["rest_norm"].append(rest_n)
    out["all_norm"].append(all_n)
    out["norm_share"].append(rock_n / all_n if all_n else np.nan)
    out["projection_share"].append(
      (rock_n**2 + dot) / all_sq if all_sq else np.nan
    )
    out["cos_rock_rest"].append(
      dot / (rock_n * rest_n) if rock_n * rest_n else np.nan
    )
    out["token_share"].append(
      float(r["rock_tokens"]) / max(float(r["tokens"]), 1.0)
    )
  return out
