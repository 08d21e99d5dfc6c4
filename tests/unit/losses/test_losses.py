"""Tests for rock_jax.losses against float64 NumPy and autodiff references."""

import pathlib
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from rock_jax import losses

KINDS = [
  ("reverse_kl", 0.5),
  ("forward_kl", 0.5),
  ("jsd", 0.3),
  ("jsd", 0.0),
  ("jsd", 1.0),
  ("k1", 0.5),
  ("k3", 0.5),
]
SAMPLED = ("k1", "k3")
# kd_ratio < 1: forward KL is the paper's Stage 1 (r = 0.5), reverse KL's
# gradient reuses the divergence's value (not the mixed loss's), and k3 already
# reads the ids the cross-entropy uses. Entries are (kind, beta, kd_ratio).
KD_RATIOS = [
  (kind, 0.5, r)
  for kind in ("forward_kl", "reverse_kl", "k3")
  for r in (0.0, 0.5)
]
KINDS_AND_RATIOS = [k + (1.0,) for k in KINDS] + KD_RATIOS


# ---------------------------------------------------------------- references


def np_log_softmax(z):
  z = z - np.max(z, axis=-1, keepdims=True)
  with np.errstate(divide="ignore"):
    return z - np.log(np.sum(np.exp(z), axis=-1, keepdims=True))


def np_plogq(p, x):
  """Σ p·x with the 0·x = 0 convention, in float64."""
  with np.errstate(invalid="ignore"):
    return np.sum(np.where(p > 0, p * x, 0.0), axis=-1)


def np_divergence(kind, student, teacher, beta=0.5, temperature=1.0, ids=None):
  """Independent float64 reference for every kind, from the formulas."""
  ls = np_log_softmax(np.asarray(student, np.float64) / temperature)
  lt = np_log_softmax(np.asarray(teacher, np.float64) / temperature)
  ps, pt = np.exp(ls), np.exp(lt)
  if kind == "jsd" and beta == 0.0:
    kind = "forward_kl"
  if kind == "jsd" and beta == 1.0:
    kind = "reverse_kl"
  with np.errstate(divide="ignore", invalid="ignore"):
    if kind == "reverse_kl":
      return np_plogq(ps, ls - lt)
    if kind == "forward_kl":
      return np_plogq(pt, lt - ls)
    if kind == "jsd":
      lm = np.log(beta * pt + (1 - beta) * ps)
      return beta * np_plogq(pt, lt - lm) + (1 - beta) * np_plogq(ps, ls - lm)
    gs = np.take_along_axis(ls, ids[..., None], -1)[..., 0]
    gt = np.take_along_axis(lt, ids[..., None], -1)[..., 0]
    if kind == "k1":
      return gs - gt
    return np.expm1(gt - gs) - (gt - gs)


def np_loss(kind, student, teacher, beta, temperature, ids, kd_ratio):
  """r·divergence + (1 − r)·(−log p_s(y)) in float64, from the formula."""
  ls = np_log_softmax(np.asarray(student, np.float64) / temperature)
  cross_entropy = -np.take_along_axis(ls, ids[..., None], -1)[..., 0]
  divergence = np_divergence(kind, student, teacher, beta, temperature, ids)
  return kd_ratio * divergence + (1 - kd_ratio) * cross_entropy


def naive_divergence(
  kind, student, teacher, beta=0.5, temperature=1.0, ids=None
):
  """Plain-autodiff JAX implementation, the gradient reference."""
  ls = jax.nn.log_softmax(student.astype(jnp.float32) / temperature)
  lt = jax.nn.log_softmax(teacher.astype(jnp.float32) / temperature)
  lt = jax.lax.stop_gradient(lt)

  def plogq(p, x):  # The double `where` keeps autodiff NaN-free at p = 0.
    safe = p > 0
    return jnp.sum(jnp.where(safe, p * jnp.where(safe, x, 0.0), 0.0), -1)

  if kind == "jsd" and beta in (0.0, 1.0):
    kind = "forward_kl" if beta == 0.0 else "reverse_kl"
  if kind == "reverse_kl":
    return plogq(jnp.exp(ls), ls - lt)
  if kind == "forward_kl":
    return plogq(jnp.exp(lt), lt - ls)
  if kind == "jsd":
    m = beta * jnp.exp(lt) + (1 - beta) * jnp.exp(ls)
    lm = jnp.log(jnp.where(m > 0, m, 1.0))  # m = 0 only where both p are 0.
    return beta * plogq(jnp.exp(lt), lt - lm) + (1 - beta) * plogq(
      jnp.exp(ls), ls - lm
    )
  gs = jnp.take_along_axis(ls, ids[..., None], -1)[..., 0]
  gt = jnp.take_along_axis(lt, ids[..., None], -1)[..., 0]
  if kind == "k1":
    return gs - gt
  return jnp.exp(gt - gs) - 1 - (gt - gs)


