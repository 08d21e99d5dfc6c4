"""Gradient diagnostics (rock_jax.analysis.gradients) against references.

The logit-space quantities are checked against autodiff of the loss and a
float64 NumPy evaluation from materialised logits; the parameter-space share
against an independent `jax.grad` of the step's token-mean loss.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from step_helpers import STUDENT, TEACHER, opd_batch

from rock_jax import losses, models
from rock_jax import sharding as shd
from rock_jax.analysis import census, gradients
from rock_jax.opd import train_step
from rock_jax.opd.train_step import Sharders

V = STUDENT.vocab_size


def np_log_softmax(z):
  z = np.asarray(z, np.float64)
  z = z - z.max(-1, keepdims=True)
  return z - np.log(np.exp(z).sum(-1, keepdims=True))


def np_logit_gradient(student, teacher):
  """p_s ⊙ (A − E_{p_s}[A]), A = log p_s − log p_t, in float64."""
  ls, lt = np_log_softmax(student), np_log_softmax(teacher)
  ps = np.exp(ls)
  a = ls - lt
  return ps * (a - (ps * a).sum(-1, keepdims=True))


def assert_close(actual, expected, rtol, atol=0.0):
  np.testing.assert_allclose(
    np.asarray(actual, np.float64), expected, rtol=rtol, atol=atol
  )


def _logits_pair(seed=0, shape=(4, 5, 40)):
  rng = np.random.default_rng(seed)
  student = 3.0 * rng.standard_normal(shape)
  teacher = 3.0 * rng.standard_normal(shape)
  # A large logit spread: a near-one-hot student row and a teacher row
  # whose tail sits ~100 nats below its mode (log p_t ≈ −100 enters A).
  student[1] *= 12.0
  teacher[2] *= 15.0
  student[3, 0, 7] += 40.0
  return jnp.asarray(student, jnp.float32), jnp.asarray(teacher, jnp.float32)


def test_logit_gradient_equals_autodiff_and_the_float64_formula():
  student, teacher = _logits_pair()
  got = gradients.logit_gradient(student, teacher)
  assert got.dtype == jnp.float32 and got.shape == student.shape

  want = jax.grad(lambda s: losses.token_divergence(s, teacher).sum())(student)
  scale = float(jnp.max(jnp.abs(want)))
  assert_close(got, np.asarray(want), rtol=1e-5, atol=1e-6 * scale)

  exact = np_logit_gradient(student, teacher)
  scale = float(np.abs(exact).max())
  assert_close(got, exact, rtol=1e-5, atol=1e-6 * scale)
  # Every row's gradient sums to zero (softmax is shift invariant).
  assert_close(got.sum(-1), 0.0, rtol=0, atol=1e-6 * scale)


# ------------------------------------------------------- logit diagnostics


def _random_params(cfg, seed, std=0.3):
  """Random parameters drawn on the host.

  `models.init` compiles one program per config, seconds each on a small
  CPU host; NumPy draws of the same tree are instant. A larger std than the
  initializer's makes the distributions far from uniform, so the gradients
  are not mostly float32 noise.
  """
  rng = np.random.default_rng(seed)

  def draw(path, leaf):
    if "norm" in jax.tree_util.keystr(path):
      return np.ones(leaf.shape, np.float32)
    return (std * rng.standard_normal(leaf.shape)).astype(np.float32)

  return jax.tree_util.tree_map_with_path(draw, models.param_shapes(cfg))


@pytest.fixture(scope="module")
def models_and_sharder():
  student = _random_params(STUDENT, 0)
  teacher = _random_params(TEACHER, 1)
  sharder = shd.Sharder(shd.make_mesh([("data", 8)]), shd.get_rules("fsdp"))
  cfg = census.kl_config(STUDENT, TEACHER, chunk_size=8)
  return cfg, student, teacher, Sharders(sharder, sharder)


@functools.partial(jax.jit, static_argnums=(0,))
def _apply(cfg_, params, tokens, mask):
  return models.apply(cfg_, params, tokens, attention_mask_BxL=mask)


def _completion_logits(cfg_, params, tokens, mask, n):
  out = _apply(cfg_, params, tokens, mask)
  p = tokens.shape[1] - n
  return np.asarray(out[:, p - 1 : p - 1 + n], np.float64)


def _reference(student, teacher, batch, tracked):
  """ḡ_t, G_balanced, G_global and the tracked rows' geometry, float64."""
  n = batch.completion_mask_BxN.shape[1]
  z_s = _completion_logits(
    STUDENT, student, batch.student_tokens_BxS, batch.student_mask_BxS, n
  )
  z_t = _completion_logits(
    TEACHER, teacher, batch.teacher_tokens_BxU, batch.teacher_mask_BxU, n
  )
  mask = np.asarray(batch.completion_mask_BxN, bool)
  ids = np.asarray(batch.completion_BxN)[mask]
  g = np_logit_gradient(z_s, z_t)[mask]  # [positions, V]
  count = np.bincount(ids, minlength=V)
  mean = {t: g[ids == t].mean(0) for t in np.unique(ids)}
  balanced = sum(mean.values())
  global_ = g.sum(0)

  def cos(x, y):
    d = np.linalg.norm(x) * np.linalg.norm(y)
    return x @ y / d if d > 0 else np.nan

  rows = [mean.get(int(t), np.zeros(V)) for t in tracked]
  norm = np.array([np.linalg.norm(r) for r in rows])
  cos_b = np.array([cos(r, balanced) for r in rows])
  return {
    "count": count[tracked].astype(np.float64),
    "norm": norm,
    "cos_balanced": cos_b,
    "cos_global": np.array([cos(r, global_) for r in rows]),
    "contribution": count[tracked] * norm * cos_b,
    "balanced_norm": np.linalg.norm(balanced),
    "global_norm": np.linalg.norm(global_),
  }


