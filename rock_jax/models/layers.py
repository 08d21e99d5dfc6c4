"""Transformer blocks: RMSNorm, RoPE, GQA attention + KV cache, MLP, MoE.

Legend: B batch, L query length, S key/cache length, D model, H query heads,
K kv heads, h head dim, F MLP hidden (per expert in MoE blocks), T tokens
(B*L), E experts, A experts per token (top-k), R routed token-expert pairs
(T*A). Parameters carry logical axis names only (`rock_jax.sharding`); which
mesh axes they map to is decided by config.

MoE dispatch (`ModelConfig.moe_dispatch`). Both paths are exact: no capacity
limit, no dropped tokens, the same top-k sum as transformers.
- "dense": every expert runs on every token and a combine matrix that is zero
  outside each token's top-k weights the results. Plain einsums that any
  sharding and any backend handle well, at E/A times the routed FLOPs and
  intermediate memory ([T, E, F]).
- "ragged": the R pairs are sorted by expert (a stable argsort), the rows
  gathered, and the three projections run as grouped matmuls
  (`jax.lax.ragged_dot`, one group per expert), then scattered back and
  weighted. Routed FLOPs only. XLA has grouped-GEMM lowerings of `ragged_dot`
  for TPU and GPU, but XLA:CPU expands it, so CPU runs want "dense" even
  at 8x its FLOPs (benchmarks/moe_dispatch.py).
- "auto" (default) is "dense" while E/A <= 4, else "ragged" (Qwen3-30B-A3B:
  128/8 = 16).
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from rock_jax import sharding as shd
from rock_jax.models import attention, lora
from rock_jax.models.config import ModelConfig
from rock_jax.models.kernels import ragged


def param(module: nn.Module, name: str, shape, logical, init=None):
  """A parameter of `module` annotated with its logical axes, in the
  config's weight dtype (the layers' and the stack's one way to declare
  weights)."""
  cfg = module.cfg
  init = init or nn.initializers.normal(cfg.initializer_range)
  return module.param(
    name, nn.with_logical_partitioning(init, logical), shape, cfg.weight_dtype
  )


def _einsum(
  spec: str, x: jax.Array, w: jax.Array, dtype, out_dtype=None
) -> jax.Array:
  # Operands in the compute dtype, accumulation in float32 even for bfloat16
  # operands; the result is stored in `out_dtype` (default: compute dtype).
  out = jnp.einsum(
    spec, x.astype(dtype), w.astype(dtype), preferred_element_type=jnp.float32
  )
  return out.astype(out_dtype or dtype)


def _plus(y: jax.Array, update: jax.Array | None) -> jax.Array:
  """`y` plus an adapter's update (if any), in `y`'s dtype."""
  return y if update is None else (y + update).astype(y.dtype)


class RMSNorm(nn.Module):
  """Root-mean-square norm over the last axis, computed in float32."""

  cfg: ModelConfig
  logical: tuple

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    scale = param(
      self, "scale", (x.shape[-1],), self.logical, nn.initializers.ones
    )
    x32 = x.astype(jnp.float32)
    var = jnp.mean(jnp.square(x32), axis=-1, keepdims=True)
    y = x32 * jax.lax.rsqrt(var + self.cfg.rms_norm_eps)
    scale = scale.astype(jnp.float32).reshape((1,) * (y.ndim - 1) + (-1,))
    return (y * scale).astype(self.cfg.compute_dtype)


def rope_inv_freq(cfg: ModelConfig) -> np.ndarray:
  """Inverse RoPE frequencies `[h/2]`, including linear and Llama-3 scaling.

  Computed on the host in float64 from static config values, then rounded to
  float32 like the Hugging Face implementation.
  """
  dim = cfg.head_dim
  inv = 1.0 / (cfg.rope_theta ** (np.arange(0, dim, 2, dtype=np.float64) / dim))
  if cfg.rope_type == "linear":
    inv = inv / cfg.rope_factor
  elif cfg.rope_type == "llama3":
    factor = cfg.rope_factor
    low, high = cfg.rope_low_freq_factor, cfg.rope_high_freq_factor
    old_len = cfg.rope_original_max_positions
    wavelen = 2 * np.pi / inv
    scaled = np.where(wavelen > old_len / low, inv / factor, inv)
    smooth = (old_len / wavelen - low) / (high - low)
    smoothed = (1 - smooth) * scaled / factor + smooth * scaled
    medium = (wavelen >= old_len / high) & (wavelen <= old_len / low)
    inv = np.where(medium, smoothed, scaled)
  return inv.astype(np.float32)


def apply_rope(
  x_BxLxNxh: jax.Array, positions_BxL: jax.Array, inv_freq: np.ndarray
) -> jax.Array:
  """Rotates the two halves of each head (the Hugging Face convention)."""
  angles = positions_BxL.astype(jnp.float32)[..., None] * inv_freq[None, None]
  cos = jnp.cos(angles)[:, :, None, :]
  sin = jnp.sin(angles)[:, :, None, :]
  x1, x2 = jnp.split(x_BxLxNxh.astype(jnp.float32), 2, axis=-1)
  out = jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)
  return out.astype(x_BxLxNxh.dtype)


class Attention(nn.Module):
  """Grouped-query self-attention with optional QK-norm, biases and KV cache."""

  cfg: ModelConfig
  sharder: shd.Sharder | None = None

  def _proj(self, name, x, heads, heads_axis):
    cfg = self.cfg
    w = param(
      self,
      f"{name}_kernel",
      (cfg.hidden_size, heads, cfg.head_dim),
      (shd.EMBED, heads_axis, shd.HEAD_DIM),
    )
    y = _einsum("bld,dnh->blnh", x, w, cfg.compute_dtype)
    y = _plus(
      y,
      lora.update(
        self, name, x, (shd.EMBED,), (heads, cfg.head_dim),
        (heads_axis, shd.HEAD_DIM),
      ),
    )
    if cfg.qkv_bias:
      b = param(
        self,
        f"{name}_bias",
        (heads, cfg.head_dim),
        (heads_axis, shd.HEAD_DIM),
        nn.initializers.zeros,
      )
      y = y + b.astype(y.dtype)[None, None]
    return y

  @nn.compact
  def __call__(self, x_BxLxD, positions_BxL, seen, cache, cache_index):
    cfg = self.cfg
    q = self._proj("q", x_BxLxD, cfg.num_heads, shd.HEADS)
    k = self._proj("k", x_BxLxD, cfg.num_kv_heads, shd.KV_HEADS)
    v = self._proj("v", x_BxLxD, cfg.num_kv_heads, shd.KV_HEADS)
    if cfg.qk_norm:
      q = RMSNorm(cfg, (shd.HEAD_DIM,), name="q_norm")(q)
      k = RMSNorm(cfg, (shd.HEAD_DIM,), name="k_norm")(k)
    inv_freq = rope_inv_freq(cfg)
    q = apply_rope(q, positions_BxL, inv_freq)
    k = apply_rope(k, positions_BxL, inv_freq)
    q = shd.constrain(
      q, (shd.BATCH, shd.LENGTH, shd.HEADS, shd.HEAD_DIM), self.sharder
    )

    scale = cfg.head_dim**-0.5
    if isinstance(cache_index, ragged.PoolStep):
      # A decode step over a slot pool (`kernels.ragged`): `cache` is this
      # layer's index into the read-only pool; the new key and
      # value go back to the caller, which writes all layers at once.
      out = ragged.ragged_attention(
        q[:, 0], k[:, 0], v[:, 0], cache_index, cache["layer"], scale=scale
      )[:, None]
      return self._output(out), {"k": k[:, 0], "v": v[:, 0]}

    new_cache = None
    if cache is not None:
      # Write this call's keys/values at slots [index, index + L) and attend
      # over the whole preallocated cache (static shapes for the decode loop).
      k_all = jax.lax.dynamic_update_slice(
        cache["k"], k.astype(cache["k"].dtype), (0, cache_index, 0, 0)
      )
      v_all = jax.lax.dynamic_update_slice(
        cache["v"], v.astype(cache["v"].dtype), (0, cache_index, 0, 0)
      )
      new_cache = {"k": k_all, "v": v_all}
      k, v = k_all.astype(q.dtype), v_all.astype(q.dtype)

    q_slot_L, kv_valid_BxS = seen
    out = attention.attend(
      q,
      k,
      v,
      q_slot_L,
      kv_valid_BxS,
      impl=cfg.attention_impl,
      scale=scale,
      block_size=cfg.attention_block,
      cached=cache is not None,
      interpret=cfg.pallas_interpret,
      sharder=self.sharder,
    )
    return self._output(out), new_cache

  def _output(self, out_BxLxHxh):
    """The output projection (plus bias) of the attended values."""
    cfg = self.cfg
    w_o = param(
      self,
      "o_kernel",
      (cfg.num_heads, cfg.head_dim, cfg.hidden_size),
      (shd.HEADS, shd.HEAD_DIM, shd.EMBED),
    )
    y = _einsum("blnh,nhd->bld", out_BxLxHxh, w_o, cfg.compute_dtype)
    y = _plus(
      y,
      lora.update(
        self, "o", out_BxLxHxh, (shd.HEADS, shd.HEAD_DIM),
        (cfg.hidden_size,), (shd.EMBED,),
      ),
    )
    if cfg.o_bias:
      b = param(
        self, "o_bias", (cfg.hidden_size,), (shd.EMBED,), nn.initializers.zeros
      )
      y = y + b.astype(y.dtype)[None, None]
    return y


class MLP(nn.Module):
  """SwiGLU feed-forward: down(silu(gate(x)) * up(x))."""

  cfg: ModelConfig
  sharder: shd.Sharder | None = None

  @nn.compact
  def __call__(self, x_BxLxD):
    cfg = self.cfg
    d, f = cfg.hidden_size, cfg.intermediate_size
    w_gate = param(self, "gate_kernel", (d, f), (shd.EMBED, shd.MLP))
    w_up = param(self, "up_kernel", (d, f), (shd.EMBED, shd.MLP))
    w_down = param(self, "down_kernel", (f, d), (shd.MLP, shd.EMBED))
    gate = _einsum(
      "bld,df->blf", x_BxLxD, w_gate, cfg.compute_dtype, jnp.float32
    )
    up = _einsum("bld,df->blf", x_BxLxD, w_up, cfg.compute_dtype, jnp.float32)
    into_f = (x_BxLxD, (shd.EMBED,), (f,), (shd.MLP,))
    gate = _plus(gate, lora.update(self, "gate", *into_f))
    up = _plus(up, lora.update(self, "up", *into_f))
    h = (jax.nn.silu(gate) * up).astype(cfg.compute_dtype)
    h = shd.constrain(h, (shd.BATCH, shd.LENGTH, shd.MLP), self.sharder)
    y = _einsum("blf,fd->bld", h, w_down, cfg.compute_dtype)
    return _plus(
      y, lora.update(self, "down", h, (shd.MLP,), (d,), (shd.EMBED,))
    )


def route(cfg: ModelConfig, x_TxD: jax.Array, w_router_DxE: jax.Array):
  """Top-k softmax routing, as transformers' `Qwen3MoeTopKRouter`.

  The softmax over all experts is taken in float32; the A largest
  probabilities are kept and, with `norm_topk_prob`, renormalised to sum to
  one. Router logits stay float32 (transformers rounds them to the compute
  dtype first, which only matters in bfloat16).

  Returns:
    `(weights_TxA, experts_TxA)`: float32 weights and int32 expert ids.
  """
  logits_TxE = _einsum(
    "td,de->te", x_TxD, w_router_DxE, cfg.compute_dtype, jnp.float32
  )
  probs_TxE = jax.nn.softmax(logits_TxE, axis=-1)
  weights_TxA, experts_TxA = jax.lax.top_k(probs_TxE, cfg.num_experts_per_tok)
  if cfg.norm_topk_prob:
    weights_TxA = weights_TxA / jnp.sum(weights_TxA, axis=-1, keepdims=True)
  return weights_TxA, experts_TxA


def _dense_dispatch(
  cfg, x_TxD, weights_TxA, experts_TxA, w_gate_ExDxF, w_up_ExDxF, w_down_ExFxD
):
  dtype = cfg.compute_dtype
  one_hot_TxAxE = jax.nn.one_hot(
    experts_TxA, cfg.num_experts, dtype=jnp.float32
  )
  combine_TxE = jnp.einsum("tae,ta->te", one_hot_TxAxE, weights_TxA)
  gate_TxExF = _einsum("td,edf->tef", x_TxD, w_gate_ExDxF, dtype, jnp.float32)
  up_TxExF = _einsum("td,edf->tef", x_TxD, w_up_ExDxF, dtype, jnp.float32)
  # Weighting before the (linear) down projection lets one einsum contract
  # experts and F together, never holding a [T, E, D] tensor.
  h_TxExF = jax.nn.silu(gate_TxExF) * up_TxExF * combine_TxE[:, :, None]
  return _einsum("tef,efd->td", h_TxExF, w_down_ExFxD, dtype, jnp.float32)


def _ragged_dispatch(
  cfg, x_TxD, weights_TxA, experts_TxA, w_gate_ExDxF, w_up_ExDxF, w_down_ExFxD
):
  dtype = cfg.compute_dtype
  tokens, active = experts_TxA.shape
  experts_R = experts_TxA.reshape(tokens * active)
  order_R = jnp.argsort(experts_R, stable=True)
  x_RxD = jnp.take(x_TxD, order_R // active, axis=0)
  sizes_E = jnp.bincount(experts_R, length=cfg.num_experts)

  def grouped(lhs, w):
    return jax.lax.ragged_dot(
      lhs.astype(dtype),
      w.astype(dtype),
      sizes_E,
      preferred_element_type=jnp.float32,
    )

  h_RxF = jax.nn.silu(grouped(x_RxD, w_gate_ExDxF)) * grouped(x_RxD, w_up_ExDxF)
  y_RxD = grouped(h_RxF, w_down_ExFxD)
  y_TxAxD = (
    jnp.zeros_like(y_RxD).at[order_R].set(y_RxD).reshape(tokens, active, -1)
  )
  return jnp.einsum("tad,ta->td", y_TxAxD, weights_TxA)


_DISPATCH = {"dense": _dense_dispatch, "ragged": _ragged_dispatch}


class MoE(nn.Module):
  """Qwen3-MoE sparse block: routed SwiGLU experts, stacked weights.

  Parameters: `router_kernel [D, E]`, `gate_kernel`/`up_kernel [E, D, F]`,
  `down_kernel [E, F, D]`. The Switch-style load-balancing loss
  (`router_aux_loss_coef`, `output_router_logits` in transformers) is a
  training-time regulariser and is not computed: a frozen teacher has no use
  for it.
  """

  cfg: ModelConfig

  @nn.compact
  def __call__(self, x_BxLxD):
    cfg = self.cfg
    d, e, f = cfg.hidden_size, cfg.num_experts, cfg.moe_intermediate_size
    w_router = param(self, "router_kernel", (d, e), (shd.EMBED, shd.EXPERT))
    w_gate = param(
      self, "gate_kernel", (e, d, f), (shd.EXPERT, shd.EMBED, shd.MLP)
    )
    w_up = param(self, "up_kernel", (e, d, f), (shd.EXPERT, shd.EMBED, shd.MLP))
    w_down = param(
      self, "down_kernel", (e, f, d), (shd.EXPERT, shd.MLP, shd.EMBED)
    )
    dispatch = _DISPATCH[cfg.resolved_moe_dispatch]

    def block(x_BxCxD):
      batch, chunk, _ = x_BxCxD.shape
      x_TxD = x_BxCxD.reshape(batch * chunk, d)
      weights_TxA, experts_TxA = route(cfg, x_TxD, w_router)
      y_TxD = dispatch(
        cfg, x_TxD, weights_TxA, experts_TxA, w_gate, w_up, w_down
      )
      return y_TxD.reshape(batch, chunk, d).astype(cfg.compute_dtype)

    length = x_BxLxD.shape[1]
    chunk = min(cfg.moe_chunk_size or length, length)
    if chunk == length:
      return block(x_BxLxD)
    # Positions in chunks along the length (each keeps the batch's layout),
    # one after another: the [tokens, E, F] / [tokens * A, F] intermediates
    # follow the chunk, not the sequence.
    pad = -length % chunk
    x = jnp.pad(x_BxLxD, ((0, 0), (0, pad), (0, 0)))
    x_NxBxCxD = jnp.moveaxis(x.reshape(x.shape[0], -1, chunk, d), 1, 0)
    y_NxBxCxD = jax.lax.map(block, x_NxBxCxD)
    y = jnp.moveaxis(y_NxBxCxD, 0, 1).reshape(x.shape)
    return y[:, :length]


class DecoderLayer(nn.Module):
  """Pre-norm block: x + attn(norm(x)), then x + mlp(norm(x)).

  With `moe`, the feed-forward is the sparse `MoE` block (params under
  "moe") instead of the dense `MLP` (params under "mlp").
  """

  cfg: ModelConfig
  sharder: shd.Sharder | None = None
  moe: bool = False

  @nn.compact
  def __call__(self, x_BxLxD, positions_BxL, seen, cache, cache_index):
    cfg = self.cfg
    h = RMSNorm(cfg, (shd.EMBED,), name="input_norm")(x_BxLxD)
    attn, new_cache = Attention(cfg, self.sharder, name="attn")(
      h, positions_BxL, seen, cache, cache_index
    )
    x = x_BxLxD + attn
    h = RMSNorm(cfg, (shd.EMBED,), name="post_attn_norm")(x)
    ffn = (
      MoE(cfg, name="moe") if self.moe else MLP(cfg, self.sharder, name="mlp")
    )
    x = x + ffn(h)
    x = shd.constrain(x, (shd.BATCH, shd.LENGTH, shd.EMBED), self.sharder)
    return x, new_cache
