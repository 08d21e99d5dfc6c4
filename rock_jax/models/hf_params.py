"""The table mapping our parameter tree to Hugging Face tensor names.

Each `Entry` says where one of our (possibly layer- and expert-stacked)
parameters lives in a checkpoint and how to transform it each way.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import numpy as np

from rock_jax.models.config import ModelConfig

# A key of the 3-D expert layout (see `_moe_specs`); its presence switches
# loading from per-expert tensors to that layout.
FUSED_SUFFIX = ".mlp.experts.gate_up_proj"


@dataclasses.dataclass(frozen=True)
class Entry:
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


def entries(cfg: ModelConfig, fused_experts: bool = False) -> list[Entry]:
  """The parameter table; `fused_experts` reads experts as 3-D tensors.

  Per-layer parameters come from specs `(path in one layer, HF key after
  "model.layers.{i}.", HF shape, to_ours, to_hf[, experts])`, repeated for
  each run of layers (`ModelConfig.layer_runs`).
  """
  d = cfg.hidden_size
  ident = _ident
  out = [
    Entry(
      ("embedding",),
      "model.embed_tokens.weight",
      (cfg.vocab_size, d),
      ident,
      ident,
    ),
    Entry(("final_norm", "scale"), "model.norm.weight", (d,), ident, ident),
  ]
  if not cfg.tie_word_embeddings:
    out.append(
      Entry(
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
        Entry(
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
