"""The model family's functional API (rock_jax.models)."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rock_jax import models
from rock_jax import sharding as shd

TINY = models.ModelConfig(
  model_type="qwen3",
  vocab_size=300,
  hidden_size=64,
  intermediate_size=128,
  num_layers=2,
  num_heads=4,
  num_kv_heads=2,
  head_dim=16,
  qk_norm=True,
)

# Large enough that most parameters pass 1 MiB, small enough for a CPU test.
MEDIUM = models.ModelConfig(
  model_type="qwen3",
  vocab_size=4096,
  hidden_size=256,
  intermediate_size=1024,
  num_layers=2,
  num_heads=4,
  num_kv_heads=4,
  head_dim=64,
  qk_norm=True,
)

# Real Qwen3 config.json values; totals are the published parameter counts
# (tied embeddings counted once).
QWEN3 = {
  "0.6B": (
    dict(
      hidden_size=1024,
      intermediate_size=3072,
      num_layers=28,
      num_heads=16,
      tie_word_embeddings=True,
    ),
    596_049_920,
  ),
  "1.7B": (
    dict(
      hidden_size=2048,
      intermediate_size=6144,
      num_layers=28,
      num_heads=16,
      tie_word_embeddings=True,
    ),
    1_720_574_976,
  ),
  "4B": (
    dict(
      hidden_size=2560,
      intermediate_size=9728,
      num_layers=36,
      num_heads=32,
      tie_word_embeddings=True,
    ),
    4_022_468_096,
  ),
  "8B": (
    dict(
      hidden_size=4096,
      intermediate_size=12288,
      num_layers=36,
      num_heads=32,
      tie_word_embeddings=False,
    ),
    8_190_735_360,
  ),
}


@pytest.mark.parametrize("size", sorted(QWEN3))
def test_param_count_matches_published_qwen3(size):
  fields, published = QWEN3[size]
  cfg = models.ModelConfig(
    model_type="qwen3",
    vocab_size=151936,
    num_kv_heads=8,
    head_dim=128,
    qk_norm=True,
    param_dtype="bfloat16",
    **fields,
  )
  assert abs(models.param_count(cfg) - published) <= 1e-3 * published


def _tokens(cfg, batch=3, length=10, seed=0):
  rng = np.random.default_rng(seed)
  return jnp.asarray(
    rng.integers(0, cfg.vocab_size, (batch, length)), jnp.int32
  )


def test_hidden_states_times_lm_head_equals_logits():
  for cfg in (TINY, TINY.replace(tie_word_embeddings=True)):
    params = models.init(cfg, jax.random.key(1))
    tokens = _tokens(cfg)
    hidden = models.hidden_states(cfg, params, tokens)
    assert hidden.shape == (3, 10, cfg.hidden_size)
    head = models.lm_head(cfg, params)
    assert head.shape == (cfg.hidden_size, cfg.vocab_size)
    np.testing.assert_allclose(
      np.asarray(hidden) @ np.asarray(head),
      models.apply(cfg, params, tokens),
      rtol=1e-5,
      atol=1e-5,
    )


def test_future_tokens_do_not_change_past_logits():
  params = models.init(TINY, jax.random.key(2))
  tokens = _tokens(TINY, batch=2)
  changed = tokens.at[:, 6:].set((tokens[:, 6:] + 7) % TINY.vocab_size)
  a = np.asarray(models.apply(TINY, params, tokens))
  b = np.asarray(models.apply(TINY, params, changed))
  np.testing.assert_array_equal(a[:, :6], b[:, :6])
  assert np.abs(a[:, 6:] - b[:, 6:]).min(axis=-1).max() > 0


def test_kv_cache_decode_equals_full_forward_with_left_padding():
  cfg = TINY
  params = models.init(cfg, jax.random.key(3))
  tokens = np.asarray(_tokens(cfg, batch=2, length=9, seed=4))
  mask = np.ones((2, 9), bool)
  mask[1, :3] = False  # second prompt left-padded by three
  full = models.apply(cfg, params, tokens, attention_mask_BxL=mask)

  prompt = 5
  cache = models.init_cache(cfg, batch_size=2, max_length=16)
  step = jax.jit(functools.partial(models.apply, cfg))
  out, cache = step(
    params, tokens[:, :prompt], attention_mask_BxL=mask[:, :prompt], cache=cache
  )
  pieces = [out]
  for t in range(prompt, 9):
    out, cache = step(
      params,
      tokens[:, t : t + 1],
      attention_mask_BxL=mask[:, t : t + 1],
      cache=cache,
    )
    pieces.append(out)
  assert int(cache.index) == 9
  incremental = np.concatenate(pieces, axis=1)
  np.testing.assert_allclose(
    incremental[mask], np.asarray(full)[mask], rtol=1e-5, atol=1e-5
  )


def test_remat_gives_same_values_and_gradients():
  params = models.init(TINY, jax.random.key(5))
  tokens = _tokens(TINY)

  def loss(cfg, p):
    return jnp.mean(jax.nn.log_softmax(models.apply(cfg, p, tokens))[..., 0])

  plain = jax.value_and_grad(functools.partial(loss, TINY))(params)
  remat = jax.value_and_grad(functools.partial(loss, TINY.replace(remat=True)))(
    params
  )
  jax.tree.map(
    lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7),
    plain,
    remat,
  )


@pytest.mark.parametrize("unroll", [0, 2])
def test_unrolled_layers_give_same_values_gradients_and_decode(unroll):
  # Three layers: unroll 2 leaves a remainder iteration, 0 has no loop.
  cfg = TINY.replace(num_layers=3)
  unrolled = cfg.replace(scan_unroll=unroll)
  params = models.init(cfg, jax.random.key(7))
  jax.tree.map(
    np.testing.assert_array_equal,
    params,
    models.init(unrolled, jax.random.key(7)),
  )
  tokens = _tokens(cfg)
  program = jax.jit(functools.partial(models.apply, unrolled)).lower(
    params, tokens
  )
  assert ("while" in program.as_text()) == bool(unroll)

  def loss(cfg, p):
    return jnp.mean(jax.nn.log_softmax(models.apply(cfg, p, tokens))[..., 0])

  jax.tree.map(
    lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7),
    jax.value_and_grad(functools.partial(loss, cfg))(params),
    jax.value_and_grad(functools.partial(loss, unrolled))(params),
  )
  caches = []
  for c in (cfg, unrolled):
    cache = models.init_cache(c, batch_size=tokens.shape[0], max_length=16)
    _, cache = models.apply(c, params, tokens[:, :5], cache=cache)
    out, cache = models.apply(c, params, tokens[:, 5:6], cache=cache)
    caches.append((out, cache.k_NxBxSxKxh, cache.v_NxBxSxKxh))
  jax.tree.map(
    lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6),
    *caches,
  )


def _mesh_2x4():
  return shd.make_mesh([("data", 2), ("fsdp", 4)])


def test_sharded_forward_equals_single_device():
  mesh = _mesh_2x4()
  sharder = shd.Sharder(mesh, shd.FSDP_RULES)
  cfg = MEDIUM
  single = models.init(cfg, jax.random.key(6))
  sharded = models.init(cfg, jax.random.key(6), sharder)
  jax.tree.map(np.testing.assert_array_equal, single, sharded)
  tokens = _tokens(cfg, batch=8, length=16)
  expected = models.apply(cfg, single, tokens)

  batch_sharding = sharder.sharding((shd.BATCH, shd.LENGTH))
  fn = jax.jit(
    functools.partial(models.apply, cfg, sharder=sharder),
    out_shardings=sharder.sharding((shd.BATCH, shd.LENGTH, shd.VOCAB)),
  )
  got = fn(sharded, jax.device_put(tokens, batch_sharding))
  assert got.sharding.spec[0] == ("data", "fsdp")
  np.testing.assert_allclose(got, expected, rtol=2e-5, atol=2e-5)


def test_default_fsdp_rules_shard_every_large_parameter():
  sharder = shd.Sharder(_mesh_2x4(), shd.FSDP_RULES)
  params = models.init(MEDIUM, jax.random.key(7), sharder)
  large = [x for x in jax.tree.leaves(params) if x.nbytes >= 2**20]
  assert len(large) >= 5  # embedding, lm_head and the three MLP kernels
  assert shd.unsharded_bytes(params, 2**20) == []
  replicated = models.init(
    MEDIUM, jax.random.key(7), shd.Sharder(_mesh_2x4(), shd.REPLICATED_RULES)
  )
  assert len(shd.unsharded_bytes(replicated, 2**20)) == len(large)


def test_teacher_and_student_rules_on_one_mesh():
  mesh = _mesh_2x4()
  student = shd.Sharder(mesh, shd.FSDP_RULES)
  teacher = shd.Sharder(mesh, shd.REPLICATED_RULES)
  s = models.param_shardings(MEDIUM, student)
  t = models.param_shardings(MEDIUM, teacher)
  assert s["embedding"].spec == jax.P(None, "fsdp")
  assert t["embedding"].spec == jax.P(None, None)
  assert s["layers"]["mlp"]["up_kernel"].spec == jax.P(None, "fsdp", None)


@pytest.mark.parametrize(
  "field, value, match",
  [
    ("num_kv_heads", 3, "num_heads=4 must be a multiple of num_kv_heads=3"),
    ("model_type", "gpt2", "model_type='gpt2' is not supported"),
    ("rope_type", "yarn", "rope_type='yarn'"),
    ("dtype", "int8", "dtype='int8'"),
    ("hidden_size", 0, "hidden_size=0 must be a positive integer"),
    ("scan_unroll", -1, "scan_unroll=-1 must be an integer >= 0"),
  ],
)
def test_config_errors_name_the_field(field, value, match):
  with pytest.raises(ValueError, match=match):
    TINY.replace(**{field: value})
