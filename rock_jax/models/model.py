"""The model family's pure functions (Qwen2/3, Llama, Qwen3-MoE): apply,
init, the KV cache, parameter shapes and layouts.

Parameters are plain nested dicts of arrays. Every function here is pure and
jit-able with `cfg` (and the optional `sharder`) static.

Legend: B batch, L length, S cache length, D model, V vocab.
"""

from __future__ import annotations

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from rock_jax import sharding as shd
from rock_jax.models import lora
from rock_jax.models.config import ModelConfig
from rock_jax.models.kernels.ragged import PoolStep
from rock_jax.models.transformer import CACHE_LOGICAL, KVCache, Transformer


def _positions_from_valid(valid_BxS: jax.Array) -> jax.Array:
  # Position of each token among the real (non-padding) tokens of its row,
  # which is what left-padded prompts need for RoPE.
  return jnp.maximum(jnp.cumsum(valid_BxS.astype(jnp.int32), axis=1) - 1, 0)


# Jitted so that eager calls compile once; inside a caller's jit it inlines.
@functools.partial(jax.jit, static_argnames=("cfg", "return_hidden", "sharder"))
def apply(
  cfg: ModelConfig,
  params,
  tokens_BxL: jax.Array,
  positions_BxL: jax.Array | None = None,
  *,
  attention_mask_BxL: jax.Array | None = None,
  cache: KVCache | None = None,
  return_hidden: bool = False,
  sharder: shd.Sharder | None = None,
  dropout_rng: jax.Array | None = None,
):
  """Runs the model.

  Args:
    cfg: the model configuration.
    params: the parameter pytree (see `init` / `hf.load`).
    tokens_BxL: int token ids.
    positions_BxL: RoPE positions; by default each token's index among the
      valid tokens of its row (so left padding is handled).
    attention_mask_BxL: True for real tokens, False for padding (keys at
      False positions are never attended to). Default: all True.
    cache: a `KVCache` from `init_cache`; the tokens are written at
      `cache.index` and attend to everything cached so far.
    return_hidden: return final-norm hidden states `[B, L, D]` (compute dtype)
      instead of float32 logits `[B, L, V]`; pair them with `lm_head`.
    sharder: resolves logical activation names to the mesh (None: no
      constraints).
    dropout_rng: the key of the LoRA adapters' dropout while training
      (`ModelConfig.lora.dropout`); None: no dropout.

  Returns:
    logits_BxLxV (float32) or hidden_BxLxD; with a cache, a tuple
    `(output, new_cache)`.
  """
  batch, length = tokens_BxL.shape
  if attention_mask_BxL is None:
    attention_mask_BxL = jnp.ones((batch, length), bool)
  attention_mask_BxL = attention_mask_BxL.astype(bool)
  model = Transformer(cfg, sharder)
  if cache is None:
    if positions_BxL is None:
      positions_BxL = _positions_from_valid(attention_mask_BxL)
    out, _ = model.apply(
      {"params": params},
      tokens_BxL,
      positions_BxL,
      (jnp.arange(length), attention_mask_BxL),
      return_hidden=return_hidden,
      rngs=None if dropout_rng is None else {"dropout": dropout_rng},
    )
    return out
  index = cache.index
  valid_BxS = jax.lax.dynamic_update_slice(
    cache.valid_BxS, attention_mask_BxL, (0, index)
  )
  if positions_BxL is None:
    positions_BxL = jax.lax.dynamic_slice(
      _positions_from_valid(valid_BxS), (0, index), (batch, length)
    )
  kv = {"k": cache.k_NxBxSxKxh, "v": cache.v_NxBxSxKxh}
  out, new_kv = model.apply(
    {"params": params},
    tokens_BxL,
    positions_BxL,
    (index + jnp.arange(length), valid_BxS),
    kv,
    index,
    return_hidden=return_hidden,
  )
  new_cache = KVCache(
    k_NxBxSxKxh=new_kv["k"],
    v_NxBxSxKxh=new_kv["v"],
    valid_BxS=valid_BxS,
    index=index + length,
  )
  return out, new_cache


# The slot pool of `decode_step`: [layers, K, M slots, n pages, C, h].
POOL_LOGICAL = (
  shd.LAYERS,
  shd.KV_HEADS,
  shd.BATCH,
  shd.CACHE_LENGTH,
  None,
  shd.HEAD_DIM,
)


def decode_step(
  cfg: ModelConfig,
  params,
  tokens_b: jax.Array,
  pool: PoolStep,
  *,
  sharder: shd.Sharder | None = None,
):
  """One decode step of `b` rows over a slot pool (`kernels.ragged`).

  Row i feeds `tokens_b[i]` at position `pool.lengths_b[i] - 1` of slot
  `pool.slots_b[i]` (a slot holds its sequence without padding, so a token's
  slot position is its RoPE position) and attends the slot's keys before it
  and its own. The pool is not written: write the returned keys and values
  with `ragged.write`.

  Returns:
    `(hidden_bxD, new_kv)`: final-norm hidden states in the compute dtype,
    and {"k", "v"}: each row's new key and value in every layer,
    `[N, b, K, h]`.
  """
  positions_bx1 = (pool.lengths_b - 1)[:, None]
  layers = {"layer": jnp.arange(cfg.num_layers)}
  hidden, new_kv = Transformer(cfg, sharder).apply(
    {"params": params},
    tokens_b[:, None],
    positions_bx1,
    None,
    layers,
    pool,
    return_hidden=True,
  )
  return hidden[:, 0], new_kv


