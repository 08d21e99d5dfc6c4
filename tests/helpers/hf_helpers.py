"""Tiny random Hugging Face models built with the CPU torch, for parity."""

from __future__ import annotations

import numpy as np
import torch
import transformers

TINY = dict(
  vocab_size=300,
  hidden_size=64,
  intermediate_size=128,
  num_hidden_layers=2,
  num_attention_heads=4,
  num_key_value_heads=2,
  head_dim=16,
  max_position_embeddings=256,
)

# Added to TINY for "qwen3_moe": several experts, top-k > 1.
TINY_MOE = dict(num_experts=4, num_experts_per_tok=2, moe_intermediate_size=32)

LLAMA3_ROPE = {
  "rope_type": "llama3",
  "rope_theta": 500000.0,
  "factor": 8.0,
  "low_freq_factor": 1.0,
  "high_freq_factor": 4.0,
  "original_max_position_embeddings": 32,
}


# Qwen3-30B-A3B(-Instruct-2507) config.json. Its model card gives 30.5B
# total, 29.9B non-embedding and 3.3B activated parameters: the exact counts
# (30.532B, 29.909B, 3.353B) truncated to 0.1B.
QWEN3_30B_A3B = dict(
  vocab_size=151936,
  hidden_size=2048,
  intermediate_size=6144,
  num_hidden_layers=48,
  num_attention_heads=32,
  num_key_value_heads=4,
  head_dim=128,
  num_experts=128,
  num_experts_per_tok=8,
  moe_intermediate_size=768,
  norm_topk_prob=True,
  tie_word_embeddings=False,
)


def make_config(kind: str, **overrides):
  """A tiny transformers config of one of the supported families."""
  kwargs = dict(TINY, **overrides)
  if kind == "qwen3":
    return transformers.Qwen3Config(**kwargs)
  if kind == "qwen2":
    return transformers.Qwen2Config(**kwargs)
  if kind == "llama":
    return transformers.LlamaConfig(**kwargs)
  if kind == "qwen3_moe":
    return transformers.Qwen3MoeConfig(**dict(TINY_MOE, **kwargs))
  raise ValueError(kind)


def make_model(kind: str, out_dir: str, seed: int = 0, **overrides):
  """Builds a random torch model, saves it to `out_dir`, returns it (eval)."""
  torch.manual_seed(seed)
  config = make_config(kind, **overrides)
  model = transformers.AutoModelForCausalLM.from_config(
    config, dtype=torch.float32
  ).eval()
  # Random norm scales and biases (HF initialises them to 1 and 0), so the
  # parity tests exercise every parameter's mapping.
  with torch.no_grad():
    for name, p in model.named_parameters():
      if name.endswith("norm.weight"):
        p.copy_(1.0 + 0.2 * torch.randn_like(p))
      elif name.endswith(".bias"):
        p.copy_(0.1 * torch.randn_like(p))
      elif name.endswith("mlp.gate.weight"):
        # Router logits of order one, so top-k choices are not near-ties
        # that rounding could flip.
        p.copy_(0.3 * torch.randn_like(p))
  model.save_pretrained(out_dir)
  return model


def torch_logits(
  model,
  tokens: np.ndarray,
  mask: np.ndarray | None = None,
  positions: np.ndarray | None = None,
) -> np.ndarray:
  """float32 logits `[B, L, V]` from a transformers model."""
  kwargs = {}
  if mask is not None:
    kwargs["attention_mask"] = torch.from_numpy(mask.astype(np.int64))
  if positions is not None:
    kwargs["position_ids"] = torch.from_numpy(positions.astype(np.int64))
  with torch.no_grad():
    out = model(torch.from_numpy(tokens.astype(np.int64)), **kwargs)
  return out.logits.float().numpy()


def padded_batch(vocab: int, seed: int = 0):
  """Tokens, a left/right-padded mask and per-row positions for a batch of 3."""
  rng = np.random.default_rng(seed)
  tokens = rng.integers(0, vocab, size=(3, 12)).astype(np.int32)
  mask = np.ones((3, 12), bool)
  mask[1, :4] = False  # left padding
  mask[2, 9:] = False  # right padding
  positions = np.maximum(np.cumsum(mask, axis=1) - 1, 0).astype(np.int32)
  return tokens, mask, positions


def assert_transformers_reloads(out_dir: str, model) -> None:
  """`out_dir` loads in transformers as `model`'s class with equal logits."""
  reloaded = transformers.AutoModelForCausalLM.from_pretrained(
    out_dir, dtype=torch.float32
  ).eval()
  assert type(reloaded) is type(model)
  tokens, mask, positions = padded_batch(model.config.vocab_size, seed=2)
  np.testing.assert_allclose(
    torch_logits(reloaded, tokens, mask, positions),
    torch_logits(model, tokens, mask, positions),
    rtol=0,
    atol=1e-6,
  )


def jax_logits(cfg, params, tokens, mask) -> np.ndarray:
  """Our logits as NumPy, for comparison with `torch_logits`."""
  from rock_jax import models

  return np.asarray(models.apply(cfg, params, tokens, attention_mask_BxL=mask))


def assert_bf16_within_transformers_error(path: str, model):
  """Loads `path` in bfloat16 and checks it against the fp32 reference.

  Tolerance: our bf16 model may be at most twice as far from the fp32
  reference as transformers' own bf16 model is (README, "Models").

  Returns:
    The bf16 `(cfg, params)`, for further checks.
  """
  from rock_jax.models import hf

  tokens, mask, positions = padded_batch(model.config.vocab_size, seed=1)
  ref = torch_logits(model, tokens, mask, positions)
  torch_bf16 = transformers.AutoModelForCausalLM.from_pretrained(
    path, dtype=torch.bfloat16
  )
  budget = np.abs(torch_logits(torch_bf16, tokens, mask, positions) - ref)
  cfg, params = hf.load(path, dtype="bfloat16")
  ours = jax_logits(cfg, params, tokens, mask)
  assert np.abs(ours - ref)[mask].max() <= 2 * budget[mask].max()
  return cfg, params


def assert_sharded_load(path: str, sharder):
  """`hf.load` with a sharder puts each parameter on its sharding, unchanged.

  Returns:
    The sharded params.
  """
  import jax

  from rock_jax import models
  from rock_jax.models import hf

  cfg, plain = hf.load(path)
  _, sharded = hf.load(path, sharder=sharder)
  expected = models.param_shardings(cfg, sharder)
  for x, want, ref in zip(
    jax.tree.leaves(sharded),
    jax.tree.leaves(expected),
    jax.tree.leaves(plain),
    strict=True,
  ):
    assert x.sharding == want
    np.testing.assert_array_equal(x, ref)
  return sharded
