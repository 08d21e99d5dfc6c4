"""Tests for the cross-tokenizer terms against float64 NumPy references.

Exact positions: the divergence of the two distributions restricted to the
shared vocabulary and renormalised; span positions: the span log-ratio as
the reward of a score-function gradient.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rock_jax import losses

B, T, M, D, E, V = 2, 7, 9, 5, 6, 11


def np_log_softmax(z):
  z = np.asarray(z, np.float64)
  z = z - np.max(z, axis=-1, keepdims=True)
  return z - np.log(np.sum(np.exp(z), axis=-1, keepdims=True))


def _inputs(seed=0):
  rng = np.random.default_rng(seed)
  h_s = rng.normal(size=(B, T, D)).astype(np.float32)
  w_s = rng.normal(size=(D, V)).astype(np.float32)
  h_t = rng.normal(size=(B, T, E)).astype(np.float32)
  w_t = rng.normal(size=(E, V)).astype(np.float32)
  shared = np.arange(V) % 4 != 3
  ids = rng.choice(np.flatnonzero(shared), size=(B, T)).astype(np.int32)
  exact = rng.random((B, T)) < 0.5
  reward = rng.normal(size=(B, T)).astype(np.float32)
  value = rng.normal(size=(B, T)).astype(np.float32)
  return (
    h_s,
    w_s,
    h_t,
    w_t,
    ids,
    losses.CrossTerms(
      jnp.asarray(shared),
      jnp.asarray(exact),
      jnp.asarray(reward),
      jnp.asarray(value),
    ),
  )


def np_reference(h_s, w_s, h_t, w_t, ids, cross, kind):
  """(per-token values, d Σ values / d student logits), float64."""
  z_s = np.einsum("btd,dv->btv", h_s.astype(np.float64), w_s)
  z_t = np.einsum("bte,ev->btv", h_t.astype(np.float64), w_t)
  shared = np.asarray(cross.shared_V)
  ls_r = np_log_softmax(np.where(shared, z_s, -np.inf))
  lt_r = np_log_softmax(np.where(shared, z_t, -np.inf))
  ps_r = np.exp(ls_r)
  with np.errstate(invalid="ignore"):  # -inf - -inf off the shared ids
    a = np.where(shared, ls_r - lt_r, 0.0)
  kl = np.sum(ps_r * a, axis=-1)
  onehot = np.eye(V)[ids]
  if kind == "reverse_kl":
    g_exact = ps_r * (a - kl[..., None])
  else:  # pg_reverse_kl: k1 on the restricted distributions
    k1 = np.take_along_axis(a, ids[..., None], -1)
    g_exact = k1 * (onehot - ps_r)
  ls = np_log_softmax(z_s)
  g_span = np.asarray(cross.reward_BxT, np.float64)[..., None] * (
    onehot - np.exp(ls)
  )
  exact = np.asarray(cross.exact_BxT)
  value = np.where(exact, kl, np.asarray(cross.value_BxT))
  return value, np.where(exact[..., None], g_exact, g_span)


@pytest.mark.parametrize("kind", losses.CROSS_KINDS)
@pytest.mark.parametrize("chunk_size", [3, 128])
def test_cross_loss_and_gradient_match_float64(kind, chunk_size):
  h_s, w_s, h_t, w_t, ids, cross = _inputs()
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
  ref_value, ref_g = np_reference(h_s, w_s, h_t, w_t, ids, cross, kind)
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
  h_s, w_s, h_t, w_t, ids, _ = _inputs(2)
  cross = losses.CrossTerms(
    jnp.ones(V, bool),
    jnp.ones((B, T), bool),
    jnp.zeros((B, T)),
    jnp.zeros((B, T)),
  )

  def f(h, w, c):
    out = losses.chunked_token_divergence(
      h, w, h_t, w_t, kind=kind, sampled_ids_BxT=ids, cross=c
    )
    return jnp.sum(out * jnp.arange(T)[None]), out

  plain = jax.grad(f, argnums=(0, 1), has_aux=True)(h_s, w_s, None)
  crossed = jax.grad(f, argnums=(0, 1), has_aux=True)(h_s, w_s, cross)
  jax.tree.map(np.testing.assert_array_equal, crossed, plain)


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
  cross = losses.cross_terms(
    jnp.ones(3, bool), jnp.zeros((2, 4), bool), span_BxT, student, at
  )
  reward = [[-2.5, -2.5, 2.0, 0.0], [0.95, -2.0, -2.0, 0.0]]
  np.testing.assert_allclose(cross.reward_BxT, reward, rtol=1e-6)
  np.testing.assert_allclose(
    cross.value_BxT, [[-1.25, -1.25, 2.0, 0], [0.95, -1, -1, 0]], rtol=1e-6
  )


def test_token_logprobs_is_the_log_softmax_of_the_ids():
  rng = np.random.default_rng(3)
  h = rng.normal(size=(B, M, E)).astype(np.float32)
  w = rng.normal(size=(E, V)).astype(np.float32)
  ids = rng.integers(0, V, (B, M))
  expected = np.take_along_axis(
    np_log_softmax(np.einsum("bme,ev->bmv", h.astype(np.float64), w)),
    ids[..., None],
    -1,
  )[..., 0]
  for chunk in (4, 128):
    got = losses.token_logprobs(h, w, jnp.asarray(ids), chunk_size=chunk)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
  "kwargs, match",
  [
    (dict(kind="forward_kl"), r"kind in \('reverse_kl', 'pg_reverse_kl'\)"),
    (dict(temperature=2.0), "temperature=2.0"),
    (dict(sampled_ids_BxT=None), "cross needs sampled_ids_BxT"),
  ],
)
def test_bad_cross_arguments_are_named(kwargs, match):
  h_s, w_s, h_t, w_t, ids, cross = _inputs()
  kwargs = dict(dict(sampled_ids_BxT=ids, cross=cross), **kwargs)
  with pytest.raises(ValueError, match=match):
    losses.chunked_token_divergence(h_s, w_s, h_t, w_t, **kwargs)
