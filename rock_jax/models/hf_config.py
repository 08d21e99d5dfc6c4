"""Hugging Face `config.json` <-> `ModelConfig`.

Reading goes through transformers' `AutoConfig` (no torch needed); anything
the model code does not implement fails with its name.
"""

from __future__ import annotations

import json
import os

from rock_jax import storage
from rock_jax.models.config import MODEL_TYPES, ModelConfig

# Families whose checkpoints carry q/k RMSNorm weights.
_QK_NORM_TYPES = ("qwen3", "qwen3_moe")


def _unsupported(path, what) -> ValueError:
  return ValueError(f"{path}: {what} is not supported by rock_jax")


def _check_supported(hf_config, path) -> None:
  """Raises for a model type or an architecture feature rock_jax lacks."""
  model_type = hf_config.model_type
  if model_type not in MODEL_TYPES:
    raise ValueError(
      f"{path}: model_type {model_type!r} is not supported; supported: "
      f"{list(MODEL_TYPES)}"
    )
  act = getattr(hf_config, "hidden_act", "silu")
  if act != "silu":
    raise _unsupported(path, f"hidden_act={act!r} (only 'silu')")
  if getattr(hf_config, "mlp_bias", False):
    raise _unsupported(path, "mlp_bias=True")
  if getattr(hf_config, "use_sliding_window", False):
    raise _unsupported(path, "use_sliding_window=True")
  layer_types = set(getattr(hf_config, "layer_types", None) or ())
  if layer_types - {"full_attention"}:
    raise _unsupported(path, f"layer_types {sorted(layer_types)}")


def _rope_fields(hf_config, path) -> dict:
  """The `ModelConfig` RoPE fields; raises for a scaling rock_jax lacks."""
  rope = dict(getattr(hf_config, "rope_parameters", None) or {})
  rope_type = rope.get("rope_type", rope.get("type", "default"))
  if rope_type not in ("default", "linear", "llama3"):
    raise _unsupported(path, f"rope_parameters.rope_type={rope_type!r}")
  if rope.get("partial_rotary_factor", 1.0) != 1.0:
    raise _unsupported(path, "partial_rotary_factor != 1")
  return dict(
    rope_theta=float(rope.get("rope_theta", 10000.0)),
    rope_type=rope_type,
    rope_factor=float(rope.get("factor", 1.0)),
    rope_low_freq_factor=float(rope.get("low_freq_factor", 1.0)),
    rope_high_freq_factor=float(rope.get("high_freq_factor", 4.0)),
    rope_original_max_positions=int(
      rope.get("original_max_position_embeddings", 8192)
    ),
  )


def _moe_fields(hf_config) -> dict:
  """The `ModelConfig` mixture-of-experts fields (none for dense models)."""
  if hf_config.model_type != "qwen3_moe":
    return {}
  return dict(
    num_experts=hf_config.num_experts,
    num_experts_per_tok=hf_config.num_experts_per_tok,
    moe_intermediate_size=hf_config.moe_intermediate_size,
    norm_topk_prob=bool(hf_config.norm_topk_prob),
    decoder_sparse_step=hf_config.decoder_sparse_step,
    mlp_only_layers=tuple(sorted(set(hf_config.mlp_only_layers or ()))),
  )


def _eos_ids(eos) -> tuple[int, ...]:
  """Hugging Face's `eos_token_id` (None, one id or a list) as a tuple."""
  if eos is None:
    return ()
  if isinstance(eos, (list, tuple)):
    return tuple(eos)
  return (int(eos),)


