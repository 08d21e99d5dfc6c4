"""LoRA adapters against PEFT in PyTorch: forward, folders both ways, merge."""

import dataclasses
import json
import os

import hf_helpers
import jax
import numpy as np
import peft
import pytest
import torch
import transformers

from rock_jax import models
from rock_jax import sharding as shd
from rock_jax.models import hf, lora, peft_adapter

TARGETS = list(lora.TARGETS)


def _peft_model(kind, tmp_path, targets=TARGETS, rank=4, alpha=8.0, **kw):
  """A random base saved to tmp/base, wrapped in a PEFT LoRA whose B is
  random too (PEFT starts it at zero), saved to tmp/adapter."""
  base_dir, adapter_dir = str(tmp_path / "base"), str(tmp_path / "adapter")
  base = hf_helpers.make_model(kind, base_dir, **kw)
  config = peft.LoraConfig(
    r=rank,
    lora_alpha=alpha,
    target_modules=[t + "_proj" for t in targets],
    lora_dropout=0.0,
  )
  wrapped = peft.get_peft_model(base, config)
  torch.manual_seed(1)
  with torch.no_grad():
    for name, p in wrapped.named_parameters():
      if "lora_B" in name:
        p.copy_(0.05 * torch.randn_like(p))
  wrapped.eval().save_pretrained(adapter_dir)
  return wrapped, base_dir, adapter_dir


def _adapted(base_dir, adapter_dir, sharder=None):
  cfg, base = hf.load(base_dir, sharder=sharder)
  cfg = cfg.replace(lora=peft_adapter.read_spec(adapter_dir))
  adapters = peft_adapter.load(cfg, adapter_dir, sharder)
  return cfg, base, adapters


@pytest.mark.parametrize(
  "kind,targets",
  [("qwen3", TARGETS), ("llama", ["q", "v"]), ("qwen2", ["o", "down"])],
)
def test_forward_equals_peft(kind, targets, tmp_path):
  wrapped, base_dir, adapter_dir = _peft_model(kind, tmp_path, targets)
  cfg, base, adapters = _adapted(base_dir, adapter_dir)
  assert cfg.lora.targets == tuple(t for t in lora.TARGETS if t in targets)
  tokens, mask, positions = hf_helpers.padded_batch(cfg.vocab_size)
  want = hf_helpers.torch_logits(wrapped, tokens, mask, positions)
  got = hf_helpers.jax_logits(cfg, lora.combine(base, adapters), tokens, mask)
  np.testing.assert_allclose(got[mask], want[mask], rtol=1e-4, atol=2e-5)
  # The adapters matter: the base alone is far from the adapted model.
  plain = hf_helpers.jax_logits(cfg.replace(lora=None), base, tokens, mask)
  assert np.abs(plain - want)[mask].max() > 100 * 2e-5


def test_zero_b_leaves_the_logits_unchanged(tmp_path):
  base_dir = str(tmp_path / "base")
  hf_helpers.make_model("qwen3", base_dir)
  cfg, base = hf.load(base_dir)
  spec = lora.LoraSpec(rank=8, alpha=16.0, targets=lora.TARGETS)
  adapted = cfg.replace(lora=spec)
  adapters = models.init_adapters(adapted, jax.random.key(0))
  a = adapters["layers"]["attn"]["q_lora_a"]
  # PEFT's Kaiming-uniform bound 1/sqrt(fan_in) on A; B at zero.
  assert 0.9 / np.sqrt(cfg.hidden_size) < np.abs(a).max()
  assert np.abs(a).max() <= 1 / np.sqrt(cfg.hidden_size)
  assert all(
    not np.any(x) for k, x in _leaves(adapters) if k.endswith("_lora_b")
  )
  tokens, mask, _ = hf_helpers.padded_batch(cfg.vocab_size)
  np.testing.assert_allclose(
    hf_helpers.jax_logits(adapted, lora.combine(base, adapters), tokens, mask),
    hf_helpers.jax_logits(cfg, base, tokens, mask),
    rtol=1e-6,
    atol=1e-6,
  )


