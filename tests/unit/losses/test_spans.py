"""Tests for the cross-tokenizer terms against float64 NumPy references.

Exact positions: reverse KL over the shared ids plus one bucket for each
side's remaining mass; span positions: the span log-ratio as the reward of a
score-function gradient.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rock_jax import losses
from rock_jax.losses import spans

B, T, M, D, E, V = 2, 7, 9, 5, 6, 11
G = losses.GROUPS


def np_log_softmax(z):
  z = np.asarray(z, np.float64)
  z = z - np.max(z, axis=-1, keepdims=True)
  return z - np.log(np.sum(np.exp(z), axis=-1, keepdims=True))


def np_logsumexp(z, where=True):
  """log Σ exp(z) over the last axis where `where` (-inf over none)."""
  z = np.where(where, np.asarray(z, np.float64), -np.inf)
  top = np.max(z, axis=-1, keepdims=True)
  top = np.where(np.isfinite(top), top, 0.0)
  with np.errstate(divide="ignore"):
    return (top + np.log(np.sum(np.exp(z - top), -1, keepdims=True)))[..., 0]


def _inputs(seed=0):
  """Student (V ids) and teacher (V + 3 ids: three of its own) states; the
  student's id v is the teacher's id v where comparable, the others fall in
  first-byte groups (ids mod 5 here; the teacher's own in 1 and 7)."""
  rng = np.random.default_rng(seed)
  h_s = rng.normal(size=(B, T, D)).astype(np.float32)
  w_s = rng.normal(size=(D, V)).astype(np.float32)
  h_t = rng.normal(size=(B, T, E)).astype(np.float32)
  w_t = rng.normal(size=(E, V + 3)).astype(np.float32)
  shared = np.arange(V) % 4 != 3
  group_s = np.where(shared, -1, np.arange(V) % 5)
  group_t = np.concatenate([group_s, [1, 7, 7]])
  ids = rng.integers(0, V, (B, T)).astype(np.int32)
  z_t = np.einsum("bte,ev->btv", h_t.astype(np.float64), w_t)
  log_p_t = np_log_softmax(z_t)
  log_groups = np.stack(
    [np_logsumexp(log_p_t, group_t == g) for g in range(G)], -1
  )
  cross = losses.CrossTerms(
    jnp.asarray(group_s, jnp.int32),
    # An exact position's token is comparable (one on both sides).
    jnp.asarray((rng.random((B, T)) < 0.5) & shared[ids]),
    jnp.asarray(rng.random((B, T)) < 0.5),
    jnp.asarray(rng.normal(size=(B, T)).astype(np.float32)),
    jnp.asarray(rng.normal(size=(B, T)).astype(np.float32)),
    jnp.asarray(np_logsumexp(z_t).astype(np.float32)),
    jnp.asarray(log_groups.astype(np.float32)),
  )
  # The teacher's head on the student's comparable ids only.
  return h_s, w_s, h_t, w_t[:, np.flatnonzero(shared)], ids, cross, z_t


def np_reference(h_s, w_s, z_t, ids, cross, kind):
  """(per-token values, d Σ values / d student logits), float64: reverse KL
  between both models' distributions over the comparable ids and the
  first-byte groups of the rest, at span starts; the span reward inside."""
  z_s = np.einsum("btd,dv->btv", h_s.astype(np.float64), w_s)
  group = np.asarray(cross.group_V)
  shared = group < 0
  ls = np_log_softmax(z_s)
  lt_all = np_log_softmax(z_t)
  lt = lt_all[..., :V]
  ps = np.exp(ls)
  group_t = np.concatenate([group, [1, 7, 7]])
  a = np.zeros(ps.shape)
  kl = np.sum(np.where(shared, ps * (ls - lt), 0.0), -1)
  for g in range(G):
    in_s, in_t = group == g, group_t == g
    if not in_s.any():
      continue
    mass_s = ps[..., in_s].sum(-1)
    mass_t = np.exp(lt_all[..., in_t]).sum(-1)
    ratio = np.log(mass_s / mass_t)
    kl = kl + mass_s * ratio
    a[..., in_s] = ratio[..., None]
  a = np.where(shared, ls - lt, a)
  onehot = np.eye(V)[ids]
  g_start = ps * (a - kl[..., None])
  exact = np.asarray(cross.exact_BxT)
  if kind == "pg_reverse_kl":  # k1 of the sampled id where exact
    k1 = np.take_along_axis(ls - lt, ids[..., None], -1)
    g_start = np.where(exact[..., None], k1 * (onehot - ps), g_start)
  g_in = np.asarray(cross.reward_BxT, np.float64)[..., None] * (onehot - ps)
  start = np.asarray(cross.start_BxT)
  value = np.where(start, kl, np.asarray(cross.value_BxT))
  return value, np.where(start[..., None], g_start, g_in)


@pytest.mark.parametrize("kind", losses.CROSS_KINDS)
@pytest.mark.parametrize("chunk_size", [3, 128])
def test_cross_loss_and_gradient_match_float64(kind, chunk_size):
  h_s, w_s, h_t, w_t, ids, cross, z_t = _inputs()
  ct = np.random.default_rng(1).random((B, T)).astype(np.float32)

  def f(h, w):
    out, logprobs = losses.chunked_token_divergence(
      h,
      w,
      h_t,
      w_t,
      kind=kind,
      sampled_ids_BxT=ids,
      cross=cross,
      chunk_size=chunk_size,
      return_logprobs=True,
    )
    return jnp.sum(out * ct), (out, logprobs)

  (_, (value, logprobs)), (dh, dw) = jax.value_and_grad(
    f, argnums=(0, 1), has_aux=True
  )(h_s, w_s)
  ref_value, ref_g = np_reference(h_s, w_s, z_t, ids, cross, kind)
  np.testing.assert_allclose(value, ref_value, rtol=1e-5, atol=1e-6)
  g = ref_g * ct[..., None]
  np.testing.assert_allclose(
    dw, np.einsum("btd,btv->dv", h_s, g), rtol=1e-4, atol=1e-5
  )
  np.testing.assert_allclose(
    dh, np.einsum("btv,dv->btd", g, w_s), rtol=1e-4, atol=1e-5
  )
  # The sampled log-probs are the student's full-vocabulary ones.
  z_s = np.einsum("btd,dv->btv", h_s.astype(np.float64), w_s)
  expected = np.take_along_axis(np_log_softmax(z_s), ids[..., None], -1)[..., 0]
  np.testing.assert_allclose(logprobs, expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("kind", losses.CROSS_KINDS)
def test_all_exact_on_one_vocabulary_is_the_plain_loss(kind):
  h_s, w_s, h_t, _, ids, _, _ = _inputs(2)
  w_t = np.random.default_rng(4).normal(size=(E, V)).astype(np.float32)
  z_t = np.einsum("bte,ev->btv", h_t, w_t)
  everywhere = jnp.ones((B, T), bool)
  cross = losses.CrossTerms(
    jnp.full(V, -1, jnp.int32),
    everywhere,
    everywhere,
    jnp.zeros((B, T)),
    jnp.zeros((B, T)),
    jax.nn.logsumexp(z_t, axis=-1),
    jnp.full((B, T, G), -jnp.inf),
  )

  def f(h, w, c):
    out = losses.chunked_token_divergence(
      h, w, h_t, w_t, kind=kind, sampled_ids_BxT=ids, cross=c
    )
    return jnp.sum(out * jnp.arange(T)[None]), out

  plain = jax.grad(f, argnums=(0, 1), has_aux=True)(h_s, w_s, None)
  crossed = jax.grad(f, argnums=(0, 1), has_aux=True)(h_s, w_s, cross)
  # The teacher's normaliser comes from another reduction: float32
  # round-off of terms of order log V.
  jax.tree.map(
    lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6),
    crossed,
    plain,
  )


def test_span_terms_sum_each_side_over_its_span():
  # Row 0: spans [0, 1] [2] [3 (excluded)]; row 1: [0] [1, 2].
  span_BxT = jnp.array([[0, 0, 1, -1], [0, 1, 1, -1]])
  teacher_span_BxM = jnp.array([[0, 1, 1, -1, -1], [0, 0, 0, 1, -1]])
  student = jnp.array([[-1.0, -2.0, -0.5, -9.0], [-0.25, -1.0, -3.0, -9.0]])
  teacher = jnp.array(
    [[-0.5, -1.0, -1.5, -9.0, -9.0], [-1.0, -0.1, -0.1, -2.0, -9.0]]
  )
  at = losses.span_logprob(teacher, teacher_span_BxM, span_BxT)
  np.testing.assert_allclose(at, [[-0.5, -0.5, -2.5, 0], [-1.2, -2, -2, 0]])
  flags = jnp.zeros((2, 4), bool)
  cross = losses.cross_terms(
    jnp.full(3, -1),
    flags,
    flags,
    span_BxT,
    student,
    at,
    jnp.zeros((2, 4)),
    jnp.zeros((2, 4, G)),
  )
  reward = [[-2.5, -2.5, 2.0, 0.0], [0.95, -2.0, -2.0, 0.0]]
  np.testing.assert_allclose(cross.reward_BxT, reward, rtol=1e-6)
  np.testing.assert_allclose(
    cross.value_BxT, [[-1.25, -1.25, 2.0, 0], [0.95, -1, -1, 0]], rtol=1e-6
  )


def test_teacher_log_probs_are_its_log_softmax_and_masses():
  rng = np.random.default_rng(3)
  h = rng.normal(size=(B, M, E)).astype(np.float32)
  w = rng.normal(size=(E, V)).astype(np.float32)
  ids = rng.integers(0, V, (B, M))
  group = np.where(np.arange(V) % 3 == 0, -1, np.arange(V) % 4)
  z = np.einsum("bme,ev->bmv", h.astype(np.float64), w)
  log_p = np_log_softmax(z)
  own = np.take_along_axis(log_p, ids[..., None], -1)[..., 0]
  groups = np.stack([np_logsumexp(log_p, group == g) for g in range(G)], -1)
  for chunk in (4, 128):
    got = losses.teacher_log_probs(
      h, w, jnp.asarray(ids), jnp.asarray(group), G, chunk_size=chunk
    )
    for x, ref in zip(got, (own, np_logsumexp(z), groups), strict=True):
      np.testing.assert_allclose(x, ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
  "size, groups",
  [(11, 3), (16, 1), (37, 2), (5000, 9), (5000, G - 1)],
  ids=["under-a-block", "one-block", "tail", "few-groups", "all-groups"],
)
def test_group_sums_over_the_sorted_layout_are_the_groups_masses(size, groups):
  rng = np.random.default_rng(size + groups)
  group = rng.integers(-1, groups, size)
  layout = spans.group_layout(jnp.asarray(group, jnp.int32), G)
  order = np.asarray(layout.order_W)
  np.testing.assert_array_equal(np.sort(order), np.arange(size))
  np.testing.assert_array_equal(
    order[np.asarray(layout.column_V)], np.arange(size)
  )
  np.testing.assert_array_equal(np.asarray(layout.group_W), group[order])
  p = rng.random((2, 3, size)).astype(np.float32)
  got = spans.group_sums(jnp.asarray(p[..., order]), layout, G)
  want = np.stack([(p * (group == g)).sum(-1) for g in range(G)], -1)
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
  "kwargs, match",
  [
    (dict(kind="forward_kl"), r"kind in \('reverse_kl', 'pg_reverse_kl'\)"),
    (dict(temperature=2.0), "temperature=2.0"),
    (dict(sampled_ids_BxT=None), "cross needs sampled_ids_BxT"),
  ],
)
def test_bad_cross_arguments_are_named(kwargs, match):
  h_s, w_s, h_t, w_t, ids, cross, _ = _inputs()
  kwargs = dict(dict(sampled_ids_BxT=ids, cross=cross), **kwargs)
  with pytest.raises(ValueError, match=match):
    losses.chunked_token_divergence(h_s, w_s, h_t, w_t, **kwargs)


def test_a_teacher_head_over_other_ids_than_the_comparable_is_named():
  h_s, w_s, h_t, w_t, ids, cross, _ = _inputs()
  with pytest.raises(
    ValueError,
    match=rf"teacher_head_ExV has {V} columns and group_V {w_t.shape[1]} "
    r"comparable ids; .* \(opd.cross.mapped_head\)",
  ):
    losses.chunked_token_divergence(
      h_s,
      w_s,
      h_t,
      np.ones((E, V), np.float32),
      sampled_ids_BxT=ids,
      cross=cross,
    )
