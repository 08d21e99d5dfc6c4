"""Hugging Face checkpoints in and out: `config.json` + safetensors <-> params.

Loading never imports torch and never builds a full host copy of the model:
each parameter is assembled on its own, straight into its target sharding,
and released before the next. Saving writes files that
`transformers.AutoModelForCausalLM.from_pretrained` loads.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
import safetensors
import safetensors.numpy
from jax.experimental import multihost_utils

from rock_jax import models
from rock_jax import sharding as shd
from rock_jax.models.config import MODEL_TYPES, ModelConfig

INDEX_FILE = "model.safetensors.index.json"
# Buffers some exporters write that carry no weights.
_IGNORED_SUFFIXES = ("rotary_emb.inv_freq",)


# Families whose checkpoints carry q/k RMSNorm weights.
_QK_NORM_TYPES = ("qwen3", "qwen3_moe")


# A key of the 3-D expert layout (see `_moe_specs`); its presence switches
# loading from per-expert tensors to that layout.
_FUSED_SUFFIX = ".mlp.experts.gate_up_proj"


def _unsupported(path, what) -> ValueError:
  return ValueError(f"{path}: {what} is not supported by rock_jax")


def config_from_hf(
  hf_config,
  path: str = "config",
  dtype: str = "float32",
  param_dtype: str | None = None,
) -> ModelConfig:
  """Builds a `ModelConfig` from a transformers `PretrainedConfig`.

  Raises ValueError naming any model type or feature the model code lacks.
  """
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
  rope = dict(getattr(hf_config, "rope_parameters", None) or {})
  rope_type = rope.get("rope_type", rope.get("type", "default"))
  if rope_type not in ("default", "linear", "llama3"):
    raise _unsupported(path, f"rope_parameters.rope_type={rope_type!r}")
  if rope.get("partial_rotary_factor", 1.0) != 1.0:
    raise _unsupported(path, "partial_rotary_factor != 1")

  moe = {}
  if model_type == "qwen3_moe":
    moe = dict(
      num_experts=hf_config.num_experts,
      num_experts_per_tok=hf_config.num_experts_per_tok,
      moe_intermediate_size=hf_config.moe_intermediate_size,
      norm_topk_prob=bool(hf_config.norm_topk_prob),
      decoder_sparse_step=hf_config.decoder_sparse_step,
      mlp_only_layers=tuple(sorted(set(hf_config.mlp_only_layers or ()))),
    )
  heads = hf_config.num_attention_heads
  head_dim = getattr(hf_config, "head_dim", None) or (
    hf_config.hidden_size // heads
  )
  bias = bool(getattr(hf_config, "attention_bias", False))
  eos = hf_config.eos_token_id
  eos = (
    ()
    if eos is None
    else tuple(eos)
    if isinstance(eos, (list, tuple))
    else (int(eos),)
  )
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
    rope_theta=float(rope.get("rope_theta", 10000.0)),
    rope_type=rope_type,
    rope_factor=float(rope.get("factor", 1.0)),
    rope_low_freq_factor=float(rope.get("low_freq_factor", 1.0)),
    rope_high_freq_factor=float(rope.get("high_freq_factor", 4.0)),
    rope_original_max_positions=int(
      rope.get("original_max_position_embeddings", 8192)
    ),
    max_position_embeddings=int(hf_config.max_position_embeddings),
    tie_word_embeddings=bool(hf_config.tie_word_embeddings),
    qkv_bias=True if model_type == "qwen2" else bias,
    o_bias=False if model_type == "qwen2" else bias,
    qk_norm=model_type in _QK_NORM_TYPES,
    initializer_range=float(getattr(hf_config, "initializer_range", 0.02)),
    bos_token_id=hf_config.bos_token_id,
    eos_token_id=eos,
    pad_token_id=getattr(hf_config, "pad_token_id", None),
    dtype=dtype,
    param_dtype=param_dtype or dtype,
    **moe,
  )


def load_config(
  path: str, dtype: str = "float32", param_dtype: str | None = None
) -> ModelConfig:
  """Reads `path/config.json` (a folder holding only it is enough)."""
  import transformers  # Deferred: importing it costs about a second.

  config_file = os.path.join(path, "config.json")
  if not os.path.isfile(config_file):
    raise FileNotFoundError(
      f"{config_file} not found: expected a Hugging "
      "Face model folder with a config.json"
    )
  hf_config = transformers.AutoConfig.from_pretrained(path)
  return config_from_hf(hf_config, config_file, dtype, param_dtype)


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


@dataclasses.dataclass(frozen=True)
class _Entry:
  """One parameter: its path in our tree, its HF key(s) and the transforms.

  A per-layer parameter stacks the HF tensors of `layers` on axis 0 ("{i}" in
  `hf_key`); a per-expert one also stacks `experts` tensors on axis 1 ("{e}").
  """

  path: tuple[str, ...]
  hf_key: str
  hf_shape: tuple[int, ...]
  to_ours: Callable[[np.ndarray], np.ndarray]
  to_hf: Callable[[np.ndarray], np.ndarray] | None  # None: read-only layout
  layers: tuple[int, ...] = ()
  experts: int = 0

  def tensors(self) -> list[tuple[str, tuple[int, ...]]]:
    """`(hf_key, index into our parameter)` for each HF tensor."""
    if not self.layers:
      return [(self.hf_key, ())]
    if not self.experts:
      return [
        (self.hf_key.format(i=i), (j,)) for j, i in enumerate(self.layers)
      ]
    return [
      (self.hf_key.format(i=i, e=e), (j, e))
      for j, i in enumerate(self.layers)
      for e in range(self.experts)
    ]


def _ident(w: np.ndarray) -> np.ndarray:
  return w


def _entries(cfg: ModelConfig, fused_experts: bool = False) -> list[_Entry]:
  """The parameter table; `fused_experts` reads experts as 3-D tensors.

  Per-layer parameters come from specs `(path in one layer, HF key after
  "model.layers.{i}.", HF shape, to_ours, to_hf[, experts])`, repeated for
  each run of layers (`ModelConfig.layer_runs`).
  """
  d = cfg.hidden_size
  ident = _ident
  out = [
    _Entry(
      ("embedding",),
      "model.embed_tokens.weight",
      (cfg.vocab_size, d),
      ident,
      ident,
    ),
    _Entry(("final_norm", "scale"), "model.norm.weight", (d,), ident, ident),
  ]
  if not cfg.tie_word_embeddings:
    out.append(
      _Entry(
        ("lm_head",),
        "lm_head.weight",
        (cfg.vocab_size, d),
        np.transpose,
        np.transpose,
      )
    )
  for name, start, count, moe in cfg.layer_runs:
    layers = tuple(range(start, start + count))
    specs = _layer_specs(cfg) + (
      _moe_specs(cfg, fused_experts) if moe else _mlp_specs(cfg)
    )
    for path, key, shape, to_ours, to_hf, *experts in specs:
      out.append(
        _Entry(
          (name,) + path,
          "model.layers.{i}." + key,
          shape,
          to_ours,
          to_hf,
          layers,
          *experts,
        )
      )
  return out


def _layer_specs(cfg: ModelConfig) -> list[tuple]:
  # Attention and the two norms.
  d, h = cfg.hidden_size, cfg.head_dim
  nq, nk = cfg.num_heads, cfg.num_kv_heads
  ident = _ident
  out = []
  for ours, theirs in (
    ("input_norm", "input_layernorm"),
    ("post_attn_norm", "post_attention_layernorm"),
  ):
    out.append(((ours, "scale"), theirs + ".weight", (d,), ident, ident))
  for name, heads in (("q", nq), ("k", nk), ("v", nk)):
    # Torch Linear stores [out, in]; ours is [in, heads, head_dim].
    out.append(
      (
        ("attn", f"{name}_kernel"),
        f"self_attn.{name}_proj.weight",
        (heads * h, d),
        lambda w, n=heads: w.T.reshape(d, n, h),
        lambda w, n=heads: w.reshape(d, n * h).T,
      )
    )
    if cfg.qkv_bias:
      out.append(
        (
          ("attn", f"{name}_bias"),
          f"self_attn.{name}_proj.bias",
          (heads * h,),
          lambda w, n=heads: w.reshape(n, h),
          lambda w: w.reshape(-1),
        )
      )
  out.append(
    (
      ("attn", "o_kernel"),
      "self_attn.o_proj.weight",
      (d, nq * h),
      lambda w: w.T.reshape(nq, h, d),
      lambda w: w.reshape(nq * h, d).T,
    )
  )
  if cfg.o_bias:
    out.append(
      (("attn", "o_bias"), "self_attn.o_proj.bias", (d,), ident, ident)
    )
  if cfg.qk_norm:
    for name in ("q_norm", "k_norm"):
      out.append(
        (
          ("attn", name, "scale"),
          f"self_attn.{name}.weight",
          (h,),
          ident,
          ident,
        )
      )
  return out


def _mlp_specs(cfg: ModelConfig) -> list[tuple]:
  d, f = cfg.hidden_size, cfg.intermediate_size
  return [
    (
      ("mlp", f"{name}_kernel"),
      f"mlp.{name}_proj.weight",
      shape,
      np.transpose,
      np.transpose,
    )
    for name, shape in (("gate", (f, d)), ("up", (f, d)), ("down", (d, f)))
  ]


def _moe_specs(cfg: ModelConfig, fused: bool) -> list[tuple]:
  d, e, f = cfg.hidden_size, cfg.num_experts, cfg.moe_intermediate_size
  out = [
    (
      ("moe", "router_kernel"),
      "mlp.gate.weight",
      (e, d),
      np.transpose,
      np.transpose,
    )
  ]
  if not fused:
    # One [out, in] tensor per expert, as transformers writes and the hub
    # checkpoints store them.
    out += [
      (
        ("moe", f"{name}_kernel"),
        f"mlp.experts.{{e}}.{name}_proj.weight",
        shape,
        np.transpose,
        np.transpose,
        e,
      )
      for name, shape in (("gate", (f, d)), ("up", (f, d)), ("down", (d, f)))
    ]
    return out
  # transformers' in-memory layout (`Qwen3MoeExperts`): gate and up
  # concatenated on the output axis, [E, 2F, D], and down [E, D, F].
  swap = lambda w: np.swapaxes(w, 1, 2)
  return out + [
    (
      ("moe", "gate_kernel"),
      "mlp.experts.gate_up_proj",
      (e, 2 * f, d),
      lambda w: swap(w[:, :f]),
      None,
    ),
    (
      ("moe", "up_kernel"),
      "mlp.experts.gate_up_proj",
      (e, 2 * f, d),
      lambda w: swap(w[:, f:]),
      None,
    ),
    (("moe", "down_kernel"), "mlp.experts.down_proj", (e, d, f), swap, None),
  ]


class _Reader:
  """Lazily opened safetensors files of one checkpoint folder."""

  def __init__(self, path: str):
    index = os.path.join(path, INDEX_FILE)
    if os.path.isfile(index):
      with open(index) as fh:
        weight_map = json.load(fh)["weight_map"]
    else:
      files = sorted(n for n in os.listdir(path) if n.endswith(".safetensors"))
      if not files:
        raise FileNotFoundError(f"{path}: no *.safetensors files")
      weight_map = {}
      for name in files:
        with safetensors.safe_open(os.path.join(path, name), "np") as fh:
          weight_map.update({k: name for k in fh.keys()})
    self.path = path
    self.weight_map = weight_map
    self._handles = {}

  def _handle(self, key):
    name = self.weight_map[key]
    if name not in self._handles:
      self._handles[name] = safetensors.safe_open(
        os.path.join(self.path, name), "np"
      )
    return self._handles[name]

  def shape(self, key) -> tuple[int, ...]:
    return tuple(self._handle(key).get_slice(key).get_shape())

  def get(self, key) -> np.ndarray:
    return self._handle(key).get_tensor(key)

  def where(self, key) -> str:
    return os.path.join(self.path, self.weight_map[key])


def _check(reader: _Reader, entries, cfg: ModelConfig) -> None:
  expected = set()
  for entry in entries:
    for key, _ in entry.tensors():
      expected.add(key)
      if key not in reader.weight_map:
        raise ValueError(
          f"{reader.path}: tensor {key!r} is missing (expected shape "
          f"{entry.hf_shape} for this config.json)"
        )
      found = reader.shape(key)
      if found != entry.hf_shape:
        raise ValueError(
          f"{reader.where(key)}: tensor {key!r} has shape {found}, "
          f"but config.json implies {entry.hf_shape}"
        )
  extra = sorted(
    k
    for k in reader.weight_map
    if k not in expected
    and not k.endswith(_IGNORED_SUFFIXES)
    # A tied checkpoint may still store the (identical) output projection.
    and not (cfg.tie_word_embeddings and k == "lm_head.weight")
  )
  if extra:
    raise ValueError(
      f"{reader.path}: {len(extra)} tensors are not used by a "
      f"{cfg.model_type!r} model of this config: {extra[:5]}"
    )


def load(
  path: str,
  dtype="float32",
  *,
  compute_dtype: str | None = None,
  sharder: shd.Sharder | None = None,
):
  """Loads a Hugging Face checkpoint folder.

  Args:
    path: folder with `config.json` and `*.safetensors` (sharded index too).
    dtype: parameter dtype (e.g. "bfloat16").
    compute_dtype: activation dtype; defaults to `dtype`.
    sharder: places each parameter directly onto its sharding; None puts
      everything on the default device.

  Returns:
    `(cfg, params)`.
  """
  dtype = jnp.dtype(dtype)
  cfg = load_config(
    path, dtype=compute_dtype or dtype.name, param_dtype=dtype.name
  )
  reader = _Reader(path)
  fused = any(k.endswith(_FUSED_SUFFIX) for k in reader.weight_map)
  entries = _entries(cfg, fused_experts=fused)
  _check(reader, entries, cfg)
  if sharder is None:
    device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    shardings = jax.tree.map(lambda _: device, models.param_shapes(cfg))
  else:
    shardings = models.param_shardings(cfg, sharder)

  shapes = models.param_shapes(cfg)
  params: dict = {}
  for entry in entries:
    sharding = _get(shardings, entry.path)
    shape = _get(shapes, entry.path).shape
    array = _assemble(reader, entry, shape, sharding, dtype)
    _set(params, entry.path, array)
  return cfg, params


def _assemble(reader, entry, shape, sharding, dtype) -> jax.Array:
  cache: dict[str, np.ndarray] = {}

  def tensor(key):
    # Each HF tensor is read and transformed once, even when several devices
    # ask for slices of it.
    if key not in cache:
      cache[key] = np.ascontiguousarray(entry.to_ours(reader.get(key))).astype(
        dtype
      )
    return cache[key]

  def callback(index):
    if not entry.layers:
      return tensor(entry.hf_key)[index]
    rows, *rest = index
    if not entry.experts:
      return np.stack(
        [
          tensor(entry.hf_key.format(i=i))[tuple(rest)]
          for i in entry.layers[rows]
        ]
      )
    experts, *rest = rest
    return np.stack(
      [
        np.stack(
          [
            tensor(entry.hf_key.format(i=i, e=e))[tuple(rest)]
            for e in range(entry.experts)[experts]
          ]
        )
        for i in entry.layers[rows]
      ]
    )

  return jax.make_array_from_callback(shape, sharding, callback)


def _get(tree, path):
  for name in path:
    tree = tree[name]
  return tree


def _set(tree, path, value):
  for name in path[:-1]:
    tree = tree.setdefault(name, {})
  tree[path[-1]] = value


def _to_host(x: jax.Array) -> np.ndarray:
  if not x.is_fully_addressable:
    x = multihost_utils.process_allgather(x, tiled=True)
  return np.asarray(jax.device_get(x))


def save(
  cfg: ModelConfig, params, out_dir: str, *, max_shard_bytes: int = 5 * 2**30
) -> None:
  """Writes `config.json` and safetensors loadable by transformers.

  Tensors keep the parameter dtype. Files larger than `max_shard_bytes` are
  split with a `model.safetensors.index.json`, as transformers does. Only
  process 0 writes; every process must call this (gathers are collective).
  """
  entries = _entries(cfg)
  plan: list[list[tuple[_Entry, tuple[int, ...], str]]] = [[]]
  size = 0
  for entry in entries:
    leaf = _get(params, entry.path)
    per_key = int(np.prod(entry.hf_shape)) * leaf.dtype.itemsize
    for key, index in entry.tensors():
      if plan[-1] and size + per_key > max_shard_bytes:
        plan.append([])
        size = 0
      plan[-1].append((entry, index, key))
      size += per_key

  write = jax.process_index() == 0
  if write:
    os.makedirs(out_dir, exist_ok=True)
    to_hf_config(cfg).save_pretrained(out_dir)
  names = (
    ["model.safetensors"]
    if len(plan) == 1
    else [
      f"model-{n + 1:05d}-of-{len(plan):05d}.safetensors"
      for n in range(len(plan))
    ]
  )
  weight_map = {}
  host: dict[tuple, np.ndarray] = {}
  for name, items in zip(names, plan, strict=True):
    tensors = {}
    for entry, index, key in items:
      if entry.path not in host:
        host.clear()  # One stacked parameter on the host at a time.
        host[entry.path] = _to_host(_get(params, entry.path))
      value = host[entry.path][index]
      tensors[key] = np.ascontiguousarray(entry.to_hf(value))
      weight_map[key] = name
    if write:
      safetensors.numpy.save_file(
        tensors, os.path.join(out_dir, name), metadata={"format": "pt"}
      )
  if write and len(plan) > 1:
    total = sum(
      int(np.prod(e.hf_shape)) * _get(params, e.path).dtype.itemsize
      for e in entries
      for _ in e.tensors()
    )
    with open(os.path.join(out_dir, INDEX_FILE), "w") as fh:
      json.dump(
        {"metadata": {"total_size": total}, "weight_map": weight_map},
        fh,
        indent=2,
      )