def naive_loss(kind, student, teacher, beta, temperature, ids, kd_ratio):
  """Plain-autodiff r·divergence + (1 − r)·(−log p_s(y)), full log-softmax."""
  ls = jax.nn.log_softmax(student.astype(jnp.float32) / temperature)
  cross_entropy = -jnp.take_along_axis(ls, ids[..., None], -1)[..., 0]
  divergence = naive_divergence(kind, student, teacher, beta, temperature, ids)
  return kd_ratio * divergence + (1 - kd_ratio) * cross_entropy


# Test data comes from NumPy: eager jax.random would compile per shape.
def normal(rng, shape, scale=1.0, dtype=jnp.float32):
  return jnp.asarray(scale * rng.standard_normal(shape), dtype)


def random_logits(seed, shape, scale=3.0):
  rng = np.random.default_rng(seed)
  student, teacher = normal(rng, shape, scale), normal(rng, shape, scale)
  ids = jnp.asarray(rng.integers(0, shape[-1], shape[:-1]), jnp.int32)
  return student, teacher, ids


def assert_close(actual, expected, rtol, atol=0.0):
  np.testing.assert_allclose(
    np.asarray(actual, np.float64), expected, rtol=rtol, atol=atol
  )


# ---------------------------------------------------------------- values


@pytest.mark.parametrize("kind,beta,kd_ratio", KINDS_AND_RATIOS)
@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_value_matches_float64_reference(kind, beta, kd_ratio, temperature):
  student, teacher, ids = random_logits(0, (3, 5, 40))
  got = losses.token_divergence(
    student, teacher, kind, beta, temperature, ids, kd_ratio
  )
  want = np_loss(
    kind, student, teacher, beta, temperature, np.asarray(ids), kd_ratio
  )
  assert got.dtype == jnp.float32 and got.shape == (3, 5)
  # float32 log-softmax of O(10) logits: absolute error ~1e-6 per term.
  assert_close(got, want, rtol=1e-5, atol=2e-6)


def extreme_logits():
  """±80 logits, near-one-hot rows and -inf entries, all with finite answers."""
  rng = np.random.default_rng(1)
  student, teacher = rng.uniform(-80.0, 80.0, size=(2, 4, 32))
  # Row 1: near-one-hot teacher and student with different peaks.
  teacher[1], student[1] = 0.0, 0.0
  teacher[1, 3], student[1, 5] = 80.0, 80.0
  # Rows 2-3: -inf in both models at ids 0-7 (e.g. a padded vocabulary).
  student[2:, :8] = teacher[2:, :8] = -np.inf
  ids = jnp.array([10, 3, 12, 20])
  return (
    jnp.asarray(student, jnp.float32),
    jnp.asarray(teacher, jnp.float32),
    ids,
  )


@pytest.mark.parametrize("kind,beta", KINDS)
def test_value_on_extreme_logits(kind, beta):
  student, teacher, ids = extreme_logits()
  got = losses.token_divergence(student, teacher, kind, beta, 1.0, ids)
  want = np_divergence(kind, student, teacher, beta, 1.0, np.asarray(ids))
  assert np.all(np.isfinite(want))
  # Log-probs of size ~160 carry float32 rounding of ~160·6e-8 = 1e-5.
  assert_close(got, want, rtol=1e-5, atol=3e-5)


