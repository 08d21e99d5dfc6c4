"""Transformer building blocks: RMSNorm, RoPE, GQA attention with KV cache, MLP.

Legend: B batch, L query length, S key/cache length, D model, H query heads,
K kv heads, h head dim, F MLP hidden. Parameters carry logical axis names
only (`rock_jax.sharding`); which mesh axes they map to is decided by config.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from rock_jax import sharding as shd
from rock_jax.models.config import ModelConfig


def _param(module: nn.Module, name: str, shape, logical, init=None):
  cfg = module.cfg
  init = init or nn.initializers.normal(cfg.initializer_range)
  return module.param(
      name, nn.with_logical_partitioning(init, logical), shape,
      cfg.weight_dtype)


def _einsum(spec: str, x: jax.Array, w: jax.Array, dtype,
            out_dtype=None) -> jax.Array:
  # Operands in the compute dtype, accumulation in float32 even for bfloat16
  # operands; the result is stored in `out_dtype` (default: compute dtype).
  out = jnp.einsum(spec, x.astype(dtype), w.astype(dtype),
                   preferred_element_type=jnp.float32)
  return out.astype(out_dtype or dtype)


class RMSNorm(nn.Module):
  """Root-mean-square norm over the last axis, computed in float32."""
  cfg: ModelConfig
  logical: tuple

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    scale = _param(self, "scale", (x.shape[-1],), self.logical,
                   nn.initializers.ones)
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


def apply_rope(x_BxLxNxh: jax.Array, positions_BxL: jax.Array,
               inv_freq: np.ndarray) -> jax.Array:
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
    w = _param(self, f"{name}_kernel", (cfg.hidden_size, heads, cfg.head_dim),
               (shd.EMBED, heads_axis, shd.HEAD_DIM))
    y = _einsum("bld,dnh->blnh", x, w, cfg.compute_dtype)
    if cfg.qkv_bias:
      b = _param(self, f"{name}_bias", (heads, cfg.head_dim),
                 (heads_axis, shd.HEAD_DIM), nn.initializers.zeros)
      y = y + b.astype(y.dtype)[None, None]
    return y

  @nn.compact
  def __call__(self, x_BxLxD, positions_BxL, mask_BxLxS, cache, cache_index):
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
    q = shd.constrain(q, (shd.BATCH, shd.LENGTH, shd.HEADS, shd.HEAD_DIM),
                      self.sharder)

    new_cache = None
    if cache is not None:
      # Write this call's keys/values at slots [index, index + L) and attend
      # over the whole preallocated cache (static shapes for the decode loop).
      k_all = jax.lax.dynamic_update_slice(
          cache["k"], k.astype(cache["k"].dtype), (0, cache_index, 0, 0))
      v_all = jax.lax.dynamic_update_slice(
          cache["v"], v.astype(cache["v"].dtype), (0, cache_index, 0, 0))
      new_cache = {"k": k_all, "v": v_all}
      k, v = k_all.astype(q.dtype), v_all.astype(q.dtype)

    out = jax.nn.dot_product_attention(
        q, k, v, mask=mask_BxLxS[:, None, :, :],
        scale=cfg.head_dim ** -0.5,
        implementation=None if cfg.attention_impl == "xla" else "cudnn")
    w_o = _param(self, "o_kernel", (cfg.num_heads, cfg.head_dim,
                                    cfg.hidden_size),
                 (shd.HEADS, shd.HEAD_DIM, shd.EMBED))
    y = _einsum("blnh,nhd->bld", out, w_o, cfg.compute_dtype)
    if cfg.o_bias:
      b = _param(self, "o_bias", (cfg.hidden_size,), (shd.EMBED,),
                 nn.initializers.zeros)
      y = y + b.astype(y.dtype)[None, None]
    return y, new_cache


class MLP(nn.Module):
  """SwiGLU feed-forward: down(silu(gate(x)) * up(x))."""
  cfg: ModelConfig
  sharder: shd.Sharder | None = None

  @nn.compact
  def __call__(self, x_BxLxD):
    cfg = self.cfg
    d, f = cfg.hidden_size, cfg.intermediate_size
    w_gate = _param(self, "gate_kernel", (d, f), (shd.EMBED, shd.MLP))
    w_up = _param(self, "up_kernel", (d, f), (shd.EMBED, shd.MLP))
    w_down = _param(self, "down_kernel", (f, d), (shd.MLP, shd.EMBED))
    gate = _einsum("bld,df->blf", x_BxLxD, w_gate, cfg.compute_dtype,
                   jnp.float32)
    up = _einsum("bld,df->blf", x_BxLxD, w_up, cfg.compute_dtype, jnp.float32)
    h = (jax.nn.silu(gate) * up).astype(cfg.compute_dtype)
    h = shd.constrain(h, (shd.BATCH, shd.LENGTH, shd.MLP), self.sharder)
    return _einsum("blf,fd->bld", h, w_down, cfg.compute_dtype)


class DecoderLayer(nn.Module):
  """Pre-norm block: x + attn(norm(x)), then x + mlp(norm(x))."""
  cfg: ModelConfig
  sharder: shd.Sharder | None = None

  @nn.compact
  def __call__(self, x_BxLxD, positions_BxL, mask_BxLxS, cache, cache_index):
    cfg = self.cfg
    h = RMSNorm(cfg, (shd.EMBED,), name="input_norm")(x_BxLxD)
    attn, new_cache = Attention(cfg, self.sharder, name="attn")(
        h, positions_BxL, mask_BxLxS, cache, cache_index)
    x = x_BxLxD + attn
    h = RMSNorm(cfg, (shd.EMBED,), name="post_attn_norm")(x)
    x = x + MLP(cfg, self.sharder, name="mlp")(h)
    x = shd.constrain(x, (shd.BATCH, shd.LENGTH, shd.EMBED), self.sharder)
    return x, new_cache