def _leaves(tree):
  return [
    (jax.tree_util.keystr(path), x)
    for path, x in jax.tree_util.tree_leaves_with_path(tree)
  ]


def test_merged_export_equals_the_adapted_model(tmp_path):
  wrapped, base_dir, adapter_dir = _peft_model("qwen3", tmp_path)
  cfg, base, adapters = _adapted(base_dir, adapter_dir)
  merged = lora.merge(lora.combine(base, adapters), cfg.lora)
  assert not any(lora.is_adapter(k.split("'")[-2]) for k, _ in _leaves(merged))
  out = str(tmp_path / "merged")
  hf.save(cfg.replace(lora=None), merged, out)
  reloaded = transformers.AutoModelForCausalLM.from_pretrained(
    out, dtype=torch.float32
  ).eval()
  tokens, mask, positions = hf_helpers.padded_batch(cfg.vocab_size)
  np.testing.assert_allclose(
    hf_helpers.torch_logits(reloaded, tokens, mask, positions)[mask],
    hf_helpers.jax_logits(cfg, lora.combine(base, adapters), tokens, mask)[
      mask
    ],
    rtol=1e-4,
    atol=2e-5,
  )
  # PEFT's own merge gives the same weights.
  peft_merged = wrapped.merge_and_unload().state_dict()
  ours = transformers.AutoModelForCausalLM.from_pretrained(out).state_dict()
  for name, w in peft_merged.items():
    np.testing.assert_allclose(
      ours[name].numpy(), w.numpy(), rtol=1e-5, atol=1e-6, err_msg=name
    )


def test_saved_adapter_loads_in_peft(tmp_path):
  wrapped, base_dir, adapter_dir = _peft_model("qwen3", tmp_path, ["q", "up"])
  cfg, _, adapters = _adapted(base_dir, adapter_dir)
  out = str(tmp_path / "resaved")
  peft_adapter.save(cfg, adapters, out, base_model=base_dir)
  with open(os.path.join(out, "adapter_config.json")) as fh:
    assert json.load(fh)["base_model_name_or_path"] == base_dir
  base = transformers.AutoModelForCausalLM.from_pretrained(
    base_dir, dtype=torch.float32
  )
  reloaded = peft.PeftModel.from_pretrained(base, out).eval()
  tokens, mask, positions = hf_helpers.padded_batch(cfg.vocab_size)
  np.testing.assert_allclose(
    hf_helpers.torch_logits(reloaded, tokens, mask, positions),
    hf_helpers.torch_logits(wrapped, tokens, mask, positions),
    rtol=0,
    atol=1e-6,
  )


def test_adapters_are_laid_out_like_their_projection(tmp_path):
  _, base_dir, adapter_dir = _peft_model("qwen3", tmp_path)
  mesh = shd.make_mesh([("data", 2), ("fsdp", 2), ("tensor", 2)])
  sharder = shd.Sharder(mesh, shd.get_rules("fsdp"))
  cfg, base, adapters = _adapted(base_dir, adapter_dir, sharder)
  attn = adapters["layers"]["attn"]
  kernel = base["layers"]["attn"]["q_kernel"].sharding.spec
  # [N, D, H, h] kernel; A [N, D, r] shares its D axis, B [N, r, H, h] its
  # heads and head_dim axes; the rank is never sharded.
  assert attn["q_lora_a"].sharding.spec[:2] == kernel[:2]
  assert attn["q_lora_b"].sharding.spec[2:] == kernel[2:]
  assert len(attn["q_lora_a"].sharding.spec) < 3 or (
    attn["q_lora_a"].sharding.spec[2] is None
  )
  tokens, mask, _ = hf_helpers.padded_batch(cfg.vocab_size)
  _, plain, plain_adapters = _adapted(base_dir, adapter_dir)
  np.testing.assert_allclose(
    hf_helpers.jax_logits(cfg, lora.combine(base, adapters), tokens, mask),
    hf_helpers.jax_logits(
      cfg, lora.combine(plain, plain_adapters), tokens, mask
    ),
    rtol=1e-5,
    atol=1e-6,
  )


