"""Qwen3-MoE: routing, dispatch, HF parity, export, expert sharding, sizes."""

import functools
import json
import os
import re

import jax
import numpy as np
import pytest
import safetensors.numpy
import torch
import transformers
from hf_helpers import (
  QWEN3_30B_A3B,
  assert_bf16_within_transformers_error,
  assert_sharded_load,
  assert_transformers_reloads,
  jax_logits,
  make_model,
  padded_batch,
  torch_logits,
)

from rock_jax import models
from rock_jax import sharding as shd
from rock_jax.models import hf

# Tiny Qwen3-MoE variants (4 experts, top-2): layer kinds by index.
VARIANTS = {
  # MoE, dense (mlp_only_layers), MoE: three stacks; renormalised top-k.
  "mlp_only_norm_topk": dict(
    num_hidden_layers=3, mlp_only_layers=[1], norm_topk_prob=True
  ),
  # dense, MoE, dense (every second layer sparse); raw top-k weights.
  "sparse_step_2": dict(num_hidden_layers=3, decoder_sparse_step=2),
  # All MoE: the single stack "layers"; tied embeddings.
  "all_moe_tied": dict(tie_word_embeddings=True, norm_topk_prob=True),
}
DISPATCHES = ("dense", "ragged")


@pytest.fixture(scope="module", params=sorted(VARIANTS))
def variant(request, tmp_path_factory):
  path = str(tmp_path_factory.mktemp(request.param))
  model = make_model("qwen3_moe", path, **VARIANTS[request.param])
  return request.param, path, model


def test_layer_runs_name_the_stacks(variant):
  name, path, _ = variant
  cfg, params = hf.load(path)
  expected = {
    "mlp_only_norm_topk": [
      ("layers_0", True),
      ("layers_1", False),
      ("layers_2", True),
    ],
    "sparse_step_2": [
      ("layers_0", False),
      ("layers_1", True),
      ("layers_2", False),
    ],
    "all_moe_tied": [("layers", True)],
  }[name]
  assert [(n, moe) for n, _, _, moe in cfg.layer_runs] == expected
  for stack, moe in expected:
    assert set(params[stack]) >= {"moe" if moe else "mlp", "attn"}
  if name == "all_moe_tied":
    assert params["layers"]["moe"]["gate_kernel"].shape == (2, 4, 64, 32)
    assert params["layers"]["moe"]["router_kernel"].shape == (2, 64, 4)


# A chunk that does not divide the batch's length: the last one is padded.
@pytest.mark.parametrize(
  "dispatch, chunk", [("dense", 0), ("ragged", 0), ("ragged", 5)]
)
def test_fp32_logit_parity_on_padded_batch(variant, dispatch, chunk):
  _, path, model = variant
  cfg, params = hf.load(path)
  cfg = cfg.replace(moe_dispatch=dispatch, moe_chunk_size=chunk)
  tokens, mask, positions = padded_batch(cfg.vocab_size)
  ref = torch_logits(model, tokens, mask, positions)
  np.testing.assert_array_less(
    np.abs(jax_logits(cfg, params, tokens, mask) - ref)[mask], 1e-4
  )


def test_bf16_within_transformers_own_bf16_error(variant):
  _, path, model = variant
  assert_bf16_within_transformers_error(path, model)


def test_export_round_trip_through_transformers(variant, tmp_path):
  _, path, model = variant
  cfg, params = hf.load(path)
  out = str(tmp_path / "export")
  hf.save(cfg, params, out, max_shard_bytes=200_000)
  # Per-expert tensors, the layout transformers writes and hub files use.
  with open(os.path.join(out, hf.INDEX_FILE)) as fh:
    keys = set(json.load(fh)["weight_map"])
  moe_layer = next(s for _, s, _, moe in cfg.layer_runs if moe)
  assert f"model.layers.{moe_layer}.mlp.experts.3.down_proj.weight" in keys
  assert f"model.layers.{moe_layer}.mlp.gate.weight" in keys
  assert_transformers_reloads(out, model)
  cfg2, params2 = hf.load(out)
  assert cfg2 == cfg
  jax.tree.map(np.testing.assert_array_equal, params2, params)


