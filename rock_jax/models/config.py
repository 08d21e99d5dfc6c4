"""`ModelConfig`: the static description of one decoder-only transformer.

Hashable and immutable, so it is passed to jitted functions as a static
argument. Built from a Hugging Face `config.json` by `rock_jax.models.hf`, or
directly for models trained from scratch.

Mixture-of-experts (`model_type="qwen3_moe"`): layer i has a sparse MoE block
unless `i in mlp_only_layers` or `(i + 1) % decoder_sparse_step != 0`, the
Hugging Face rule; other layers keep a dense MLP of `intermediate_size`.
"""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp

from rock_jax.models.attention import IMPLS as ATTENTION_IMPLS
from rock_jax.models.lora import LoraSpec

ROPE_TYPES = ("default", "linear", "llama3")
DTYPES = ("float32", "bfloat16", "float16")
MODEL_TYPES = ("qwen3", "qwen2", "llama", "qwen3_moe")
# How tokens reach their experts (`rock_jax.models.layers.MoE`): "dense"
# runs every expert on every token and weights the results; "ragged" sorts the
# token-expert pairs by expert and runs grouped matmuls; "auto" picks "dense"
# when it costs at most `_DENSE_MAX_WASTE` times the routed FLOPs.
MOE_DISPATCHES = ("auto", "dense", "ragged")
_DENSE_MAX_WASTE = 4