def config_from_hf(
  hf_config,
  path: str = "config",
  dtype: str = "float32",
  param_dtype: str | None = None,
) -> ModelConfig:
  """Builds a `ModelConfig` from a transformers `PretrainedConfig`.

  Raises ValueError naming any model type or feature the model code lacks.
  """
  _check_supported(hf_config, path)
  rope = _rope_fields(hf_config, path)
  moe = _moe_fields(hf_config)
  model_type = hf_config.model_type
  heads = hf_config.num_attention_heads
  head_dim = getattr(hf_config, "head_dim", None) or (
    hf_config.hidden_size // heads
  )
  bias = bool(getattr(hf_config, "attention_bias", False))
  return ModelConfig(
    model_type=model_type,
    vocab_size=hf_config.vocab_size,
    hidden_size=hf_config.hidden_size,
    intermediate_size=hf_config.intermediate_size,
    num_layers=hf_config.num_hidden_layers,
    num_heads=heads,
    num_kv_heads=getattr(hf_config, "num_key_value_heads", None) or heads,
    head_dim=head_dim,
    rms_norm_eps=float(hf_config.rms_norm_eps),
    max_position_embeddings=int(hf_config.max_position_embeddings),
    tie_word_embeddings=bool(hf_config.tie_word_embeddings),
    qkv_bias=True if model_type == "qwen2" else bias,
    o_bias=False if model_type == "qwen2" else bias,
    qk_norm=model_type in _QK_NORM_TYPES,
    initializer_range=float(getattr(hf_config, "initializer_range", 0.02)),
    bos_token_id=hf_config.bos_token_id,
    eos_token_id=_eos_ids(hf_config.eos_token_id),
    pad_token_id=getattr(hf_config, "pad_token_id", None),
    dtype=dtype,
    param_dtype=param_dtype or dtype,
    **rope,
    **moe,
  )


def load_config(
  path: str, dtype: str = "float32", param_dtype: str | None = None
) -> ModelConfig:
  """Reads `path/config.json` (a folder holding only it is enough; a
  `gs://` URL is mirrored first).

  The file is checked before transformers reads it: transformers fills a
  missing size with its own default, which would only surface later as a
  shape mismatch against the weights.
  """
  import transformers  # Deferred: importing it costs about a second.

  if storage.is_url(path):
    storage.check_readable(storage.join(path, "config.json"), "model folder")
    path = storage.mirror(path)
  config_file = os.path.join(path, "config.json")
  if not os.path.isdir(path):
    raise FileNotFoundError(
      f"model folder {path!r} does not exist; expected a Hugging Face model "
      "folder with a config.json (and *.safetensors weights)"
    )
  if not os.path.isfile(config_file):
    raise FileNotFoundError(
      f"{config_file} not found: expected a Hugging "
      "Face model folder with a config.json"
    )
  _check_raw(read_json(config_file, "the model's config.json"), config_file)
  hf_config = transformers.AutoConfig.from_pretrained(path)
  return config_from_hf(hf_config, config_file, dtype, param_dtype)


def read_json(file: str, source: str) -> dict:
  """Parses a JSON object file; the errors name it and say what to do.

  Args:
    file: the path.
    source: where a good copy comes from (for the hint).
  """
  try:
    with open(file, encoding="utf-8") as fh:
      data = json.load(fh)
  except PermissionError as e:
    raise PermissionError(
      f"{file} is not readable ({e.strerror}); give this user read access "
      f"(e.g. chmod a+r {file})"
    ) from e
  except UnicodeDecodeError as e:
    raise ValueError(
      f"{file} is not UTF-8 text (byte {e.start}); it is corrupt: "
      f"re-download {source}"
    ) from e
  except json.JSONDecodeError as e:
    raise ValueError(
      f"{file} is not valid JSON: {e.msg} (line {e.lineno}, column "
      f"{e.colno}); fix it or re-download {source}"
    ) from e
  if not isinstance(data, dict):
    raise ValueError(
      f"{file} holds a JSON {type(data).__name__}, not an object; "
      f"re-download {source}"
    )
  return data


_ALIASES = {"num_experts": ("num_local_experts",)}


def _required_keys(model_type: str) -> tuple[str, ...]:
  """The keys that fix parameter shapes, so that no default may fill them."""
  common = (
    "vocab_size",
    "hidden_size",
    "num_hidden_layers",
    "num_attention_heads",
  )
  if model_type == "qwen3_moe":
    return common + (
      "num_experts",
      "num_experts_per_tok",
      "moe_intermediate_size",
    )
  return common + ("intermediate_size",)