def test_fused_expert_tensors_load_like_per_expert_ones(tmp_path):
  # transformers' in-memory layout: gate_up_proj [E, 2F, D], down_proj
  # [E, D, F] per layer.
  path = str(tmp_path)
  model = make_model(
    "qwen3_moe", path, num_hidden_layers=3, mlp_only_layers=[1]
  )
  cfg, expected = hf.load(path)
  fused = {k: v.detach().numpy() for k, v in model.state_dict().items()}
  assert "model.layers.0.mlp.experts.gate_up_proj" in fused
  safetensors.numpy.save_file(
    fused, os.path.join(path, "model.safetensors"), metadata={"format": "pt"}
  )
  _, params = hf.load(path)
  jax.tree.map(np.testing.assert_array_equal, params, expected)


def test_missing_expert_is_named(tmp_path):
  path = str(tmp_path)
  make_model("qwen3_moe", path)
  file = os.path.join(path, "model.safetensors")
  tensors = safetensors.numpy.load_file(file)
  tensors.pop("model.layers.1.mlp.experts.2.up_proj.weight")
  safetensors.numpy.save_file(tensors, file, metadata={"format": "pt"})
  with pytest.raises(
    ValueError,
    match=r"'model.layers.1.mlp.experts.2."
    r"up_proj.weight' is missing \(expected shape \(32, 64\)",
  ):
    hf.load(path)


TINY = models.ModelConfig(
  model_type="qwen3_moe",
  vocab_size=300,
  hidden_size=64,
  intermediate_size=128,
  num_layers=3,
  num_heads=4,
  num_kv_heads=2,
  head_dim=16,
  qk_norm=True,
  num_experts=4,
  num_experts_per_tok=2,
  moe_intermediate_size=32,
  mlp_only_layers=(1,),
)


def test_routing_options_change_the_model():
  # Guards the parity tests against a renormalisation or top-k that silently
  # has no effect.
  params = models.init(TINY, jax.random.key(2))
  tokens = np.random.default_rng(0).integers(0, 300, (2, 8)).astype(np.int32)
  base = np.asarray(models.apply(TINY, params, tokens))
  for change in (dict(norm_topk_prob=True), dict(num_experts_per_tok=1)):
    changed = models.apply(TINY.replace(**change), params, tokens)
    assert np.abs(changed - base).max() > 1e-3, change


def test_kv_cache_decode_over_mixed_stacks_equals_full_forward():
  # Three stacks (MoE, dense, MoE) share one [N, ...] cache.
  cfg = TINY
  params = models.init(cfg, jax.random.key(3))
  rng = np.random.default_rng(4)
  tokens = rng.integers(0, cfg.vocab_size, (2, 7)).astype(np.int32)
  full = models.apply(cfg, params, tokens)
  cache = models.init_cache(cfg, batch_size=2, max_length=8)
  step = jax.jit(functools.partial(models.apply, cfg))
  out, cache = step(params, tokens[:, :4], cache=cache)
  pieces = [out]
  for t in range(4, 7):
    out, cache = step(params, tokens[:, t : t + 1], cache=cache)
    pieces.append(out)
  np.testing.assert_allclose(
    np.concatenate(pieces, axis=1), full, rtol=1e-5, atol=1e-5
  )


# Most parameters pass 1 MiB (experts [2, 8, 256, 128] fp32 = 2 MiB).
MEDIUM = models.ModelConfig(
  model_type="qwen3_moe",
  vocab_size=4096,
  hidden_size=256,
  intermediate_size=1024,
  num_layers=2,
  num_heads=4,
  num_kv_heads=4,
  head_dim=64,
  qk_norm=True,
  num_experts=8,
  num_experts_per_tok=2,
  moe_intermediate_size=128,
)


def _expert_sharder():
  return shd.Sharder(
    shd.make_mesh([("data", 2), ("fsdp", 4)]), shd.get_rules("expert")
  )