def test_one_sided_minus_inf_is_zero_mass_not_nan():
  student, teacher, ids = random_logits(2, (2, 3, 16))
  # The student alone gives -inf: a zero-mass term of reverse KL.
  s_inf = student.at[..., :4].set(-jnp.inf)
  # The teacher alone gives -inf: a zero-mass term of forward KL.
  t_inf = teacher.at[..., :4].set(-jnp.inf)
  ids = jnp.maximum(ids, 4)
  for kind, s, t in [
    ("reverse_kl", s_inf, teacher),
    ("forward_kl", student, t_inf),
    ("jsd", s_inf, t_inf),
    ("k1", student, t_inf),
    ("k3", s_inf, teacher),
  ]:
    got = losses.token_divergence(s, t, kind, 0.5, 1.0, ids)
    assert_close(
      got, np_divergence(kind, s, t, 0.5, 1.0, np.asarray(ids)), 1e-5, 2e-6
    )
    grad = jax.grad(
      lambda s, t=t, k=kind: losses.token_divergence(
        s, t, k, 0.5, 1.0, ids
      ).sum()
    )(s)
    assert np.all(np.isfinite(grad)), kind


def test_student_mass_on_teacher_minus_inf_is_inf_and_maskable():
  student, teacher, _ = random_logits(3, (2, 3, 16))
  teacher = teacher.at[0, 1, :4].set(-jnp.inf)
  per_token = losses.token_divergence(student, teacher)
  assert per_token[0, 1] == jnp.inf
  assert np.all(np.isfinite(np.delete(np.asarray(per_token).ravel(), 1)))
  mask = jnp.ones((2, 3), bool).at[0, 1].set(False)

  def loss_fn(s):
    return losses.reduce(losses.token_divergence(s, teacher), mask)[0]

  loss, grad = jax.value_and_grad(loss_fn)(student)
  assert np.isfinite(loss) and np.all(np.isfinite(grad))
  assert np.all(grad[0, 1] == 0.0)


@pytest.mark.parametrize("kind,beta", KINDS)
def test_divergence_of_a_distribution_with_itself_is_zero(kind, beta):
  logits, _, ids = random_logits(4, (2, 3, 24))
  per_token, grad = jax.value_and_grad(
    lambda s: losses.token_divergence(s, logits, kind, beta, 1.0, ids).sum()
  )(logits)
  assert_close(per_token, 0.0, rtol=0, atol=1e-6)
  if kind != "k1":  # ∇k1 is the score function, nonzero even at p_s = p_t.
    assert_close(grad, 0.0, rtol=0, atol=1e-6)


def test_sampled_estimators_have_the_documented_expectations():
  # Enumerate every sampled token x weighted by p_s(x): E[k1] = E[k3] =
  # reverse KL, E[∇k1] = 0 and E[∇k3] = ∇ forward KL (see the docstring).
  student, teacher, _ = random_logits(5, (1, 1, 12), scale=1.0)
  ids = jnp.arange(12).reshape(12, 1)
  s_all = jnp.broadcast_to(student, (12, 1, 12))
  t_all = jnp.broadcast_to(teacher, (12, 1, 12))
  p_s = jax.nn.softmax(student[0, 0])

  def expectation(kind):
    def f(s):
      values = losses.token_divergence(s, t_all, kind, sampled_ids_BxT=ids)
      return jnp.sum(p_s * values[:, 0])

    value, grad = jax.value_and_grad(f)(s_all)
    return value, grad.sum(0)

  reverse, _ = jax.value_and_grad(
    lambda s: losses.token_divergence(s, teacher).sum()
  )(student)
  _, forward_grad = jax.value_and_grad(
    lambda s: losses.token_divergence(s, teacher, "forward_kl").sum()
  )(student)
  k1, k1_grad = expectation("k1")
  k3, k3_grad = expectation("k3")
  assert_close(k1, float(reverse), 1e-5)
  assert_close(k3, float(reverse), 1e-5)
  assert_close(k1_grad, 0.0, 0, 1e-6)
  assert_close(k3_grad, np.asarray(forward_grad)[0], 1e-5, 1e-6)


# ---------------------------------------------------------------- gradients


@pytest.mark.parametrize("kind,beta,kd_ratio", KINDS_AND_RATIOS)
def test_gradient_matches_autodiff_of_naive(kind, beta, kd_ratio):
  # Batch row 0: random logits; row 1: the extreme ones (±80, one-hot, -inf).
  random = random_logits(6, (4, 32))
  student, teacher, ids = (
    jnp.stack(pair) for pair in zip(random, extreme_logits(), strict=True)
  )
  ct = normal(np.random.default_rng(7), student.shape[:-1])

  def ours(s, t):
    return jnp.sum(
      ct * losses.token_divergence(s, t, kind, beta, 1.3, ids, kd_ratio)
    )

  def naive(s, t):
    return jnp.sum(ct * naive_loss(kind, s, t, beta, 1.3, ids, kd_ratio))

  got_s, got_t = jax.grad(ours, (0, 1))(student, teacher)
  want_s = jax.grad(naive)(student, teacher)
  scale = float(jnp.max(jnp.abs(want_s)))
  assert_close(got_s, np.asarray(want_s), rtol=1e-5, atol=1e-5 * scale)
  assert np.all(got_t == 0.0)


