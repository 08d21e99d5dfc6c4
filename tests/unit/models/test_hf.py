"""HF parity, export round trip and loading errors (rock_jax.models.hf)."""

import json
import os

import jax
import numpy as np
import pytest
import safetensors.numpy
import transformers
from hf_helpers import (
  LLAMA3_ROPE,
  assert_bf16_within_transformers_error,
  assert_sharded_load,
  assert_transformers_reloads,
  jax_logits,
  make_config,
  make_model,
  padded_batch,
  torch_logits,
)

from rock_jax import storage
from rock_jax.models import hf

FAMILIES = {
  "qwen3_tied": ("qwen3", dict(tie_word_embeddings=True)),
  "qwen3_untied": ("qwen3", dict(tie_word_embeddings=False)),
  "llama3_rope": ("llama", dict(rope_parameters=LLAMA3_ROPE)),
  "qwen2_bias": ("qwen2", dict(tie_word_embeddings=False)),
  "llama_attention_bias": ("llama", dict(attention_bias=True)),
}


@pytest.fixture(scope="module", params=sorted(FAMILIES))
def family(request, tmp_path_factory):
  kind, overrides = FAMILIES[request.param]
  path = str(tmp_path_factory.mktemp(request.param))
  model = make_model(kind, path, **overrides)
  return request.param, path, model


def test_fp32_logit_parity_on_padded_batch(family):
  _, path, model = family
  cfg, params = hf.load(path)
  tokens, mask, positions = padded_batch(cfg.vocab_size)
  ref = torch_logits(model, tokens, mask, positions)
  ours = jax_logits(cfg, params, tokens, mask)
  assert ours.dtype == np.float32
  np.testing.assert_array_less(np.abs(ours - ref)[mask], 1e-4)


def test_bf16_within_transformers_own_bf16_error(family):
  _, path, model = family
  cfg, params = assert_bf16_within_transformers_error(path, model)
  assert cfg.param_dtype == cfg.dtype == "bfloat16"
  assert params["embedding"].dtype == np.dtype("bfloat16")


def test_export_round_trip_through_transformers(family, tmp_path):
  name, path, model = family
  cfg, params = hf.load(path)
  out = str(tmp_path / "export")
  hf.save(cfg, params, out)
  assert_transformers_reloads(out, model)
  tokens, mask, _ = padded_batch(cfg.vocab_size, seed=2)
  cfg2, params2 = hf.load(out)
  assert cfg2 == cfg
  np.testing.assert_array_equal(
    jax_logits(cfg2, params2, tokens, mask),
    jax_logits(cfg, params, tokens, mask),
  )


def test_llama3_rope_scaling_changes_the_model(tmp_path):
  # Guards the parity test against a scaling that silently has no effect.
  path = str(tmp_path)
  make_model("llama", path, rope_parameters=LLAMA3_ROPE)
  cfg, params = hf.load(path)
  tokens, mask, _ = padded_batch(cfg.vocab_size)
  plain = cfg.replace(rope_type="default")
  diff = jax_logits(cfg, params, tokens, mask) - jax_logits(
    plain, params, tokens, mask
  )
  assert np.abs(diff).max() > 1e-3


def test_sharded_checkpoint_with_index(tmp_path):
  src = str(tmp_path / "src")
  model = make_model("qwen3", src)
  cfg, params = hf.load(src)
  out = str(tmp_path / "sharded")
  hf.save(cfg, params, out, max_shard_bytes=100_000)
  index = json.load(open(os.path.join(out, hf.INDEX_FILE)))
  files = set(index["weight_map"].values())
  assert len(files) > 2 and all(
    os.path.exists(os.path.join(out, f)) for f in files
  )
  assert_transformers_reloads(out, model)
  tokens, mask, _ = padded_batch(cfg.vocab_size)
  _, params2 = hf.load(out)
  np.testing.assert_array_equal(
    jax_logits(cfg, params2, tokens, mask),
    jax_logits(cfg, params, tokens, mask),
  )