@pytest.mark.parametrize("dispatch", DISPATCHES)
def test_expert_sharded_forward_equals_single_device(dispatch):
  cfg = MEDIUM.replace(moe_dispatch=dispatch)
  sharder = _expert_sharder()
  single = models.init(cfg, jax.random.key(6))
  sharded = models.init(cfg, jax.random.key(6), sharder)
  experts = sharded["layers"]["moe"]["gate_kernel"]
  assert experts.sharding.spec == jax.P(None, "fsdp", None, None)
  assert experts.sharding.shard_shape(experts.shape) == (2, 2, 256, 128)
  tokens = (
    np.random.default_rng(0)
    .integers(0, cfg.vocab_size, (8, 16))
    .astype(np.int32)
  )
  expected = models.apply(cfg, single, tokens)
  fn = jax.jit(functools.partial(models.apply, cfg, sharder=sharder))
  tokens = jax.device_put(tokens, sharder.sharding((shd.BATCH, shd.LENGTH)))
  np.testing.assert_allclose(
    fn(sharded, tokens), expected, rtol=2e-5, atol=2e-5
  )
  # Expert parallelism: tokens travel, expert weights ([.., 256, 128] and
  # [.., 128, 256]) are never all-gathered.
  hlo = fn.lower(sharded, tokens).compile().as_text()
  gathered = re.findall(r"= \w+(\[[\d,]*\])\S* all-gather\(", hlo)
  assert gathered
  assert not [s for s in gathered if s.endswith(("256,128]", "128,256]"))]


def test_expert_rules_shard_every_large_parameter():
  params = models.init(MEDIUM, jax.random.key(7), _expert_sharder())
  large = [x for x in jax.tree.leaves(params) if x.nbytes >= 2**20]
  assert len(large) >= 5  # embedding, lm_head and the three expert stacks
  assert shd.unsharded_bytes(params, 2**20) == []


def test_expert_rules_leave_dense_models_as_fsdp():
  dense = MEDIUM.replace(model_type="qwen3", num_experts=0)
  mesh = shd.make_mesh([("data", 2), ("fsdp", 4)])
  assert models.param_shardings(
    dense, shd.Sharder(mesh, shd.EXPERT_RULES)
  ) == models.param_shardings(dense, shd.Sharder(mesh, shd.FSDP_RULES))


def test_load_places_experts_on_their_shards(tmp_path):
  path = str(tmp_path)
  make_model("qwen3_moe", path, num_hidden_layers=3, mlp_only_layers=[1])
  sharded = assert_sharded_load(path, _expert_sharder())
  assert sharded["layers_0"]["moe"]["down_kernel"].sharding.spec == jax.P(
    None, "fsdp", None, None
  )


def test_qwen3_30b_a3b_param_counts(tmp_path):
  hf_config = transformers.Qwen3MoeConfig(**QWEN3_30B_A3B)
  hf_config.save_pretrained(tmp_path)
  cfg = hf.load_config(str(tmp_path), dtype="bfloat16")
  total, active = models.param_count(cfg), models.active_param_count(cfg)
  assert abs(total - 30.5e9) <= 5e-3 * 30.5e9
  embeddings = 2 * cfg.vocab_size * cfg.hidden_size
  assert [int(n / 1e8) for n in (total, total - embeddings, active)] == [
    305,
    299,
    33,
  ]
  # Independent reference: transformers' own module, on the meta device.
  with torch.device("meta"):
    reference = transformers.Qwen3MoeForCausalLM(hf_config)
  experts = sum(
    p.numel() for n, p in reference.named_parameters() if ".mlp.experts." in n
  )
  assert total == sum(p.numel() for p in reference.parameters())
  assert active == total - experts * (128 - 8) // 128


@pytest.mark.parametrize(
  "change, match",
  [
    (
      dict(num_experts_per_tok=5),
      "num_experts_per_tok=5 must be at most num_experts=4",
    ),
    (
      dict(moe_intermediate_size=0),
      "moe_intermediate_size=0 must be a positive integer",
    ),
    (
      dict(mlp_only_layers=(3,)),
      r"mlp_only_layers=\(3,\) must be a sorted "
      r"tuple of distinct layer indices in \[0, 3\)",
    ),
    (dict(mlp_only_layers=[1]), r"mlp_only_layers=\[1\]"),
    (dict(moe_dispatch="capacity"), "moe_dispatch='capacity'; allowed"),
    (dict(moe_chunk_size=-1), r"moe_chunk_size=-1 must be >= 0"),
    (dict(model_type="qwen3"), "num_experts=4 needs model_type='qwen3_moe'"),
  ],
)
def test_moe_config_errors_name_the_field(change, match):
  with pytest.raises(ValueError, match=match):
    TINY.replace(**change)


def test_auto_dispatch_by_expert_count():
  assert TINY.resolved_moe_dispatch == "dense"  # 4 / 2
  big = TINY.replace(num_experts=128, num_experts_per_tok=8)
  assert big.resolved_moe_dispatch == "ragged"  # 128 / 8