def test_kd_ratio_zero_is_the_cross_entropy_even_where_the_divergence_is_inf():
  student, teacher, ids = random_logits(14, (2, 3, 16))
  teacher = teacher.at[0, 1, :4].set(-jnp.inf)  # Reverse KL is +inf there.

  def loss(s):
    return losses.token_divergence(
      s, teacher, sampled_ids_BxT=ids, kd_ratio=0.0
    )

  ls = np_log_softmax(np.asarray(student, np.float64))
  onehot = np.eye(16)[np.asarray(ids)]
  want = -np.take_along_axis(ls, np.asarray(ids)[..., None], -1)[..., 0]
  assert_close(loss(student), want, rtol=1e-5, atol=2e-6)
  grad = jax.grad(lambda s: loss(s).sum())(student)
  assert_close(grad, np.exp(ls) - onehot, rtol=1e-5, atol=1e-6)


def test_gradient_keeps_the_logits_dtype():
  student, teacher, _ = random_logits(8, (2, 3, 16))
  grad = jax.grad(
    lambda s: losses.token_divergence(s, teacher.astype(jnp.bfloat16)).sum()
  )(student.astype(jnp.bfloat16))
  assert grad.dtype == jnp.bfloat16


# ---------------------------------------------------------------- chunked


def hidden_problem(seed, b, t, d=8, e=6, v=40, dtype=jnp.float32):
  rng = np.random.default_rng(seed)
  return dict(
    h_s=normal(rng, (b, t, d), dtype=dtype),
    w_s=normal(rng, (d, v), 0.5, dtype),
    h_t=normal(rng, (b, t, e), dtype=dtype),
    w_t=normal(rng, (e, v), 0.5, dtype),
    ids=jnp.asarray(rng.integers(0, v, (b, t)), jnp.int32),
    ct=normal(rng, (b, t)),
  )


def logits(h, w):
  return jnp.einsum("btd,dv->btv", h, w, preferred_element_type=jnp.float32)


def unchunked(h_s, w_s, h_t, w_t, kind, beta, temperature, ids, kd_ratio=1.0):
  return losses.token_divergence(
    logits(h_s, w_s), logits(h_t, w_t), kind, beta, temperature, ids, kd_ratio
  )


def chunked(
  h_s, w_s, h_t, w_t, kind, beta, temperature, ids, chunk_size, kd_ratio=1.0
):
  return losses.chunked_token_divergence(
    h_s, w_s, h_t, w_t, kind, beta, temperature, ids, chunk_size, kd_ratio
  )


@pytest.mark.parametrize(
  "kind,beta,kd_ratio,chunk_size",
  [k + (6,) for k in KINDS_AND_RATIOS]
  + [("reverse_kl", 0.5, 1.0, c) for c in (1, 9, 64)],
)
def test_chunked_equals_unchunked(kind, beta, kd_ratio, chunk_size):
  # B·T = 14; chunk sizes 6 and 9 divide neither B·T nor T (C = 3 and 4
  # positions per step), 64 exceeds it.
  x = hidden_problem(9, b=2, t=7)
  args = (kind, beta, 0.8, x["ids"])

  def weighted(fn, *extra):
    def f(*params):
      return jnp.sum(x["ct"] * fn(*params, *args, *extra))

    return jax.value_and_grad(f, argnums=(0, 1, 2, 3))

  @jax.jit  # One compilation for both paths.
  def both(*params):
    return (
      weighted(chunked, chunk_size, kd_ratio)(*params),
      weighted(unchunked, kd_ratio)(*params),
    )

  (value, grads), (want_value, want_grads) = both(
    x["h_s"], x["w_s"], x["h_t"], x["w_t"]
  )
  assert_close(value, float(want_value), rtol=1e-5)
  for got, want in zip(grads[:2], want_grads[:2], strict=True):
    scale = float(jnp.max(jnp.abs(want)))
    assert_close(got, np.asarray(want), rtol=1e-5, atol=1e-6 * scale)
  assert np.all(grads[2] == 0.0) and np.all(grads[3] == 0.0)