def test_sharded_export_to_a_bucket_streams_shards_and_loads_back(
  tmp_path, gcs, monkeypatch
):
  # A gs:// export holds one weight file on local disk at a time, puts
  # config.json last, and loads back from the bucket (hf.load mirrors it).
  monkeypatch.setenv("ROCK_JAX_CACHE", str(tmp_path / "cache"))
  src = str(tmp_path / "src")
  model = make_model("qwen3", src)
  cfg, params = hf.load(src)
  uploaded, on_disk = [], []
  upload_file = storage.upload_file

  def recording(local, url):
    weights = [n for n in os.listdir(os.path.dirname(local)) if "safet" in n]
    on_disk.append(len(weights))
    uploaded.append(storage.basename(url))
    upload_file(local, url)

  monkeypatch.setattr(storage, "upload_file", recording)
  out = storage.join(gcs, "export")
  hf.save(cfg, params, out, max_shard_bytes=100_000)
  shards = [n for n in uploaded if n.endswith(".safetensors")]
  assert len(shards) > 2 and max(on_disk[: len(shards)]) == 1
  assert uploaded[-1] == "config.json"
  assert set(storage.listdir(out)) == set(uploaded)
  cfg2, params2 = hf.load(out)
  assert cfg2 == cfg
  tokens, mask, _ = padded_batch(cfg.vocab_size)
  np.testing.assert_array_equal(
    jax_logits(cfg, params2, tokens, mask),
    jax_logits(cfg, params, tokens, mask),
  )
  assert_transformers_reloads(storage.mirror(out), model)


def test_load_config_from_config_json_only(tmp_path):
  make_config("qwen3", tie_word_embeddings=True).save_pretrained(tmp_path)
  assert os.listdir(tmp_path) == ["config.json"]
  cfg = hf.load_config(str(tmp_path))
  assert (cfg.model_type, cfg.num_layers, cfg.head_dim) == ("qwen3", 2, 16)
  assert cfg.qk_norm and cfg.tie_word_embeddings and not cfg.qkv_bias


def test_load_config_missing_file_names_it(tmp_path):
  with pytest.raises(FileNotFoundError, match="config.json"):
    hf.load_config(str(tmp_path))


@pytest.mark.parametrize(
  "config, match",
  [
    (transformers.Gemma3TextConfig(), "model_type 'gemma3_text'"),
    (
      make_config("qwen3", use_sliding_window=True, sliding_window=8),
      "use_sliding_window",
    ),
    (
      make_config(
        "llama",
        rope_parameters={"rope_type": "yarn", "rope_theta": 1e4, "factor": 4.0},
      ),
      "rope_type='yarn'",
    ),
    (make_config("llama", mlp_bias=True), "mlp_bias"),
    (make_config("llama", hidden_act="gelu"), "hidden_act='gelu'"),
  ],
)
def test_unsupported_configs_are_named(tmp_path, config, match):
  config.save_pretrained(tmp_path)
  with pytest.raises(ValueError, match=match):
    hf.load_config(str(tmp_path))


def _rewrite(path, edit):
  file = os.path.join(path, "model.safetensors")
  tensors = safetensors.numpy.load_file(file)
  edit(tensors)
  safetensors.numpy.save_file(tensors, file, metadata={"format": "pt"})


def test_missing_tensor_is_named(tmp_path):
  make_model("qwen3", str(tmp_path))
  _rewrite(tmp_path, lambda t: t.pop("model.layers.1.mlp.up_proj.weight"))
  with pytest.raises(
    ValueError,
    match=r"'model.layers.1.mlp.up_proj.weight' is missing "
    r"\(expected shape \(128, 64\)",
  ):
    hf.load(str(tmp_path))


def test_wrong_shape_names_tensor_and_both_shapes(tmp_path):
  make_model("qwen3", str(tmp_path))

  def edit(t):
    t["model.layers.0.self_attn.k_proj.weight"] = np.zeros((16, 64), np.float32)

  _rewrite(tmp_path, edit)
  with pytest.raises(
    ValueError,
    match=r"'model.layers.0.self_attn.k_proj."
    r"weight' has shape \(16, 64\), but config.json implies "
    r"\(32, 64\)",
  ):
    hf.load(str(tmp_path))


def test_unexpected_tensor_is_named(tmp_path):
  make_model("llama", str(tmp_path))

  def edit(t):
    t["model.layers.0.mlp.experts.0.up_proj.weight"] = np.zeros(
      (4, 4), np.float32
    )

  _rewrite(tmp_path, edit)
  with pytest.raises(ValueError, match="experts.0.up_proj"):
    hf.load(str(tmp_path))


def test_load_places_parameters_on_their_shardings(tmp_path):
  from rock_jax import sharding as shd

  make_model("qwen3", str(tmp_path), tie_word_embeddings=False)
  sharder = shd.Sharder(
    shd.make_mesh([("data", 2), ("fsdp", 4)]), shd.FSDP_RULES
  )
  sharded = assert_sharded_load(str(tmp_path), sharder)
  assert sharded["layers"]["mlp"]["up_kernel"].sharding.spec == jax.P(
    None, "fsdp", None
  )
