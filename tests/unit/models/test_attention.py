"""Attention implementations (rock_jax.models.attention): kernels against a
float64 NumPy reference, each model family end to end against "xla", KV-cache
generation, backend checks and a sharded forward."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hf_helpers import make_config

from rock_jax import models
from rock_jax import sharding as shd
from rock_jax.models import attention
from rock_jax.models.hf_config import config_from_hf
from rock_jax.models.kernels import blockwise, cudnn, xla
from rock_jax.sampler import rollout

B, L, H, K, HEAD_DIM = 3, 37, 4, 2, 16
SCALE = HEAD_DIM**-0.5


def _valid_BxL():
  """Row 0 full; row 1 left-padded; row 2 left- and right-padded (a finished
  completion), its valid keys still one contiguous run as "cudnn" needs."""
  valid_BxL = np.ones((B, L), bool)
  valid_BxL[1, :5] = False
  valid_BxL[2, :9] = False
  valid_BxL[2, -4:] = False
  return valid_BxL


def _inputs(length=L, keys=L, seed=0):
  rng = np.random.default_rng(seed)
  q = rng.standard_normal((B, length, H, HEAD_DIM), np.float32)
  k = rng.standard_normal((B, keys, K, HEAD_DIM), np.float32)
  v = rng.standard_normal((B, keys, K, HEAD_DIM), np.float32)
  cotangent = rng.standard_normal((B, length, H, HEAD_DIM), np.float32)
  return q, k, v, cotangent


def _numpy_attention(q_BxLxHxh, k_BxSxKxh, v_BxSxKxh, q_slot_L, kv_valid_BxS):
  """float64 dense masked softmax; query head n reads kv head n // (H / K).
  Queries that see no key give zeros."""
  group = q_BxLxHxh.shape[2] // k_BxSxKxh.shape[2]
  q, k, v = (x.astype(np.float64) for x in (q_BxLxHxh, k_BxSxKxh, v_BxSxKxh))
  k = np.repeat(k, group, axis=2)
  v = np.repeat(v, group, axis=2)
  scores_BxHxLxS = SCALE * np.einsum("blnd,bsnd->bnls", q, k)
  slots_S = np.arange(k.shape[1])
  seen_BxLxS = (slots_S[None, :] <= np.asarray(q_slot_L)[:, None])[None]
  seen_BxLxS = seen_BxLxS & kv_valid_BxS[:, None, :]
  scores_BxHxLxS = np.where(seen_BxLxS[:, None], scores_BxHxLxS, -np.inf)
  top = np.max(scores_BxHxLxS, axis=-1, keepdims=True)
  weights = np.exp(scores_BxHxLxS - np.where(np.isfinite(top), top, 0.0))
  total = np.sum(weights, axis=-1, keepdims=True)
  weights = weights / np.where(total > 0, total, 1.0)
  return np.einsum("bnls,bsnd->blnd", weights, v)


def _assert_close(actual, expected, rtol=1e-5):
  """Relative error at most `rtol`, measured against the reference's scale
  (elementwise relative error is meaningless near zero)."""
  actual, expected = np.asarray(actual), np.asarray(expected)
  np.testing.assert_allclose(
    actual, expected, rtol=rtol, atol=rtol * np.abs(expected).max()
  )


def _self_attention(fn):
  """`fn(q, k, v, q_slot_L, kv_valid_BxS)` as `(q, k, v, valid_BxL)`."""
  return lambda q, k, v, valid: fn(q, k, v, jnp.arange(q.shape[1]), valid)


_xla = _self_attention(functools.partial(xla.xla_attention, scale=SCALE))


def _blockwise(block_q, block_kv):
  return _self_attention(
    functools.partial(
      blockwise.blockwise_attention,
      scale=SCALE,
      block_q=block_q,
      block_kv=block_kv,
    )
  )


def _aligned(q, k, v, valid_BxL):
  return cudnn.aligned_attention(
    q, k, v, valid_BxL, scale=SCALE, implementation=None
  )


@functools.partial(jax.jit, static_argnums=0)
def _output_and_grads(attend, q, k, v, cotangent, valid_BxL):
  """The output and d/d(q, k, v) of sum(out * cotangent) over valid queries."""
  mask = valid_BxL[:, :, None, None]

  def loss(q, k, v):
    out = attend(q, k, v, valid_BxL)
    return jnp.sum(jnp.where(mask, out * cotangent, 0.0)), out

  (_, out), grads = jax.value_and_grad(loss, argnums=(0, 1, 2), has_aux=True)(
    q, k, v
  )
  return out, grads


@pytest.fixture(scope="module")
def problem():
  q, k, v, cotangent = _inputs()
  valid_BxL = _valid_BxL()
  expected = _numpy_attention(q, k, v, np.arange(L), valid_BxL)
  _, want = _output_and_grads(_xla, q, k, v, cotangent, valid_BxL)
  for name, w in zip("qkv", want, strict=True):
    assert np.abs(np.asarray(w)).max() > 0, name
  return (q, k, v, cotangent, valid_BxL), expected, want


@pytest.mark.parametrize(
  "attend",
  [
    pytest.param(_blockwise(8, 16), id="blockwise-8x16"),
    pytest.param(_blockwise(16, 8), id="blockwise-16x8"),
    pytest.param(_blockwise(5, 7), id="blockwise-5x7"),
    pytest.param(_blockwise(64, 64), id="blockwise-larger-than-L"),
    pytest.param(_aligned, id="aligned"),
  ],
)
def test_forward_and_gradients_match_the_references(problem, attend):
  inputs, expected, want = problem
  valid_BxL = inputs[-1]
  out, got = _output_and_grads(attend, *inputs)
  assert out.shape == (B, L, H, HEAD_DIM) and out.dtype == jnp.float32
  _assert_close(np.asarray(out)[valid_BxL], expected[valid_BxL])
  for g, w in zip(got, want, strict=True):
    _assert_close(g, w)


@pytest.mark.parametrize("block_q, block_kv", [(8, 16), (16, 8), (64, 64)])
def test_blockwise_over_a_kv_cache(block_q, block_kv):
  # 13 queries written at cache slots [20, 33) of a 48-slot cache: left
  # padding per row, a hole (a finished row's padding) and the unwritten
  # slots beyond the queries are all invalid.
  index, length, keys = 20, 13, 48
  q, k, v, _ = _inputs(length=length, keys=keys, seed=1)
  valid_BxS = np.zeros((B, keys), bool)
  valid_BxS[:, : index + length] = True
  valid_BxS[1, :6] = False
  valid_BxS[2, :11] = False
  valid_BxS[2, 15:19] = False
  q_slot_L = index + np.arange(length)
  out = jax.jit(
    functools.partial(
      blockwise.blockwise_attention,
      scale=SCALE,
      block_q=block_q,
      block_kv=block_kv,
    )
  )(q, k, v, q_slot_L, valid_BxS)
  _assert_close(out, _numpy_attention(q, k, v, q_slot_L, valid_BxS))


def _bf16_error_budget(got_bf16, xla_bf16, want_f32, mask):
  """The repo's bfloat16 rule (README, "Models"): at most twice the error
  the reference implementation itself makes in bfloat16."""
  got, ref, want = (
    np.asarray(x, np.float64)[mask] for x in (got_bf16, xla_bf16, want_f32)
  )
  error, budget = np.abs(got - want).max(), 2 * np.abs(ref - want).max()
  assert 0 < budget and error <= budget, (error, budget)


def test_blockwise_bfloat16_within_twice_xla_own_bfloat16_error(problem):
  (q, k, v, cotangent, valid_BxL), _, _ = problem
  # Both sides see the same bf16-rounded inputs; the float32 run of "xla" on
  # them is the truth, and "xla" run in bf16 sets the error budget.
  q, k, v, cotangent = (
    jnp.asarray(x, jnp.bfloat16) for x in (q, k, v, cotangent)
  )
  f32 = lambda xs: [x.astype(jnp.float32) for x in xs]
  want, want_grads = _output_and_grads(
    _xla, *f32((q, k, v, cotangent)), valid_BxL
  )
  got, got_grads = _output_and_grads(
    _blockwise(8, 16), q, k, v, cotangent, valid_BxL
  )
  ref, ref_grads = _output_and_grads(_xla, q, k, v, cotangent, valid_BxL)
  assert got.dtype == jnp.bfloat16
  _bf16_error_budget(got, ref, want, valid_BxL)
  for g, r, w in zip(got_grads, ref_grads, want_grads, strict=True):
    assert g.dtype == jnp.bfloat16
    _bf16_error_budget(g, r, w, np.ones(g.shape, bool))


# Model level ----------------------------------------------------------------

FAMILIES = ("qwen3", "llama", "qwen2", "qwen3_moe")
MODEL_LENGTH = 21


def _family_config(kind, **overrides):
  """The tiny transformers config of `kind` (4 query heads, 2 kv heads) with
  tiles of 8, so 21 positions end in a partial tile, and a head dim of 64,
  which the splash kernel takes. One layer: a second would only attend over
  the first one's outputs at the same valid positions, and each layer costs
  compile time."""
  cfg = config_from_hf(make_config(kind))
  assert cfg.num_heads == 2 * cfg.num_kv_heads
  return cfg.replace(attention_block=8, head_dim=64, num_layers=1, **overrides)


@functools.cache
def _params(kind):
  """Random parameters of the family, drawn on the host (no init program to
  compile): weights and biases N(0, 0.1), large enough for a far from
  uniform softmax without QK-norm, and norm scales near one."""
  rng = np.random.default_rng(0)

  def draw(path, leaf):
    noise = rng.standard_normal(leaf.shape)
    if "norm" in jax.tree_util.keystr(path):
      return jnp.asarray(1 + 0.2 * noise, jnp.float32)
    return jnp.asarray(0.1 * noise, jnp.float32)

  shapes = models.param_shapes(_family_config(kind))
  return jax.tree_util.tree_map_with_path(draw, shapes)


def _model_batch(cfg, batch=B, seed=0):
  """Left padding in every row but the first, and trailing padding in the
  last, as in a rollout batch; next-token targets."""
  rng = np.random.default_rng(seed)
  tokens = rng.integers(0, cfg.vocab_size, (batch, MODEL_LENGTH), np.int32)
  mask = np.ones((batch, MODEL_LENGTH), bool)
  for row in range(1, batch):
    mask[row, : 3 * row + 1] = False
  mask[-1, -5:] = False
  targets = rng.integers(0, cfg.vocab_size, (batch, MODEL_LENGTH), np.int32)
  return tokens, mask, targets


@functools.partial(jax.jit, static_argnums=0)
def _logits_and_grads(cfg, params, tokens, mask, targets):
  """Logits and the gradient of the mean target log-probability over valid
  positions."""

  def loss(p):
    logits = models.apply(cfg, p, tokens, attention_mask_BxL=mask)
    logp = jax.nn.log_softmax(logits)
    picked = jnp.take_along_axis(logp, targets[..., None], axis=-1)[..., 0]
    return -jnp.sum(jnp.where(mask, picked, 0.0)) / jnp.sum(mask), logits

  (_, logits), grads = jax.value_and_grad(loss, has_aux=True)(params)
  return logits, grads


@pytest.fixture(scope="module", params=FAMILIES)
def family(request):
  """A family's config, parameters, batch and "xla" logits and gradients,
  shared by every implementation compared against them."""
  cfg = _family_config(request.param, attention_impl="xla")
  params = _params(request.param)
  batch = _model_batch(cfg)
  logits, grads = _logits_and_grads(cfg, params, *batch)
  flat, _ = jax.tree_util.tree_flatten_with_path(grads)
  for path, g in flat:
    assert np.abs(np.asarray(g)).max() > 0, jax.tree_util.keystr(path)
  return cfg, params, batch, logits, grads


def _assert_model_matches_xla(family, **overrides):
  cfg, params, batch, want_logits, want_grads = family
  logits, grads = _logits_and_grads(cfg.replace(**overrides), params, *batch)
  mask = batch[1]
  _assert_close(np.asarray(logits)[mask], np.asarray(want_logits)[mask])
  for got, want in zip(
    jax.tree.leaves(grads), jax.tree.leaves(want_grads), strict=True
  ):
    _assert_close(got, want)


def test_blockwise_model_matches_xla(family):
  _assert_model_matches_xla(family, attention_impl="blockwise")


def test_splash_model_matches_xla(family):
  _assert_model_matches_xla(
    family, attention_impl="splash", pallas_interpret=True
  )


def test_greedy_generation_with_blockwise_equals_xla():
  # Exact lengths (no buckets): the 13-position prefill over a 22-slot cache
  # is the cached blockwise path in partial tiles; decode steps run "xla".
  cfg = _family_config("qwen3", attention_impl="blockwise", eos_token_id=())
  params = _params("qwen3")
  rng = np.random.default_rng(2)
  tokens = rng.integers(1, cfg.vocab_size, (B, 13)).astype(np.int32)
  mask = np.ones((B, 13), bool)
  mask[1, :4] = False
  mask[2, :9] = False
  tokens[~mask] = 0

  def run(cfg):
    return rollout.generate(
      cfg, params, tokens, mask, jax.random.key(0), 9, buckets=None
    )

  got, want = run(cfg), run(cfg.replace(attention_impl="xla"))
  np.testing.assert_array_equal(got.tokens, want.tokens)
  gen = np.asarray(want.completion_mask)
  assert gen[:, 13:].all()
  np.testing.assert_allclose(
    np.asarray(got.logprobs)[gen], np.asarray(want.logprobs)[gen], atol=1e-5
  )


# Backend checks and configuration --------------------------------------------


@pytest.mark.parametrize("impl", ["cudnn", "splash"])
def test_check_refuses_kernels_this_backend_lacks(impl):
  needs = {"cudnn": "GPU", "splash": "TPU"}[impl]
  with pytest.raises(ValueError) as raised:
    attention.check(impl, field="ModelConfig.attention_impl")
  message = str(raised.value)
  assert f"ModelConfig.attention_impl={impl!r} needs a {needs}" in message
  assert "'auto'" in message and "'blockwise'" in message


def test_check_accepts_what_runs_here():
  for impl in ("auto", "blockwise", "xla"):
    attention.check(impl)
  attention.check("splash", interpret=True)
  with pytest.raises(ValueError, match=r"attention_impl='bogus'; allowed: \["):
    attention.check("bogus")


def test_auto_resolves_per_backend():
  assert attention.resolve("auto", "tpu") == "splash"
  assert attention.resolve("auto", "gpu") == "cudnn"
  assert attention.resolve("auto", "cpu") == "blockwise"
  assert attention.resolve("auto") == "blockwise"
  assert attention.resolve("xla", "tpu") == "xla"


def test_auto_by_backend_length_and_dtype(monkeypatch):
  monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
  # cuDNN's fused attention takes 16-bit inputs only.
  assert attention._chosen("auto", 600, 600, 512, jnp.float32) == "blockwise"
  assert attention._chosen("auto", 600, 600, 512, jnp.bfloat16) == "cudnn"
  monkeypatch.setattr(jax, "default_backend", lambda: "cpu")
  # One tile: dense XLA attention holds no more than blockwise would.
  assert attention._chosen("auto", 512, 512, 512, jnp.float32) == "xla"
  assert attention._chosen("auto", 8, 513, 512, jnp.float32) == "blockwise"
  assert attention._chosen("blockwise", 8, 8, 512, jnp.float32) == "blockwise"


def test_config_validates_attention_fields():
  cfg = _family_config("qwen3")
  assert cfg.attention_impl == "auto" and not cfg.pallas_interpret
  allowed = r"\['auto', 'xla', 'blockwise', 'cudnn', 'splash'\]"
  with pytest.raises(
    ValueError, match=f"attention_impl='bogus'; allowed: {allowed}"
  ):
    cfg.replace(attention_impl="bogus")
  with pytest.raises(
    ValueError, match="attention_block=0 must be a positive integer"
  ):
    cfg.replace(attention_block=0)


# Sharding --------------------------------------------------------------------


def test_sharded_blockwise_equals_unsharded():
  # Batch over data x fsdp, heads over tensor: each device holds one row and
  # one GQA group (2 query heads, 1 kv head).
  mesh = shd.make_mesh([("data", 2), ("fsdp", 2), ("tensor", 2)])
  sharder = shd.Sharder(mesh, shd.FSDP_RULES)
  cfg = _family_config("qwen3", attention_impl="blockwise")
  single = _params("qwen3")
  sharded = jax.device_put(single, models.param_shardings(cfg, sharder))
  tokens, mask, _ = _model_batch(cfg, batch=4, seed=3)
  expected = models.apply(cfg, single, tokens, attention_mask_BxL=mask)

  batch_sharding = sharder.sharding((shd.BATCH, shd.LENGTH))
  fn = jax.jit(
    functools.partial(models.apply, cfg, sharder=sharder),
    out_shardings=sharder.sharding((shd.BATCH, shd.LENGTH, shd.VOCAB)),
  )
  got = fn(
    sharded,
    jax.device_put(tokens, batch_sharding),
    attention_mask_BxL=jax.device_put(mask, batch_sharding),
  )
  assert got.sharding.spec[0] == ("data", "fsdp")
  _assert_close(np.asarray(got)[mask], np.asarray(expected)[mask])