@pytest.mark.parametrize("kind,beta,kd_ratio", KD_RATIOS)
def test_chunked_kd_ratio_gradient_matches_autodiff_of_naive(
  kind, beta, kd_ratio
):
  x = hidden_problem(17, b=2, t=7)
  h_t, w_t, ids, ct = x["h_t"], x["w_t"], x["ids"], x["ct"]

  def ours(h_s, w_s):
    per_token = chunked(h_s, w_s, h_t, w_t, kind, beta, 0.8, ids, 6, kd_ratio)
    return jnp.sum(ct * per_token)

  def naive(h_s, w_s):
    per_token = naive_loss(
      kind, logits(h_s, w_s), logits(h_t, w_t), beta, 0.8, ids, kd_ratio
    )
    return jnp.sum(ct * per_token)

  @jax.jit
  def both(h_s, w_s):
    return jax.grad(ours, (0, 1))(h_s, w_s), jax.grad(naive, (0, 1))(h_s, w_s)

  grads, want_grads = both(x["h_s"], x["w_s"])
  for got, want in zip(grads, want_grads, strict=True):
    scale = float(jnp.max(jnp.abs(want)))
    assert_close(got, np.asarray(want), rtol=1e-5, atol=1e-6 * scale)


@pytest.mark.parametrize("path", ["unchunked", "chunked"])
def test_kd_ratio_one_is_the_divergence_exactly(path):
  # kd_ratio = 1 traces no cross-entropy: the program (hence every bit of the
  # value and gradient) is the one without kd_ratio, and the ids go unread.
  x = hidden_problem(15, b=2, t=3)

  def step(**kwargs):
    def loss(h_s, w_s):
      if path == "chunked":
        per_token = losses.chunked_token_divergence(
          h_s, w_s, x["h_t"], x["w_t"], "forward_kl", chunk_size=4, **kwargs
        )
      else:
        per_token = losses.token_divergence(
          logits(h_s, w_s), logits(x["h_t"], x["w_t"]), "forward_kl", **kwargs
        )
      return jnp.sum(x["ct"] * per_token)

    return jax.value_and_grad(loss, (0, 1))

  params = (x["h_s"], x["w_s"])
  default, explicit = step(), step(kd_ratio=1, sampled_ids_BxT=x["ids"])
  jaxpr = str(jax.make_jaxpr(default)(*params))
  assert str(jax.make_jaxpr(explicit)(*params)) == jaxpr
  got, want = explicit(*params), default(*params)
  for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
    assert np.array_equal(a, b)


def test_chunked_per_token_values_and_bf16_inputs():
  x = hidden_problem(10, b=3, t=5, dtype=jnp.bfloat16)

  @jax.jit
  def run(h_s, w_s, h_t, w_t):
    got = losses.chunked_token_divergence(h_s, w_s, h_t, w_t, chunk_size=4)
    want = unchunked(h_s, w_s, h_t, w_t, "reverse_kl", 0.5, 1.0, None)
    grads = jax.grad(
      lambda h, w: losses.chunked_token_divergence(h, w, h_t, w_t).sum(),
      (0, 1),
    )(h_s, w_s)
    return got, want, grads

  got, want, grads = run(x["h_s"], x["w_s"], x["h_t"], x["w_t"])
  assert got.dtype == jnp.float32 and got.shape == (3, 5)
  assert_close(got, np.asarray(want), rtol=1e-5, atol=1e-6)
  assert grads[0].dtype == grads[1].dtype == jnp.bfloat16


