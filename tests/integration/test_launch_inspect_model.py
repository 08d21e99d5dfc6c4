"""launch/inspect_model.py: the layout report of a model from its config."""

import os
import subprocess
import sys

import pytest
import run_helpers
import transformers
from hf_helpers import QWEN3_30B_A3B

ROOT = str(run_helpers.ROOT)


def _run(*args):
  return subprocess.run(
    [sys.executable, os.path.join(ROOT, "launch", "inspect_model.py"), *args],
    capture_output=True,
    text=True,
    timeout=300,
    cwd=ROOT,
  )


def test_qwen3_8b_layout_on_eight_devices(tmp_path):
  transformers.Qwen3Config(
    vocab_size=151936,
    hidden_size=4096,
    intermediate_size=12288,
    num_hidden_layers=36,
    num_attention_heads=32,
    num_key_value_heads=8,
    head_dim=128,
    tie_word_embeddings=False,
  ).save_pretrained(tmp_path)
  out = _run(f"--model={tmp_path}", "--mesh=data:1,fsdp:-1", "--fake_devices=8")
  assert out.returncode == 0, out.stderr
  assert "parameters: 8,190,735,360; 1.91 GiB per device" in out.stdout
  assert "P(None, 'fsdp', None)" in out.stdout
  assert "replicated >= 1 MiB" not in out.stdout
  replicated = _run(
    f"--model={tmp_path}", "--rules=replicated", "--fake_devices=8"
  )
  assert "replicated >= 1 MiB: ['embedding'] (1187.0 MiB)" in replicated.stdout


@pytest.mark.parametrize(
  "flag, match",
  [
    ("--mesh=data=8", "--mesh='data=8': expected name:size pairs"),
    ("--rules=zero3", "unknown sharding rules 'zero3'"),
  ],
)
def test_bad_flags_are_named(tmp_path, flag, match):
  transformers.Qwen3Config(num_hidden_layers=1).save_pretrained(tmp_path)
  out = _run(f"--model={tmp_path}", flag, "--fake_devices=8")
  assert out.returncode != 0 and match in out.stderr


def test_qwen3_30b_a3b_fits_eight_devices_with_expert_rules(tmp_path):
  # The paper's teacher: 57 GiB of bfloat16 weights become 7.11 GiB per
  # device (an 8x H100 node) with whole experts per device.
  transformers.Qwen3MoeConfig(**QWEN3_30B_A3B).save_pretrained(tmp_path)
  out = _run(
    f"--model={tmp_path}",
    "--mesh=data:1,fsdp:8",
    "--rules=expert",
    "--fake_devices=8",
  )
  assert out.returncode == 0, out.stderr
  assert "parameters: 30,532,122,624; 7.11 GiB per device" in out.stdout
  assert "active parameters per token: 3,353,032,704" in out.stdout
  lines = out.stdout.splitlines()
  (experts,) = [line for line in lines if "['gate_kernel']" in line]
  assert "(48, 128, 2048, 768)" in experts
  assert "P(None, 'fsdp', None, None)" in experts
  assert "replicated >= 1 MiB" not in out.stdout
