"""The model family (Qwen2/3, Llama, Qwen3-MoE), pure-functional.

Parameters are plain nested dicts of arrays; every function is jit-able with
`cfg` (and the optional `sharder`) static.

Modules:
  config       `ModelConfig`: architecture and execution settings
  layers       attention (GQA, RoPE, q/k norm), SwiGLU and MoE blocks
  transformer  the decoder stack, scanned over layers; `KVCache`
  attention    causal attention by kernel name (`kernels/`: one per file)
  model        apply, init, decode_step, the cache, shapes and layouts
  hf           Hugging Face folders in and out (`hf_config`, `hf_params`)
  lora         low-rank adapters: spec, split/combine, merge
  peft_adapter adapters in and out as PEFT folders
"""

from rock_jax.models import hf, lora, peft_adapter
from rock_jax.models.config import ModelConfig
from rock_jax.models.kernels.ragged import PoolStep
from rock_jax.models.model import (
  POOL_LOGICAL,
  active_param_count,
  apply,
  cache_shardings,
  decode_step,
  hidden_states,
  init,
  init_adapters,
  init_cache,
  lm_head,
  param_count,
  param_logical_axes,
  param_shapes,
  param_shardings,
)
from rock_jax.models.transformer import KVCache

__all__ = [
  "ModelConfig",
  "KVCache",
  "apply",
  "decode_step",
  "PoolStep",
  "POOL_LOGICAL",
  "hidden_states",
  "lm_head",
  "init",
  "init_adapters",
  "init_cache",
  "param_shapes",
  "param_logical_axes",
  "param_shardings",
  "cache_shardings",
  "param_count",
  "active_param_count",
  "hf",
  "lora",
  "peft_adapter",
]