def test_chunked_sharded_over_8_devices_equals_single_device():
  mesh = Mesh(np.array(jax.devices()).reshape(4, 2), ("data", "model"))
  x = hidden_problem(11, b=8, t=6, d=8, e=6, v=48)
  batch = NamedSharding(mesh, P("data"))
  vocab = NamedSharding(mesh, P(None, "model"))
  shardings = (batch, vocab, batch, vocab)

  def f(h_s, w_s, h_t, w_t, weights):
    d = losses.chunked_token_divergence(h_s, w_s, h_t, w_t, chunk_size=16)
    loss, _ = losses.reduce(d, jnp.ones(d.shape, bool), weights)
    return loss

  step = jax.value_and_grad(f, (0, 1))
  # Positive weights: a sum without cancellation, so float32 summation in a
  # different order (per device, then across) stays within 1e-6 relative.
  weights = jnp.abs(x["ct"]) + 0.5
  args = (x["h_s"], x["w_s"], x["h_t"], x["w_t"], weights)
  single = jax.jit(step)(*args)
  placed = [
    jax.device_put(a, s)
    for a, s in zip(args, shardings + (batch,), strict=True)
  ]
  sharded = jax.jit(step)(*placed)
  assert len(placed[0].sharding.device_set) == 8
  assert_close(sharded[0], float(single[0]), rtol=1e-6)
  for got, want in zip(sharded[1], single[1], strict=True):
    assert_close(got, np.asarray(want), rtol=1e-5, atol=1e-7)


# ---------------------------------------------------------------- reduce


def reduce_problem():
  per_token = jnp.asarray(np.random.default_rng(12).uniform(size=(3, 4)))
  mask = jnp.array([[1, 1, 1, 0], [1, 0, 0, 0], [0, 0, 0, 0]], bool)
  weights = jnp.array(
    [[0.3, 1.0, 0.0, 1.0], [0.7, 1.0, 1.0, 1.0], [1.0, 1.0, 1.0, 1.0]]
  )
  return per_token, mask, weights


def test_reduce_normalizers_match_numpy():
  per_token, mask, weights = reduce_problem()
  ell, m, w = (np.asarray(a, np.float64) for a in (per_token, mask, weights))
  wl = w * ell * m
  want = {
    "tokens": wl.sum() / m.sum(),
    "weights": wl.sum() / (w * m).sum(),
    "sequences": (wl[0].sum() / 3 + wl[1].sum() / 1) / 2,
    "sequence_weights": (
      wl[0].sum() / max((w * m)[0].sum(), 1)
      + wl[1].sum() / max((w * m)[1].sum(), 1)
    )
    / 2,
  }
  for normalize, expected in want.items():
    loss, metrics = jax.jit(
      lambda a, b, c, n=normalize: losses.reduce(a, b, c, n)
    )(per_token, mask, weights)
    assert_close(loss, expected, rtol=1e-6)
    num, den = metrics["loss/opd"]
    assert_close(num / max(den, 1.0), expected, rtol=1e-6)
  _, metrics = losses.reduce(per_token, mask, weights)
  assert_close(metrics["kl/weighted"][0], wl.sum(), 1e-6)
  assert_close(metrics["kl/weighted"][1], (w * m).sum(), 1e-6)  # 2.0, not 1
  assert_close(metrics["kl/unweighted"][0], (ell * m).sum(), 1e-6)
  assert float(metrics["kl/unweighted"][1]) == 4.0


def test_reduce_masked_and_zero_weight_tokens_contribute_exactly_zero():
  per_token, mask, weights = reduce_problem()
  # Poison every excluded position: masked or zero weight.
  excluded = ~mask | (weights == 0)
  poisoned = jnp.where(
    excluded, jnp.array([jnp.inf, jnp.nan] * 6).reshape(3, 4), per_token
  )
  for normalize in losses.NORMALIZERS:
    clean = losses.reduce(
      jnp.where(excluded, 0.0, per_token), mask, weights, normalize
    )
    loss, grad = jax.value_and_grad(
      lambda p, n=normalize: losses.reduce(p, mask, weights, n)[0]
    )(poisoned)
    assert float(loss) == float(clean[0])
    assert np.all(np.asarray(grad)[np.asarray(excluded)] == 0.0)
    assert np.all(np.isfinite(grad))


def test_reduce_tokens_with_unit_weights_is_the_plain_token_mean():
  per_token, mask, _ = reduce_problem()
  plain, _ = losses.reduce(per_token, mask)
  unit, _ = losses.reduce(per_token, mask, jnp.ones(mask.shape))
  assert float(plain) == float(unit)
  assert_close(plain, float(np.sum(per_token * mask) / np.sum(mask)), 1e-6)


def test_reduce_of_an_empty_batch_is_zero():
  loss, metrics = losses.reduce(jnp.ones((2, 3)), jnp.zeros((2, 3), bool))
  assert float(loss) == 0.0 and float(metrics["loss/opd"][1]) == 0.0


# ---------------------------------------------------------------- errors


