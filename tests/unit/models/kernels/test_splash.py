"""Splash attention (rock_jax.models.splash) in Pallas interpret mode on CPU,
against an independent dense reference."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rock_jax import sharding as shd
from rock_jax.models.kernels import splash

B, L, H, K, HEAD_DIM = 2, 200, 4, 2, 64
SCALE = HEAD_DIM**-0.5
BLOCK = 128


def _valid_BxL():
  """Row 0: left padding, a prompt, trailing padding; row 1: a hole in the
  middle, so nothing relies on the padding being at the left."""
  valid_BxL = np.ones((B, L), bool)
  valid_BxL[0, :3] = False
  valid_BxL[0, -7:] = False
  valid_BxL[1, 50:60] = False
  return valid_BxL


def _inputs(batch=B, seed=0):
  rng = np.random.default_rng(seed)
  q = rng.standard_normal((batch, L, H, HEAD_DIM), np.float32)
  k = rng.standard_normal((batch, L, K, HEAD_DIM), np.float32)
  v = rng.standard_normal((batch, L, K, HEAD_DIM), np.float32)
  cotangent = rng.standard_normal((batch, L, H, HEAD_DIM), np.float32)
  return q, k, v, cotangent


def _visible_BxLxS(valid_BxL):
  causal_LxS = np.tril(np.ones((L, L), bool))
  return causal_LxS[None] & valid_BxL[:, None, :]


def _numpy_attention(q_BxLxHxh, k_BxLxKxh, v_BxLxKxh, valid_BxL):
  """float64 reference; rows with no visible key give zeros."""
  group = H // K
  q, k, v = (x.astype(np.float64) for x in (q_BxLxHxh, k_BxLxKxh, v_BxLxKxh))
  k_BxLxHxh = np.repeat(k, group, axis=2)
  v_BxLxHxh = np.repeat(v, group, axis=2)
  scores_BxHxLxS = SCALE * np.einsum("blnd,bsnd->bnls", q, k_BxLxHxh)
  visible_Bx1xLxS = _visible_BxLxS(valid_BxL)[:, None]
  scores_BxHxLxS = np.where(visible_Bx1xLxS, scores_BxHxLxS, -np.inf)
  top = np.max(scores_BxHxLxS, axis=-1, keepdims=True)
  weights = np.exp(scores_BxHxLxS - np.where(np.isfinite(top), top, 0.0))
  total = np.sum(weights, axis=-1, keepdims=True)
  weights = weights / np.where(total > 0, total, 1.0)
  return np.einsum("bnls,bsnd->blnd", weights, v_BxLxHxh)


def _dense_attention(q_BxLxHxh, k_BxLxKxh, v_BxLxKxh, valid_BxL):
  """float32 jnp reference for gradients; padding queries give zeros."""
  group = H // K
  k_BxLxHxh = jnp.repeat(k_BxLxKxh, group, axis=2)
  v_BxLxHxh = jnp.repeat(v_BxLxKxh, group, axis=2)
  scores = SCALE * jnp.einsum("blnd,bsnd->bnls", q_BxLxHxh, k_BxLxHxh)
  visible = jnp.asarray(_visible_BxLxS(valid_BxL))[:, None]
  # Padding queries see no key: give them their diagonal to keep the
  # softmax finite, then zero their output.
  visible = visible | jnp.eye(L, dtype=bool)[None, None]
  weights = jax.nn.softmax(jnp.where(visible, scores, -jnp.inf), axis=-1)
  out = jnp.einsum("bnls,bsnd->blnd", weights, v_BxLxHxh)
  return jnp.where(jnp.asarray(valid_BxL)[:, :, None, None], out, 0.0)


def _grads(attention, q, k, v, cotangent, valid_BxL):
  """d/d(q, k, v) of sum(out * cotangent) over valid query positions."""
  mask = jnp.asarray(valid_BxL)[:, :, None, None]

  def loss(q, k, v):
    out = attention(q, k, v, valid_BxL)
    return jnp.sum(jnp.where(mask, out * cotangent, 0.0))

  return jax.jit(jax.grad(loss, argnums=(0, 1, 2)))(q, k, v)


def _assert_close(actual, expected, rtol=1e-5):
  """Relative error at most `rtol`, measured against the reference's scale
  (elementwise relative error is meaningless near zero)."""
  actual, expected = np.asarray(actual), np.asarray(expected)
  np.testing.assert_allclose(
    actual, expected, rtol=rtol, atol=rtol * np.abs(expected).max()
  )


_splash = functools.partial(
  splash.splash_attention, scale=SCALE, block_size=BLOCK, interpret=True
)


def test_refuses_to_run_off_tpu_outside_interpret_mode():
  q, k, v, _ = _inputs()
  with pytest.raises(ValueError, match="'splash' needs a TPU"):
    splash.splash_attention(q, k, v, _valid_BxL(), scale=SCALE)


@pytest.mark.parametrize(
  "length, block_size, plan",
  [
    (200, 128, (256, 128)),
    (200, 512, (256, 256)),
    (1000, 512, (1024, 512)),
    (600, 512, (640, 128)),
    (1152, 512, (1152, 384)),
    (100, 64, (128, 128)),
    (5, 300, (128, 128)),
  ],
)
def test_block_plan_pads_to_lanes_and_divides(length, block_size, plan):
  assert splash.block_plan(length, block_size) == plan


def test_forward_and_gradients_match_the_references():
  q, k, v, cotangent = _inputs()
  valid_BxL = _valid_BxL()
  out = jax.jit(_splash)(q, k, v, valid_BxL)
  assert out.shape == (B, L, H, HEAD_DIM) and out.dtype == jnp.float32
  expected = _numpy_attention(q, k, v, valid_BxL)
  _assert_close(np.asarray(out)[valid_BxL], expected[valid_BxL])
  assert not np.asarray(out)[~valid_BxL].any()

  got = _grads(_splash, q, k, v, cotangent, valid_BxL)
  want = _grads(_dense_attention, q, k, v, cotangent, valid_BxL)
  for name, g, w in zip("qkv", got, want, strict=True):
    assert np.abs(w).max() > 0, name
    _assert_close(g, w)


def test_sharded_equals_unsharded():
  # Batch over data x fsdp, query and kv heads over tensor: each device runs
  # one row and one GQA group (2 query heads, 1 kv head).
  mesh = shd.make_mesh([("data", 2), ("fsdp", 2), ("tensor", 2)])
  sharder = shd.Sharder(mesh, shd.get_rules("fsdp"))
  q, k, v, cotangent = _inputs(batch=4, seed=1)
  valid_BxL = np.concatenate([_valid_BxL(), _valid_BxL()[::-1]])
  q_spec = sharder.spec((shd.BATCH, shd.LENGTH, shd.HEADS, shd.HEAD_DIM))
  assert q_spec == jax.sharding.PartitionSpec(
    ("data", "fsdp"), None, "tensor", None
  )
  sharded = functools.partial(_splash, sharder=sharder)
  out = jax.jit(sharded)(q, k, v, valid_BxL)
  _assert_close(out, _splash(q, k, v, valid_BxL), rtol=1e-6)

  got = _grads(sharded, q, k, v, cotangent, valid_BxL)
  want = _grads(_splash, q, k, v, cotangent, valid_BxL)
  for g, w in zip(got, want, strict=True):
    _assert_close(g, w, rtol=1e-6)


def test_sharding_errors_name_the_rule():
  mesh = shd.make_mesh([("data", 4), ("tensor", 2)])
  q, k, v, _ = _inputs()
  valid_BxL = _valid_BxL()
  by_length = shd.Sharder(
    mesh, ((shd.BATCH, "data"), (shd.LENGTH, "tensor")) + shd.FSDP_RULES[2:]
  )
  with pytest.raises(ValueError, match="rule 'length' -> 'tensor' splits it"):
    _splash(q, k, v, valid_BxL, sharder=by_length)
  # One kv head cannot be split over tensor=2, while the query heads are.
  sharder = shd.Sharder(mesh, shd.FSDP_RULES)
  with pytest.raises(ValueError, match="same mesh axes.*'kv_heads' \\(K=1\\)"):
    _splash(q, k[:, :, :1], v[:, :, :1], valid_BxL, sharder=sharder)
