"""`ModelConfig`: the static description of one decoder-only transformer.

Hashable and immutable, so it is passed to jitted functions as a static
argument. Built from a Hugging Face `config.json` by `rock_jax.models.hf`, or
directly for models trained from scratch.
"""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp

ROPE_TYPES = ("default", "linear", "llama3")
DTYPES = ("float32", "bfloat16", "float16")
MODEL_TYPES = ("qwen3", "qwen2", "llama")
ATTENTION_IMPLS = ("xla", "cudnn")


@dataclasses.dataclass(frozen=True, kw_only=True)
class ModelConfig:
  """Architecture and numerics of a Qwen3 / Qwen2 / Llama-style decoder.

  Attributes mirror the Hugging Face names where one exists. `dtype` is the
  activation (compute) dtype and `param_dtype` the storage dtype of the
  weights; matmuls accumulate in float32 whatever the two are, and norms,
  softmax and logits are computed in float32.
  """
  model_type: str
  vocab_size: int
  hidden_size: int
  intermediate_size: int
  num_layers: int
  num_heads: int
  num_kv_heads: int
  head_dim: int
  rms_norm_eps: float = 1e-6
  rope_theta: float = 10000.0
  rope_type: str = "default"
  rope_factor: float = 1.0
  rope_low_freq_factor: float = 1.0
  rope_high_freq_factor: float = 4.0
  rope_original_max_positions: int = 8192
  max_position_embeddings: int = 32768
  tie_word_embeddings: bool = False
  qkv_bias: bool = False
  o_bias: bool = False
  qk_norm: bool = False
  initializer_range: float = 0.02
  bos_token_id: int | None = None
  eos_token_id: tuple[int, ...] = ()
  pad_token_id: int | None = None
  dtype: str = "float32"
  param_dtype: str = "float32"
  remat: bool = False
  attention_impl: str = "xla"

  def __post_init__(self):
    for name in ("vocab_size", "hidden_size", "intermediate_size",
                 "num_layers", "num_heads", "num_kv_heads", "head_dim"):
      value = getattr(self, name)
      if not isinstance(value, int) or value <= 0:
        raise ValueError(
            f"ModelConfig.{name}={value!r} must be a positive integer")
    if self.model_type not in MODEL_TYPES:
      raise ValueError(
          f"ModelConfig.model_type={self.model_type!r} is not supported; "
          f"supported: {list(MODEL_TYPES)}")
    if self.num_heads % self.num_kv_heads:
      raise ValueError(
          f"ModelConfig.num_heads={self.num_heads} must be a multiple of "
          f"num_kv_heads={self.num_kv_heads}")
    if self.head_dim % 2:
      raise ValueError(
          f"ModelConfig.head_dim={self.head_dim} must be even for RoPE")
    if self.rope_type not in ROPE_TYPES:
      raise ValueError(
          f"ModelConfig.rope_type={self.rope_type!r} is not supported; "
          f"supported: {list(ROPE_TYPES)}")
    for name in ("dtype", "param_dtype"):
      if getattr(self, name) not in DTYPES:
        raise ValueError(
            f"ModelConfig.{name}={getattr(self, name)!r}; allowed: "
            f"{list(DTYPES)}")
    if self.attention_impl not in ATTENTION_IMPLS:
      raise ValueError(
          f"ModelConfig.attention_impl={self.attention_impl!r}; allowed: "
          f"{list(ATTENTION_IMPLS)}")
    if self.rms_norm_eps <= 0:
      raise ValueError(
          f"ModelConfig.rms_norm_eps={self.rms_norm_eps} must be > 0")

  @property
  def compute_dtype(self) -> jnp.dtype:
    return jnp.dtype(self.dtype)

  @property
  def weight_dtype(self) -> jnp.dtype:
    return jnp.dtype(self.param_dtype)

  def replace(self, **changes) -> "ModelConfig":
    """A copy with some fields changed (validated again)."""
    return dataclasses.replace(self, **changes)