def test_adapter_for_another_base_names_the_tensor(tmp_path):
  _, _, adapter_dir = _peft_model("qwen3", tmp_path)
  other = str(tmp_path / "other")
  hf_helpers.make_model("qwen3", other, intermediate_size=96)
  cfg, _ = hf.load(other)
  cfg = cfg.replace(lora=peft_adapter.read_spec(adapter_dir))
  with pytest.raises(ValueError, match=r"gate_proj\.lora_B\.weight.*\(96, 4\)"):
    peft_adapter.load(cfg, adapter_dir)


@pytest.mark.parametrize(
  "field,value,match",
  [
    ("use_dora", True, "use_dora=True"),
    ("target_modules", ["q_proj", "lm_head"], "'lm_head'"),
    ("target_modules", "all-linear", "target_modules='all-linear'"),
  ],
)
def test_unsupported_adapter_config_names_the_field(
  field, value, match, tmp_path
):
  _, _, adapter_dir = _peft_model("qwen3", tmp_path, ["q"])
  file = os.path.join(adapter_dir, "adapter_config.json")
  with open(file) as fh:
    config = json.load(fh)
  config[field] = value
  with open(file, "w") as fh:
    json.dump(config, fh)
  with pytest.raises(ValueError, match=match):
    peft_adapter.read_spec(adapter_dir)


@pytest.mark.parametrize(
  "kwargs,match",
  [
    (dict(rank=0), "rank=0 must be > 0"),
    (dict(targets=("q", "qkv")), "subset of"),
    (dict(dropout=1.0), "dropout"),
  ],
)
def test_bad_spec(kwargs, match):
  args = dict(rank=4, alpha=8.0, targets=("q",)) | kwargs
  with pytest.raises(ValueError, match=match):
    lora.LoraSpec(**args)


def test_mlp_targets_on_an_all_moe_model_match_nothing(tmp_path):
  base_dir = str(tmp_path / "moe")
  hf_helpers.make_model("qwen3_moe", base_dir)
  cfg = hf.load_config(base_dir)
  spec = lora.LoraSpec(rank=4, alpha=8.0, targets=("q", "gate"))
  with pytest.raises(ValueError, match=r"\['gate'\] match no projection"):
    cfg.replace(lora=spec)


def test_dropout_only_with_a_key_and_reproducible(tmp_path):
  _, base_dir, adapter_dir = _peft_model("qwen3", tmp_path, ["q", "down"])
  cfg, base, adapters = _adapted(base_dir, adapter_dir)
  cfg = cfg.replace(lora=dataclasses.replace(cfg.lora, dropout=0.5))
  params = lora.combine(base, adapters)
  tokens, mask, _ = hf_helpers.padded_batch(cfg.vocab_size)

  def logits(rng=None):
    return np.asarray(
      models.apply(
        cfg, params, tokens, attention_mask_BxL=mask, dropout_rng=rng
      )
    )

  plain = cfg.replace(lora=dataclasses.replace(cfg.lora, dropout=0.0))
  # Without a key (evaluation, rollouts) dropout is off.
  np.testing.assert_array_equal(
    logits(),
    np.asarray(models.apply(plain, params, tokens, attention_mask_BxL=mask)),
  )
  key = jax.random.key(0)
  np.testing.assert_array_equal(logits(key), logits(key))
  assert np.abs(logits(key) - logits()).max() > 1e-3
  assert np.abs(logits(key) - logits(jax.random.key(1))).max() > 1e-3
