"""The decoder-only transformer: tokens (+ KV cache) -> hidden states / logits.

Legend: B batch, L query length, S cache length, D model, V vocab, N layers,
K kv heads, h head dim. Layers are stacked on a leading axis and run with
`nn.scan`, so compile time does not grow with depth.

Parameter tree: "embedding", "final_norm", "lm_head" (untied only), and the
layer stacks. Each maximal run of consecutive layers of one kind
(`ModelConfig.layer_runs`: dense MLP or sparse MoE) is one scanned stack. A
model with one run (every dense model; Qwen3-30B-A3B, all MoE) has the single
stack "layers" `[N, ...]`; otherwise the run starting at layer s is
"layers_{s}" `[count, ...]` (e.g. `mlp_only_layers=(0,)` gives "layers_0",
one dense layer, and "layers_1", the MoE rest). The KV cache stays one
`[N, ...]` array, sliced per run.
"""

from __future__ import annotations

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp

from rock_jax import sharding as shd
from rock_jax.models.config import ModelConfig
from rock_jax.models.layers import DecoderLayer, RMSNorm, param


@flax.struct.dataclass
class KVCache:
  """Preallocated keys/values for all layers plus slot bookkeeping.

  `valid_BxS` marks slots holding real tokens (prompt padding stays False);
  `index` is the next slot to write, shared by the batch. Positions for RoPE
  are recomputed from `valid_BxS`, so left-padded prompts need no extra state.
  """

  k_NxBxSxKxh: jax.Array
  v_NxBxSxKxh: jax.Array
  valid_BxS: jax.Array
  index: jax.Array

  @property
  def max_length(self) -> int:
    return self.valid_BxS.shape[1]


CACHE_LOGICAL = (
  shd.LAYERS,
  shd.BATCH,
  shd.CACHE_LENGTH,
  shd.KV_HEADS,
  shd.HEAD_DIM,
)


class Transformer(nn.Module):
  """Embedding, `num_layers` scanned decoder layers, final norm, LM head.

  `seen = (q_slot_L, kv_valid_BxS)` says which keys each query attends
  (`rock_jax.models.attention`): causality by slot, padding per key.
  """

  cfg: ModelConfig
  sharder: shd.Sharder | None = None

  @nn.compact
  def __call__(
    self,
    tokens_BxL,
    positions_BxL,
    seen,
    kv=None,
    cache_index=None,
    return_hidden=False,
  ):
    cfg = self.cfg
    embedding = param(
      self,
      "embedding",
      (cfg.vocab_size, cfg.hidden_size),
      (shd.VOCAB, shd.EMBED),
    )
    x = jnp.take(embedding, tokens_BxL, axis=0).astype(cfg.compute_dtype)
    x = shd.constrain(x, (shd.BATCH, shd.LENGTH, shd.EMBED), self.sharder)

    layer = DecoderLayer
    if cfg.remat:
      layer = nn.remat(layer, prevent_cse=False)
    new_kv_runs = []
    for name, start, count, moe in cfg.layer_runs:
      stack = nn.scan(
        layer,
        variable_axes={"params": 0},
        split_rngs={"params": True, "dropout": True},
        in_axes=(nn.broadcast, nn.broadcast, 0, nn.broadcast),
        length=count,
        unroll=min(cfg.scan_unroll or count, count),
        metadata_params={nn.PARTITION_NAME: shd.LAYERS},
      )
      kv_run = (
        None
        if kv is None
        else jax.tree.map(lambda c, a=start, n=count: c[a : a + n], kv)
      )
      x, new_kv_run = stack(cfg, self.sharder, moe, name=name)(
        x, positions_BxL, seen, kv_run, cache_index
      )
      new_kv_runs.append(new_kv_run)
    new_kv = (
      None
      if kv is None
      else jax.tree.map(
        lambda *parts: jnp.concatenate(parts, axis=0), *new_kv_runs
      )
    )

    h = RMSNorm(cfg, (shd.EMBED,), name="final_norm")(x)
    if return_hidden:
      return h, new_kv
    head = self.lm_head(embedding)
    logits = jnp.einsum(
      "bld,dv->blv", h, head.astype(h.dtype), preferred_element_type=jnp.float32
    )
    logits = shd.constrain(
      logits, (shd.BATCH, shd.LENGTH, shd.VOCAB), self.sharder
    )
    return logits, new_kv

  def lm_head(self, embedding_VxD):
    """The output projection `[D, V]`: the embedding's transpose when tied."""
    cfg = self.cfg
    if cfg.tie_word_embeddings:
      return embedding_VxD.T
    return param(
      self, "lm_head", (cfg.hidden_size, cfg.vocab_size), (shd.EMBED, shd.VOCAB)
    )