def _check_raw(raw: dict, config_file: str) -> None:
  """Raises for a missing or unsupported model_type or a missing size."""
  model_type = raw.get("model_type")
  if model_type is None:
    raise ValueError(
      f"{config_file} has no 'model_type'; add the model's family, one of "
      f"{list(MODEL_TYPES)} (copy config.json from the original model)"
    )
  if model_type not in MODEL_TYPES:
    raise ValueError(
      f"{config_file}: model_type {model_type!r} is not supported; "
      f"supported: {list(MODEL_TYPES)}"
    )
  for key in _required_keys(model_type):
    # transformers 5 writes some keys under another name (its attribute_map).
    key = next((k for k in (key, *_ALIASES.get(key, ())) if k in raw), key)
    if key not in raw:
      raise ValueError(
        f"{config_file} has no {key!r}; add it (copy config.json from the "
        "original model): without it transformers silently uses its own "
        "default, which does not fit these weights"
      )
    value = raw[key]
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
      raise ValueError(
        f"{config_file}: {key}={value!r} must be a positive integer (a JSON "
        "number without quotes)"
      )


def to_hf_config(cfg: ModelConfig):
  """The transformers config object that describes `cfg`."""
  import transformers

  if cfg.model_type == "qwen2" and not (cfg.qkv_bias and not cfg.o_bias):
    raise ValueError(
      "qwen2 checkpoints have q/k/v biases and no o bias; "
      f"got qkv_bias={cfg.qkv_bias}, o_bias={cfg.o_bias}"
    )
  if cfg.model_type != "qwen2" and cfg.qkv_bias != cfg.o_bias:
    raise ValueError(
      f"{cfg.model_type} has one attention_bias flag for "
      f"q/k/v/o; got qkv_bias={cfg.qkv_bias}, "
      f"o_bias={cfg.o_bias}"
    )
  if cfg.qk_norm != (cfg.model_type in _QK_NORM_TYPES):
    raise ValueError(
      f"qk_norm={cfg.qk_norm} cannot be expressed as a "
      f"{cfg.model_type!r} checkpoint"
    )
  rope = {"rope_type": cfg.rope_type, "rope_theta": cfg.rope_theta}
  if cfg.rope_type in ("linear", "llama3"):
    rope["factor"] = cfg.rope_factor
  if cfg.rope_type == "llama3":
    rope.update(
      low_freq_factor=cfg.rope_low_freq_factor,
      high_freq_factor=cfg.rope_high_freq_factor,
      original_max_position_embeddings=cfg.rope_original_max_positions,
    )
  eos = list(cfg.eos_token_id)
  kwargs = dict(
    vocab_size=cfg.vocab_size,
    hidden_size=cfg.hidden_size,
    intermediate_size=cfg.intermediate_size,
    num_hidden_layers=cfg.num_layers,
    num_attention_heads=cfg.num_heads,
    num_key_value_heads=cfg.num_kv_heads,
    head_dim=cfg.head_dim,
    rms_norm_eps=cfg.rms_norm_eps,
    rope_parameters=rope,
    max_position_embeddings=cfg.max_position_embeddings,
    tie_word_embeddings=cfg.tie_word_embeddings,
    hidden_act="silu",
    initializer_range=cfg.initializer_range,
    bos_token_id=cfg.bos_token_id,
    eos_token_id=eos[0] if len(eos) == 1 else (eos or None),
    pad_token_id=cfg.pad_token_id,
    dtype=cfg.param_dtype,
    architectures=[_ARCHITECTURES[cfg.model_type]],
  )
  if cfg.model_type != "qwen2":
    kwargs["attention_bias"] = cfg.qkv_bias
  if cfg.model_type == "qwen3_moe":
    kwargs.update(
      num_experts=cfg.num_experts,
      num_experts_per_tok=cfg.num_experts_per_tok,
      moe_intermediate_size=cfg.moe_intermediate_size,
      norm_topk_prob=cfg.norm_topk_prob,
      decoder_sparse_step=cfg.decoder_sparse_step,
      mlp_only_layers=list(cfg.mlp_only_layers),
    )
  return transformers.AutoConfig.for_model(cfg.model_type, **kwargs)


_ARCHITECTURES = {
  "qwen3": "Qwen3ForCausalLM",
  "qwen2": "Qwen2ForCausalLM",
  "llama": "LlamaForCausalLM",
  "qwen3_moe": "Qwen3MoeForCausalLM",
}