def hidden_states(
  cfg: ModelConfig, params, tokens_BxL, positions_BxL=None, **kwargs
):
  """`apply(..., return_hidden=True)`: final-norm hidden states `[B, L, D]`."""
  return apply(
    cfg, params, tokens_BxL, positions_BxL, return_hidden=True, **kwargs
  )


def lm_head(cfg: ModelConfig, params) -> jax.Array:
  """The LM-head matrix `[D, V]` (the embedding's transpose when tied)."""
  if cfg.tie_word_embeddings:
    return params["embedding"].T
  return params["lm_head"]


def _boxed_init(cfg, rng):
  tokens = jnp.zeros((1, 1), jnp.int32)
  seen = (jnp.zeros((1,), jnp.int32), jnp.ones((1, 1), bool))
  return Transformer(cfg).init(rng, tokens, tokens, seen)["params"]


@functools.lru_cache(maxsize=64)
def _abstract_boxed(cfg: ModelConfig):
  return jax.eval_shape(functools.partial(_boxed_init, cfg), jax.random.key(0))


def param_logical_axes(cfg: ModelConfig):
  """A pytree like the params whose leaves are tuples of logical axis names."""
  specs = nn.get_partition_spec(_abstract_boxed(cfg))
  return jax.tree.map(
    tuple, specs, is_leaf=lambda x: isinstance(x, jax.sharding.PartitionSpec)
  )


def param_shapes(cfg: ModelConfig):
  """The params as `jax.ShapeDtypeStruct`s, from shapes only (no memory)."""
  return nn.meta.unbox(_abstract_boxed(cfg))


def param_shardings(cfg: ModelConfig, sharder: shd.Sharder):
  """`NamedSharding` for every parameter under the sharder's rules."""
  return sharder.tree_shardings(param_logical_axes(cfg), param_shapes(cfg))


def param_count(cfg: ModelConfig) -> int:
  """Number of parameters (tied embeddings counted once), from shapes only."""
  return int(sum(np.prod(x.shape) for x in jax.tree.leaves(param_shapes(cfg))))


def active_param_count(cfg: ModelConfig) -> int:
  """Parameters one token uses: all but the experts it is not routed to.

  Embedding and LM head count in full, the convention of published
  "activated" figures (Qwen3-30B-A3B: 3,353,032,704, published as 3.3B).
  Equals `param_count` for dense models.
  """
  moe_layers = sum(count for _, _, count, moe in cfg.layer_runs if moe)
  idle_experts = cfg.num_experts - cfg.num_experts_per_tok
  per_expert = 3 * cfg.hidden_size * cfg.moe_intermediate_size
  return param_count(cfg) - moe_layers * idle_experts * per_expert


def init(cfg: ModelConfig, rng: jax.Array, sharder: shd.Sharder | None = None):
  """Random parameters (normal, std `initializer_range`; norms at one).

  With a sharder, each parameter is created directly in its sharded layout.
  """
  fn = lambda key: nn.meta.unbox(_boxed_init(cfg, key))
  if sharder is None:
    return jax.jit(fn)(rng)
  return jax.jit(fn, out_shardings=param_shardings(cfg, sharder))(rng)


def init_adapters(
  cfg: ModelConfig, rng: jax.Array, sharder: shd.Sharder | None = None
):
  """Fresh adapters of `cfg.lora` (A Kaiming-uniform, B zero), created
  directly in their layout; the base is not initialised (only the adapters
  leave the compiled function, so XLA drops the rest)."""
  fn = lambda key: lora.split(nn.meta.unbox(_boxed_init(cfg, key)))[1]
  if sharder is None:
    return jax.jit(fn)(rng)
  shardings = lora.split(param_shardings(cfg, sharder))[1]
  return jax.jit(fn, out_shardings=shardings)(rng)


def _cache_shape(cfg: ModelConfig, batch_size: int, max_length: int):
  return (
    cfg.num_layers,
    batch_size,
    max_length,
    cfg.num_kv_heads,
    cfg.head_dim,
  )


def cache_shardings(
  cfg: ModelConfig, batch_size: int, max_length: int, sharder: shd.Sharder
) -> KVCache:
  """`NamedSharding`s for a `KVCache` of the given size."""
  kv_shape = _cache_shape(cfg, batch_size, max_length)
  kv = sharder.sharding(CACHE_LOGICAL, kv_shape)
  return KVCache(
    k_NxBxSxKxh=kv,
    v_NxBxSxKxh=kv,
    valid_BxS=sharder.sharding(
      (shd.BATCH, shd.CACHE_LENGTH), (batch_size, max_length)
    ),
    index=sharder.sharding(()),
  )


def init_cache(
  cfg: ModelConfig,
  batch_size: int,
  max_length: int,
  dtype=None,
  sharder: shd.Sharder | None = None,
) -> KVCache:
  """An empty KV cache (no valid slots, write index 0).

  `dtype` defaults to the compute dtype.
  """
  dtype = jnp.dtype(dtype or cfg.compute_dtype)
  kv_shape = _cache_shape(cfg, batch_size, max_length)

  def make():
    return KVCache(
      k_NxBxSxKxh=jnp.zeros(kv_shape, dtype),
      v_NxBxSxKxh=jnp.zeros(kv_shape, dtype),
      valid_BxS=jnp.zeros((batch_size, max_length), bool),
      index=jnp.zeros((), jnp.int32),
    )

  if sharder is None:
    return jax.jit(make)()
  return jax.jit(
    make, out_shardings=cache_shardings(cfg, batch_size, max_length, sharder)
  )()