@dataclasses.dataclass(frozen=True, kw_only=True)
class ModelConfig:
  """Architecture and numerics of a Qwen3 / Qwen2 / Llama / Qwen3-MoE decoder.

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
  # Decoder layers per iteration of each stack's layer loop (lax.scan's
  # unroll); 0: the stack unrolled whole, no loop. The parameters stay
  # stacked either way.
  scan_unroll: int = 1
  # `rock_jax.models.attention`: "auto" is linear-memory on every backend
  # (splash on TPU, cuDNN on GPU, blockwise elsewhere).
  attention_impl: str = "auto"
  # Query/key tile of the blockwise and splash kernels.
  attention_block: int = 512
  # Pallas kernels in interpret mode (tests of "splash" off TPU).
  pallas_interpret: bool = False
  num_experts: int = 0
  num_experts_per_tok: int = 0
  moe_intermediate_size: int = 0
  norm_topk_prob: bool = False
  decoder_sparse_step: int = 1
  mlp_only_layers: tuple[int, ...] = ()
  moe_dispatch: str = "auto"
  # Positions per MoE dispatch (0: the whole sequence): long sequences run
  # their experts chunk by chunk, so the routed intermediates stay bounded.
  moe_chunk_size: int = 0
  # Low-rank adapters on the projections (`rock_jax.models.lora`); None: a
  # plain model.
  lora: LoraSpec | None = None

  def __post_init__(self):
    self._check_positive_ints(
      "vocab_size",
      "hidden_size",
      "intermediate_size",
      "num_layers",
      "num_heads",
      "num_kv_heads",
      "head_dim",
      "attention_block",
    )
    if not isinstance(self.scan_unroll, int) or self.scan_unroll < 0:
      raise ValueError(
        f"ModelConfig.scan_unroll={self.scan_unroll!r} must be an integer "
        ">= 0 (0: every stack unrolled whole)"
      )
    if self.model_type not in MODEL_TYPES:
      raise ValueError(
        f"ModelConfig.model_type={self.model_type!r} is not supported; "
        f"supported: {list(MODEL_TYPES)}"
      )
    if self.num_heads % self.num_kv_heads:
      raise ValueError(
        f"ModelConfig.num_heads={self.num_heads} must be a multiple of "
        f"num_kv_heads={self.num_kv_heads}"
      )
    if self.head_dim % 2:
      raise ValueError(
        f"ModelConfig.head_dim={self.head_dim} must be even for RoPE"
      )
    if self.rope_type not in ROPE_TYPES:
      raise ValueError(
        f"ModelConfig.rope_type={self.rope_type!r} is not supported; "
        f"supported: {list(ROPE_TYPES)}"
      )
    for name in ("dtype", "param_dtype"):
      if getattr(self, name) not in DTYPES:
        raise ValueError(
          f"ModelConfig.{name}={getattr(self, name)!r}; allowed: {list(DTYPES)}"
        )
    if self.attention_impl not in ATTENTION_IMPLS:
      raise ValueError(
        f"ModelConfig.attention_impl={self.attention_impl!r}; allowed: "
        f"{list(ATTENTION_IMPLS)}"
      )
    if self.rms_norm_eps <= 0:
      raise ValueError(
        f"ModelConfig.rms_norm_eps={self.rms_norm_eps} must be > 0"
      )
    self._check_moe()
    self._check_lora()

  def _check_lora(self):
    """Raises if a LoRA target names a projection this model lacks (the
    dense MLP's, on a model whose every layer is a mixture of experts)."""
    if self.lora is None:
      return
    mlp = {"gate", "up", "down"} & set(self.lora.targets)
    if mlp and not any(not moe for *_, moe in self.layer_runs):
      raise ValueError(
        f"lora targets {sorted(mlp)} match no projection of this "
        f"{self.model_type!r} model: every layer is a mixture of experts, "
        "whose experts take no adapters; target q, k, v, o"
      )

  def _check_positive_ints(self, *names: str, needed_by: str = ""):
    """Raises unless every named field is a positive int."""
    for name in names:
      value = getattr(self, name)
      if not isinstance(value, int) or value <= 0:
        raise ValueError(
          f"ModelConfig.{name}={value!r} must be a positive integer{needed_by}"
        )

  def _check_moe(self):
    if self.moe_chunk_size < 0:
      raise ValueError(
        f"ModelConfig.moe_chunk_size={self.moe_chunk_size} must be >= 0 "
        "(0: the whole sequence)"
      )
    if self.model_type != "qwen3_moe":
      if self.num_experts:
        raise ValueError(
          f"ModelConfig.num_experts={self.num_experts} needs "
          f"model_type='qwen3_moe' (got {self.model_type!r})"
        )
      return
    self._check_positive_ints(
      "num_experts",
      "num_experts_per_tok",
      "moe_intermediate_size",
      "decoder_sparse_step",
      needed_by=" for model_type='qwen3_moe'",
    )
    if self.num_experts_per_tok > self.num_experts:
      raise ValueError(
        f"ModelConfig.num_experts_per_tok={self.num_experts_per_tok} must "
        f"be at most num_experts={self.num_experts}"
      )
    layers = self.mlp_only_layers
    if (
      not isinstance(layers, tuple)
      or list(layers) != sorted(set(layers))
      or any(not 0 <= i < self.num_layers for i in layers)
    ):
      raise ValueError(
        f"ModelConfig.mlp_only_layers={layers!r} must be a sorted tuple of "
        f"distinct layer indices in [0, {self.num_layers})"
      )
    if self.moe_dispatch not in MOE_DISPATCHES:
      raise ValueError(
        f"ModelConfig.moe_dispatch={self.moe_dispatch!r}; allowed: "
        f"{list(MOE_DISPATCHES)}"
      )

  def is_moe_layer(self, i: int) -> bool:
    """Whether layer `i` has a sparse MoE block (the Hugging Face rule)."""
    return (
      self.model_type == "qwen3_moe"
      and i not in self.mlp_only_layers
      and (i + 1) % self.decoder_sparse_step == 0
    )

  @property
  def layer_runs(self) -> tuple[tuple[str, int, int, bool], ...]:
    """Maximal runs of consecutive layers of one kind.

    Each run `(name, start, count, moe)` is one scanned parameter stack: the
    only run of a model is named "layers" (every dense model), otherwise the
    run starting at layer s is "layers_{s}".
    """
    runs = []
    for i in range(self.num_layers):
      moe = self.is_moe_layer(i)
      if runs and runs[-1][2] == moe:
        start, count, _ = runs[-1]
        runs[-1] = (start, count + 1, moe)
      else:
        runs.append((i, 1, moe))
    if len(runs) == 1:
      return (("layers",) + runs[0],)
    return tuple((f"layers_{run[0]}",) + run for run in runs)

  @property
  def resolved_moe_dispatch(self) -> str:
    """`moe_dispatch` with "auto" resolved for this expert count."""
    if self.moe_dispatch != "auto":
      return self.moe_dispatch
    waste = self.num_experts / self.num_experts_per_tok
    return "dense" if waste <= _DENSE_MAX_WASTE else "ragged"

  @property
  def compute_dtype(self) -> jnp.dtype:
    return jnp.dtype(self.dtype)

  @property
  def weight_dtype(self) -> jnp.dtype:
    return jnp.dtype(self.param_dtype)

  def replace(self, **changes) -> "ModelConfig":
    """A copy with some fields changed (validated again)."""
    return dataclasses.replace(self, **changes)
