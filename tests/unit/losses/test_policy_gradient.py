"""Tests for the policy-gradient reverse KL, sampled log-probs and TIS weights.

References are independent float64 NumPy formulas; the unbiasedness of the
`pg_reverse_kl` gradient is checked by Monte Carlo against the exact
reverse-KL gradient.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rock_jax import losses

# ---------------------------------------------------------------- references


def np_log_softmax(z):
  z = np.asarray(z, np.float64)
  z = z - np.max(z, axis=-1, keepdims=True)
  return z - np.log(np.sum(np.exp(z), axis=-1, keepdims=True))


def np_gather(x, ids):
  return np.take_along_axis(x, np.asarray(ids)[..., None], -1)[..., 0]


def np_reverse_kl(ls, lt):
  """Σ p_s·(log p_s − log p_t), with 0·x = 0 where p_s = 0."""
  ps = np.exp(ls)
  with np.errstate(invalid="ignore"):
    return np.sum(np.where(ps > 0, ps * (ls - lt), 0.0), axis=-1)


def np_reverse_kl_grad(ls, lt):
  """dKL/dz = p_s ⊙ (A − E_ps[A]), A = log p_s − log p_t."""
  ps, a = np.exp(ls), ls - lt
  return ps * (a - np.sum(ps * a, axis=-1, keepdims=True))


def np_pg_loss_and_logit_grad(student, teacher, ids, temperature, kd_ratio):
  """Value r·KL + (1 − r)·CE and dvalue/d(raw logits), float64 formulas.

  The gradient is the sampled estimator: r·k1(x)·(onehot(x) − p_s) for the
  divergence plus (1 − r)·(p_s − onehot(y)) for the cross-entropy, over T.
  """
  ls = np_log_softmax(np.asarray(student, np.float64) / temperature)
  lt = np_log_softmax(np.asarray(teacher, np.float64) / temperature)
  score = np.eye(ls.shape[-1])[np.asarray(ids)] - np.exp(ls)
  k1 = np_gather(ls, ids) - np_gather(lt, ids)
  value = kd_ratio * np_reverse_kl(ls, lt) - (1 - kd_ratio) * np_gather(ls, ids)
  grad = (kd_ratio * k1[..., None] * score - (1 - kd_ratio) * score) / (
    temperature
  )
  return value, grad


def assert_close(actual, expected, rtol, atol=0.0):
  np.testing.assert_allclose(
    np.asarray(actual, np.float64), expected, rtol=rtol, atol=atol
  )


def normal(rng, shape, scale=1.0):
  return jnp.asarray(scale * rng.standard_normal(shape), jnp.float32)


# ---------------------------------------------------------------- estimator


def sample(rng, logp_PxV, n):
  """n independent draws x ~ exp(logp) at each of P positions: [n, P]."""
  cdf = np.cumsum(np.exp(logp_PxV), axis=-1)
  u = rng.random((n, logp_PxV.shape[0], 1))
  return np.minimum(np.sum(u > cdf, axis=-1), logp_PxV.shape[-1] - 1)


@jax.jit
def per_sample_grads(student_PxV, teacher_PxV, ids_NxP):
  """One row per sample: d kind(x)/dz_s for pg_reverse_kl and for k1."""
  shape = ids_NxP.shape + student_PxV.shape[-1:]
  s_all = jnp.broadcast_to(student_PxV, shape)
  t_all = jnp.broadcast_to(teacher_PxV, shape)

  def grad(kind):
    return jax.grad(
      lambda s: losses.token_divergence(
        s, t_all, kind, sampled_ids_BxT=ids_NxP
      ).sum()
    )(s_all)

  return grad("pg_reverse_kl"), grad("k1")


def test_pg_reverse_kl_gradient_is_unbiased_and_k1_gradient_is_not():
  rng = np.random.default_rng(0)
  student, teacher = normal(rng, (4, 5), 1.5), normal(rng, (4, 5), 1.5)
  ls, lt = np_log_softmax(student), np_log_softmax(teacher)
  exact = np_reverse_kl_grad(ls, lt)
  n = 50_000
  ids = jnp.asarray(sample(rng, ls, n), jnp.int32)
  pg, k1 = (
    np.asarray(g, np.float64) for g in per_sample_grads(student, teacher, ids)
  )

  def mean_and_se(g):
    return g.mean(0), g.std(0, ddof=1) / np.sqrt(n)

  pg_mean, pg_se = mean_and_se(pg)
  k1_mean, k1_se = mean_and_se(k1)
  # pg_reverse_kl: the sample mean is the exact reverse-KL gradient within
  # Monte Carlo error, at every position and logit.
  assert np.all(np.abs(pg_mean - exact) <= 5 * pg_se + 1e-7)
  # k1: its gradient is the score ∇log p_s(x), whose mean is zero: minimising
  # k1 does not move the student towards the teacher.
  assert np.all(np.abs(k1_mean) <= 5 * k1_se + 1e-7)
  # ... while the exact gradient is far from zero, so the two statements
  # above are not both vacuous, and k1's mean gradient misses it by far.
  assert np.max(np.abs(exact) / (5 * k1_se + 5 * pg_se)) > 5
  assert np.max(np.abs(k1_mean - exact) / k1_se) > 50


def test_pg_reverse_kl_expected_gradient_is_exact_by_enumeration():
  # Weighting every token x by p_s(x) removes the sampling noise.
  rng = np.random.default_rng(1)
  student, teacher = normal(rng, (12,), 2.0), normal(rng, (12,), 2.0)
  ls, lt = np_log_softmax(student), np_log_softmax(teacher)
  ids = jnp.arange(12)
  s_all = jnp.broadcast_to(student, (12, 12))
  t_all = jnp.broadcast_to(teacher, (12, 12))
  grads = jax.grad(
    lambda s: losses.token_divergence(
      s, t_all, "pg_reverse_kl", sampled_ids_BxT=ids
    ).sum()
  )(s_all)
  expected = np.sum(np.exp(ls)[:, None] * np.asarray(grads, np.float64), 0)
  assert_close(expected, np_reverse_kl_grad(ls, lt), rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------- values


@pytest.mark.parametrize("temperature,kd_ratio", [(1.0, 1.0), (0.7, 0.5)])
def test_pg_reverse_kl_value_is_exact_and_gradient_is_sampled(
  temperature, kd_ratio
):
  rng = np.random.default_rng(2)
  student, teacher = normal(rng, (3, 5, 40), 3.0), normal(rng, (3, 5, 40), 3.0)
  ids = jnp.asarray(rng.integers(0, 40, (3, 5)), jnp.int32)
  ct = normal(rng, (3, 5))

  def loss(s):
    per_token = losses.token_divergence(
      s, teacher, "pg_reverse_kl", 0.5, temperature, ids, kd_ratio
    )
    return jnp.sum(ct * per_token), per_token

  (_, per_token), grad = jax.value_and_grad(loss, has_aux=True)(student)
  value, logit_grad = np_pg_loss_and_logit_grad(
    student, teacher, ids, temperature, kd_ratio
  )
  assert per_token.dtype == jnp.float32
  assert_close(per_token, value, rtol=1e-5, atol=2e-6)
  want = np.asarray(ct, np.float64)[..., None] * logit_grad
  assert_close(grad, want, rtol=1e-5, atol=1e-6 * np.max(np.abs(want)))
  # The value is reverse KL's, bit for bit: only the gradient differs.
  reverse = losses.token_divergence(
    student, teacher, "reverse_kl", 0.5, temperature, ids, kd_ratio
  )
  assert np.array_equal(per_token, reverse)


def test_pg_reverse_kl_student_minus_inf_is_zero_mass_not_nan():
  # Tokens the student rules out (e.g. a padded vocabulary) are never
  # sampled; they must add nothing to the value and get zero gradient.
  rng = np.random.default_rng(7)
  student = normal(rng, (2, 3, 16), 3.0).at[..., :4].set(-jnp.inf)
  teacher = normal(rng, (2, 3, 16), 3.0)
  ids = jnp.asarray(rng.integers(4, 16, (2, 3)), jnp.int32)
  per_token, grad = jax.value_and_grad(
    lambda s: losses.token_divergence(
      s, teacher, "pg_reverse_kl", sampled_ids_BxT=ids
    ).sum()
  )(student)
  value, logit_grad = np_pg_loss_and_logit_grad(student, teacher, ids, 1.0, 1.0)
  assert_close(per_token, value.sum(), rtol=1e-5)
  assert np.all(np.isfinite(grad)) and np.all(grad[..., :4] == 0.0)
  assert_close(grad, logit_grad, rtol=1e-5, atol=1e-6)


def hidden_problem(seed, b=2, t=7, d=8, e=6, v=40):
  rng = np.random.default_rng(seed)
  return dict(
    h_s=normal(rng, (b, t, d)),
    w_s=normal(rng, (d, v), 0.5),
    h_t=normal(rng, (b, t, e)),
    w_t=normal(rng, (e, v), 0.5),
    ids=jnp.asarray(rng.integers(0, v, (b, t)), jnp.int32),
    ct=normal(rng, (b, t)),
  )


def logits(h, w):
  return jnp.einsum("btd,dv->btv", h, w, preferred_element_type=jnp.float32)


@pytest.mark.parametrize("temperature,kd_ratio", [(1.0, 1.0), (2.0, 0.5)])
def test_chunked_pg_reverse_kl_equals_unchunked_and_reference(
  temperature, kd_ratio
):
  x = hidden_problem(3)
  args = ("pg_reverse_kl", 0.5, temperature, x["ids"])

  def weighted(per_token_fn):
    def f(*params):
      per_token = per_token_fn(*params)
      return jnp.sum(x["ct"] * per_token), per_token

    return jax.value_and_grad(f, argnums=(0, 1, 2, 3), has_aux=True)

  @jax.jit
  def both(*params):
    chunked = weighted(
      lambda h_s, w_s, h_t, w_t: losses.chunked_token_divergence(
        h_s, w_s, h_t, w_t, *args, chunk_size=6, kd_ratio=kd_ratio
      )
    )(*params)
    unchunked = weighted(
      lambda h_s, w_s, h_t, w_t: losses.token_divergence(
        logits(h_s, w_s), logits(h_t, w_t), *args, kd_ratio
      )
    )(*params)
    return chunked, unchunked

  params = (x["h_s"], x["w_s"], x["h_t"], x["w_t"])
  ((_, per_token), grads), ((_, want_per_token), want_grads) = both(*params)
  assert_close(per_token, np.asarray(want_per_token), rtol=1e-5, atol=1e-6)
  for got, want in zip(grads[:2], want_grads[:2], strict=True):
    scale = float(jnp.max(jnp.abs(want)))
    assert_close(got, np.asarray(want), rtol=1e-5, atol=1e-6 * scale)
  assert np.all(grads[2] == 0.0) and np.all(grads[3] == 0.0)

  # float64 reference through the heads: dz = ct·g, dh = dz·Wᵀ, dW = hᵀ·dz.
  h_s, w_s = (np.asarray(p, np.float64) for p in params[:2])
  h_t, w_t = (np.asarray(p, np.float64) for p in params[2:])
  value, logit_grad = np_pg_loss_and_logit_grad(
    h_s @ w_s, h_t @ w_t, x["ids"], temperature, kd_ratio
  )
  dz = np.asarray(x["ct"], np.float64)[..., None] * logit_grad
  assert_close(per_token, value, rtol=1e-5, atol=2e-6)
  for got, want in zip(
    grads[:2], (dz @ w_s.T, np.einsum("btd,btv->dv", h_s, dz)), strict=True
  ):
    assert_close(got, want, rtol=1e-5, atol=1e-6 * np.max(np.abs(want)))


# ---------------------------------------------------------------- logprobs


@pytest.mark.parametrize(
  "kind,temperature,kd_ratio",
  [("reverse_kl", 1.0, 1.0), ("pg_reverse_kl", 2.0, 1.0), ("k3", 0.7, 0.5)],
)
def test_return_logprobs_is_the_untempered_student_log_softmax(
  kind, temperature, kd_ratio
):
  x = hidden_problem(4)
  h_t, w_t, ids, ct = x["h_t"], x["w_t"], x["ids"], x["ct"]
  ct_logprobs = normal(np.random.default_rng(5), ids.shape)

  def loss(h_s, w_s, with_logprobs):
    out = losses.chunked_token_divergence(
      h_s, w_s, h_t, w_t, kind, 0.5, temperature, ids, 6, kd_ratio,
      return_logprobs=with_logprobs,
    )  # fmt: skip
    if not with_logprobs:
      return jnp.sum(ct * out), (out, None)
    per_token, logprobs = out
    # The log-probs carry no gradient, so adding them changes no gradient.
    return jnp.sum(ct * per_token + ct_logprobs * logprobs), out

  @jax.jit
  def both(h_s, w_s):
    grad = jax.grad(loss, argnums=(0, 1), has_aux=True)
    return grad(h_s, w_s, True), grad(h_s, w_s, False)

  (grads, (per_token, logprobs)), (want_grads, (want, _)) = both(
    x["h_s"], x["w_s"]
  )
  z_s = np.asarray(x["h_s"], np.float64) @ np.asarray(x["w_s"], np.float64)
  assert logprobs.dtype == jnp.float32 and logprobs.shape == ids.shape
  assert_close(logprobs, np_gather(np_log_softmax(z_s), ids), 1e-5, 2e-6)
  assert np.array_equal(per_token, want)
  for got, expected in zip(grads, want_grads, strict=True):
    assert np.array_equal(got, expected)


def test_return_logprobs_errors_name_the_arguments():
  x = hidden_problem(0, t=3)
  inputs = (x["h_s"], x["w_s"], x["h_t"], x["w_t"])
  for kind in ("reverse_kl", "pg_reverse_kl"):
    with pytest.raises(
      ValueError, match=r"return_logprobs=True needs sampled_ids_BxT"
    ):
      losses.chunked_token_divergence(*inputs, kind, return_logprobs=True)
  with pytest.raises(ValueError, match=r"sampled_ids_BxT.shape=\(2, 2\)"):
    losses.chunked_token_divergence(
      *inputs,
      sampled_ids_BxT=jnp.zeros((2, 2), jnp.int32),
      return_logprobs=True,
    )
  with pytest.raises(ValueError, match=r"return_logprobs=1 must be a bool"):
    losses.chunked_token_divergence(
      *inputs, sampled_ids_BxT=x["ids"], return_logprobs=1
    )
  with pytest.raises(ValueError, match=r"kind='pg_reverse_kl' needs sampled"):
    losses.token_divergence(
      jnp.zeros((2, 3, 5)), jnp.zeros((2, 3, 5)), "pg_reverse_kl"
    )


# ---------------------------------------------------------------- importance


def test_importance_weights_match_numpy_truncation_and_mask():
  rng = np.random.default_rng(6)
  logprobs = rng.normal(-2.0, 1.0, (3, 8))
  sampler = logprobs + rng.normal(0.0, 1.0, (3, 8))
  mask = rng.random((3, 8)) > 0.3
  mask[0, :2] = [True, False]
  sampler[0, 0] = logprobs[0, 0] - 200.0  # exp overflows float32: capped.
  logprobs[0, 1] = sampler[0, 1] = -np.inf  # Masked NaN ratio: weight 0.
  cap = 2.0
  got = losses.importance_weights(
    jnp.asarray(logprobs, jnp.float32),
    jnp.asarray(sampler, jnp.float32),
    jnp.asarray(mask),
    cap,
  )
  with np.errstate(invalid="ignore", over="ignore"):
    ratio = np.exp(logprobs - sampler)
  want = np.where(mask, np.minimum(cap, ratio), 0.0)
  assert got.dtype == jnp.float32
  assert_close(got, want, rtol=1e-5)
  assert np.any(want == cap) and np.any((want > 0) & (want < cap))
  assert got[0, 0] == cap and got[0, 1] == 0.0
  # A numeric mask counts nonzero entries as valid, as `reduce` does.
  assert np.array_equal(
    losses.importance_weights(
      jnp.asarray(logprobs), jnp.asarray(sampler), jnp.asarray(mask, float), cap
    ),
    got,
  )
  grad = jax.grad(
    lambda lp: losses.importance_weights(lp, sampler, mask, cap).sum()
  )(jnp.asarray(logprobs, jnp.float32))
  assert np.all(grad == 0.0)


@pytest.mark.parametrize(
  "cap,match",
  [
    (0.0, r"cap=0.0 must be a static number > 0"),
    (-1, r"cap=-1 must be"),
    (float("nan"), r"cap=nan must be"),
    (True, r"cap=True must be"),
    (jnp.asarray(2.0), r"cap=Array\(2., .*\) must be"),
  ],
)
def test_importance_weights_rejects_a_bad_cap(cap, match):
  x = jnp.zeros((2, 3))
  with pytest.raises(ValueError, match=match):
    losses.importance_weights(x, x, x, cap)


def test_importance_weights_shape_errors_name_both_shapes():
  x = jnp.zeros((2, 3))
  with pytest.raises(
    ValueError,
    match=r"logprobs_BxT.shape=\(2, 3\) and sampler_logprobs_BxT.shape=\(2, ",
  ):
    losses.importance_weights(x, jnp.zeros((2, 4)), x, 2.0)
  with pytest.raises(
    ValueError, match=r"logprobs_BxT.shape=\(2, 3\) and mask_BxT.shape=\(3,\)"
  ):
    losses.importance_weights(x, x, jnp.ones(3, bool), 2.0)