@pytest.mark.parametrize(
  "rows,chunk",
  # B·N = 8·6 = 48 positions per pass: chunk 7 leaves 6 padding positions;
  # 5 rows also add 3 padding rows (all-False masks).
  [(8, 7), (5, 7)],
)
def test_logit_diagnostics_match_materialised_logits(
  models_and_sharder, rows, chunk
):
  cfg, student, teacher, sharders = models_and_sharder
  batch = jax.tree.map(lambda x: x[:rows], opd_batch())
  kl = census.score(cfg, student, teacher, batch, sharders, 8)
  corpus = census.Corpus(batch, kl, np.zeros(rows, bool))
  ts = census.type_stats(corpus.ids_BxN, kl, corpus.mask_BxN, V)
  emitted = np.flatnonzero(ts.count_V)
  never = np.flatnonzero(ts.count_V == 0)[:1]
  # Frequent and rare emitted types, plus one never emitted (ḡ_t = 0).
  by_count = emitted[np.argsort(-ts.count_V[emitted], kind="stable")]
  tracked = np.concatenate([by_count[:3], by_count[-2:], never])
  assert ts.count_V[tracked[0]] >= 2 and len(never) == 1

  got = gradients.logit_diagnostics(
    cfg,
    student,
    teacher,
    corpus,
    ts,
    tracked,
    sharders=sharders,
    batch_size=8,
    chunk=chunk,
  )
  want = _reference(student, teacher, batch, tracked)
  np.testing.assert_array_equal(got["ids"], tracked)
  np.testing.assert_array_equal(got["count"], want["count"])
  scale = want["norm"].max()
  # float32 logits and sums over ≤ 48 positions, as tests/test_losses.py.
  assert_close(got["norm"], want["norm"], rtol=1e-5, atol=1e-6 * scale)
  for key in ("balanced_norm", "global_norm"):
    assert_close(got[key], want[key], rtol=1e-5)
  seen = want["count"] > 0
  for key in ("cos_balanced", "cos_global"):
    assert_close(got[key][seen], want[key][seen], rtol=1e-5, atol=1e-6)
    assert np.isnan(got[key][~seen]).all()
  contribution = want["contribution"][seen]
  assert_close(
    got["contribution"][seen],
    contribution,
    rtol=1e-5,
    atol=1e-6 * np.abs(contribution).max(),
  )


# ------------------------------------------------------- parameter share


@functools.partial(jax.jit, static_argnums=(0,))
def _full_gradient(cfg, student, teacher, batch):
  """jax.grad of the token-mean loss, unsharded, outside `gradients`."""
  side = train_step.teacher_side(cfg, teacher, batch, None)

  def loss(params):
    per_token = train_step.per_token_loss(cfg, params, side, batch, None)
    return losses.reduce(per_token, batch.completion_mask_BxN)[0]

  return jax.grad(loss)(student)


def test_parameter_share_adds_up_to_the_full_gradient(models_and_sharder):
  cfg, student, teacher, sharders = models_and_sharder
  batch = opd_batch()
  mask = np.asarray(batch.completion_mask_BxN, bool)
  ids = np.asarray(batch.completion_BxN)
  emitted = ids[mask]
  rocks = np.unique(emitted)[::3]
  rest = np.setdiff1d(np.arange(V), rocks)

  share = gradients.parameter_share(
    cfg, student, teacher, [batch], rocks, sharders=sharders
  )
  other = gradients.parameter_share(
    cfg, student, teacher, [batch], rest, sharders=sharders
  )
  full = float(optax.tree.norm(_full_gradient(cfg, student, teacher, batch)))
  assert_close(share["all_norm"][0], full, rtol=1e-5)
  assert_close(other["all_norm"][0], full, rtol=1e-5)
  # Complementary rock sets swap the two halves.
  assert_close(other["rock_norm"][0], share["rest_norm"][0], rtol=1e-5)
  assert_close(other["rest_norm"][0], share["rock_norm"][0], rtol=1e-5)
  assert_close(
    share["projection_share"][0] + other["projection_share"][0],
    1.0,
    rtol=1e-6,
  )
  assert_close(share["norm_share"][0], share["rock_norm"][0] / full, rtol=1e-5)
  rock_tokens = np.isin(emitted, rocks).sum()
  assert 0 < rock_tokens < mask.sum()
  assert share["token_share"][0] == rock_tokens / mask.sum()
  assert other["token_share"][0] == (mask.sum() - rock_tokens) / mask.sum()
  assert -1 <= share["cos_rock_rest"][0] <= 1


def test_parameter_share_of_an_empty_rock_set_is_zero(models_and_sharder):
  cfg, student, teacher, sharders = models_and_sharder
  batch = opd_batch()
  share = gradients.parameter_share(
    cfg,
    student,
    teacher,
    [batch, opd_batch(1)],
    np.zeros(0, np.int64),
    sharders=sharders,
  )
  assert share["rock_norm"] == [0.0, 0.0]
  assert share["norm_share"] == [0.0, 0.0]
  assert share["projection_share"] == [0.0, 0.0]
  assert share["token_share"] == [0.0, 0.0]
  assert np.isnan(share["cos_rock_rest"]).all()
  full = float(optax.tree.norm(_full_gradient(cfg, student, teacher, batch)))
  assert_close(share["all_norm"][0], full, rtol=1e-5)
  assert_close(share["rest_norm"][0], full, rtol=1e-5)


def test_parameter_share_accepts_an_empty_python_list(models_and_sharder):
  cfg, student, teacher, sharders = models_and_sharder
  share = gradients.parameter_share(
    cfg, student, teacher, [opd_batch()], [], sharders=sharders
  )
  assert share["norm_share"] == [0.0]