@pytest.mark.parametrize(
  "kwargs,match",
  [
    (dict(kind="tvd"), r"unknown kind 'tvd'; available: \['forward_kl'"),
    (dict(kind="jsd", beta=1.5), r"beta=1.5 must be .* \[0, 1\]"),
    (dict(temperature=0.0), r"temperature=0.0 must be .* > 0"),
    (dict(kind="k1"), r"kind='k1' needs sampled_ids_BxT"),
    (dict(kind="k1", kd_ratio=0.5), r"kind='k1' needs sampled_ids_BxT"),
    (dict(kd_ratio=0.5), r"kd_ratio=0.5 < 1 needs sampled_ids_BxT"),
    (dict(kd_ratio=1.5), r"kd_ratio=1.5 must be a static number in \[0, 1\]"),
    (dict(kd_ratio=-0.1), r"kd_ratio=-0.1 must be a static number in \[0, 1"),
    (dict(kd_ratio=True), r"kd_ratio=True must be a static number"),
    (
      dict(kd_ratio=jnp.asarray(0.5)),
      r"kd_ratio=Array\(0.5, .*\) must be a static number",
    ),
    (
      dict(kd_ratio=0.5, sampled_ids_BxT=jnp.zeros((2, 2), jnp.int32)),
      r"sampled_ids_BxT.shape=\(2, 2\) must equal .* \(2, 3\)",
    ),
    (
      dict(kind="k3", sampled_ids_BxT=jnp.zeros((2, 2), jnp.int32)),
      r"sampled_ids_BxT.shape=\(2, 2\) must equal .* \(2, 3\)",
    ),
    (
      dict(kind="k3", sampled_ids_BxT=jnp.zeros((2, 3))),
      r"sampled_ids_BxT.dtype=float32 must be an integer",
    ),
  ],
)
def test_token_divergence_rejects_bad_arguments(kwargs, match):
  logits = jnp.zeros((2, 3, 5))
  with pytest.raises(ValueError, match=match):
    losses.token_divergence(logits, logits, **kwargs)


def test_shape_errors_name_both_shapes():
  with pytest.raises(ValueError, match=r"\(2, 3, 5\) and .*\(2, 3, 6\)"):
    losses.token_divergence(jnp.zeros((2, 3, 5)), jnp.zeros((2, 3, 6)))
  x = hidden_problem(0, b=2, t=3)
  with pytest.raises(ValueError, match=r"student_head_DxV.shape=\(7, 40\)"):
    losses.chunked_token_divergence(x["h_s"], x["w_s"][:7], x["h_t"], x["w_t"])
  with pytest.raises(ValueError, match="chunk_size=0 must be a positive int"):
    losses.chunked_token_divergence(
      x["h_s"], x["w_s"], x["h_t"], x["w_t"], chunk_size=0
    )
  with pytest.raises(ValueError, match=r"'mask_BxT': \(2, 4\)"):
    losses.reduce(jnp.zeros((2, 3)), jnp.zeros((2, 4)))
  with pytest.raises(ValueError, match=r"unknown normalize 'mean'"):
    losses.reduce(jnp.zeros((2, 3)), jnp.zeros((2, 3)), normalize="mean")


def test_chunked_rejects_bad_kd_ratio_arguments():
  x = hidden_problem(0, b=2, t=3)
  inputs = (x["h_s"], x["w_s"], x["h_t"], x["w_t"])

  def loss(kd_ratio, ids=None):
    return losses.chunked_token_divergence(
      *inputs, sampled_ids_BxT=ids, kd_ratio=kd_ratio
    )

  with pytest.raises(ValueError, match=r"kd_ratio=0.5 < 1 needs sampled_ids"):
    loss(0.5)
  # A traced kd_ratio cannot select the static CE branch.
  with pytest.raises(ValueError, match=r"must be a static number in \[0, 1\]"):
    jax.jit(lambda r: loss(r, x["ids"]))(0.5)


# ------------------------------------------------------- docs/losses.md


def test_the_loss_page_snippet_runs():
  page = pathlib.Path(__file__).resolve().parents[3] / "docs" / "losses.md"
  snippets = re.findall(
    r"```python\n(.*?)```", page.read_text(encoding="utf-8"), re.DOTALL
  )
  assert len(snippets) == 1, "the page must hold one ```python block"
  exec(compile(snippets[0], "losses.md", "exec"), {"__name__": "docs"})
