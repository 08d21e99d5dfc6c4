"""The memory planner against a hand computation of the bytes per device."""

import pathlib
import subprocess
import sys

import numpy as np
import pytest
import transformers

from rock_jax import models
from rock_jax.config import presets
from rock_jax.train import plan

ROOT = pathlib.Path(__file__).parents[3]
GB = 1e9
# By hand: Qwen3-1.7B student + Qwen3-8B teacher on one chip.
QWEN3 = {
  "student": dict(
    hidden_size=2048,
    num_hidden_layers=28,
    num_attention_heads=16,
    num_key_value_heads=8,
    head_dim=128,
    intermediate_size=6144,
    tie_word_embeddings=True,
  ),
  "teacher": dict(
    hidden_size=4096,
    num_hidden_layers=36,
    num_attention_heads=32,
    num_key_value_heads=8,
    head_dim=128,
    intermediate_size=12288,
    tie_word_embeddings=False,
  ),
}


@pytest.fixture(scope="module")
def config(tmp_path_factory):
  root = tmp_path_factory.mktemp("configs")
  c = presets.base("qwen3_8b_to_1p7b", "plan")
  for role, kwargs in QWEN3.items():
    transformers.Qwen3Config(vocab_size=151936, **kwargs).save_pretrained(
      root / role
    )
    c[role].path = str(root / role)
  c.mesh = "data:1,fsdp:1,tensor:1"
  c.train.batch_size, c.rollout.num_samples = 16, 4  # B = 64 sequences
  c.data.student_prompt_len = c.data.teacher_prompt_len = 512
  c.rollout.max_new_tokens = 3584
  return c


def test_single_chip_matches_the_hand_computation(config):
  p = plan.plan(config, devices=1, chip="v5p")
  items = p.items
  # "teacher bf16 ... 16.4 GB stored": 8.191B parameters x 2 bytes.
  assert items["teacher weights"] / GB == pytest.approx(16.4, rel=0.05)
  # "student Adam state ~27.5 GB": 16 bytes per parameter (float32
  # weights, gradients and two moments) x 1.721B.
  state = sum(
    items[k] for k in ("student weights", "student gradients", "Adam moments")
  )
  assert state / GB == pytest.approx(27.5, rel=0.05)
  # "~44 GB static", and it fits a 95 GB v5p.
  assert (items["teacher weights"] + state) / GB == pytest.approx(44, rel=0.05)
  assert p.fits
  # "112 KiB" of KV per token: a pool of 64 slots of the bucketed
  # 512 + 4096 (a multiple of the 128-token page) and 16 prefilled prompts.
  per_token = items["rollout KV cache"] / (64 * (512 + 4096) + 16 * 512)
  assert per_token == 112 * 1024
  config.rollout.slots = 16  # a smaller pool bounds the KV
  small = plan.plan(config, devices=1).items["rollout KV cache"]
  assert small / per_token == 16 * (512 + 4096) + 16 * 512
  config.rollout.slots = 0


def test_sharding_divides_and_the_check_fails_on_a_small_chip(config):
  one = plan.plan(config, devices=1)
  config.mesh = "data:1,fsdp:8,tensor:1"
  eight = plan.plan(config, devices=8, chip="v5e")
  for key in ("teacher weights", "student weights", "rollout KV cache"):
    assert eight.items[key] == pytest.approx(one.items[key] / 8, rel=0.01)
  config.mesh = "data:1,fsdp:1,tensor:1"
  assert plan.plan(config, devices=1, chip="v5e").fits is False
  with pytest.raises(ValueError, match=r"unknown chip 'tpu9'"):
    plan.plan(config, devices=1, chip="tpu9")


def test_roles_on_their_own_devices_are_counted_there(config):
  one = plan.plan(config, devices=1)  # every role whole on one device
  c = config.copy_and_resolve_references()
  c.mesh = "data:1,fsdp:2,tensor:1"
  c.teacher.devices, c.rollout.devices = "2:3", "3:4"
  c.teacher.mesh = c.rollout.mesh = "data:1,fsdp:1,tensor:1"
  p = plan.plan(c, devices=4, chip="v5p")
  assert set(p.apart) == {"teacher", "rollout"}
  # The teacher's weights only on its device, whole; its head (bfloat16
  # 4,096 x 151,936, replicated) on the student's.
  assert "teacher weights" not in p.items
  assert p.items["teacher LM head"] == 4096 * 151936 * 2
  assert (
    p.apart["teacher"].items["teacher weights"]
    == (one.items["teacher weights"])
  )
  # The student's state over 2 devices; the sampler's copy and the KV whole
  # on its one.
  assert p.items["student weights"] == pytest.approx(
    one.items["student weights"] / 2, rel=0.01
  )
  assert "rollout KV cache" not in p.items
  rollout = p.apart["rollout"].items
  assert rollout["rollout KV cache"] == one.items["rollout KV cache"]
  assert rollout["student weights"] == one.items["student weights"]
  assert p.peak == max(
    p.total, p.apart["teacher"].total, p.apart["rollout"].total
  )
  assert "(teacher's devices)" in plan.format_plan(p)
  c.teacher.mesh = "data:1,fsdp:2,tensor:1"
  with pytest.raises(ValueError, match=r"teacher.mesh='data:1,fsdp:2,tensor"):
    plan.plan(c, devices=4)


def test_command_prints_the_table(config):
  command = [
    sys.executable,
    str(ROOT / "launch" / "plan.py"),
    f"--config={ROOT / 'configs' / 'opd_rock.py'}:qwen3_8b_to_1p7b,h100x8",
    f"--config.teacher.path={config.teacher.path}",
    f"--config.student.path={config.student.path}",
    "--devices=8",
    "--chip=h100",
  ]
  out = subprocess.run(command, capture_output=True, text=True, check=True)
  assert "teacher weights" in out.stdout and "fits in 80 GiB" in out.stdout


def test_lora_student_counts_its_frozen_base_and_adapters(config):
  c = config.copy_and_resolve_references()
  c.student.path = c.teacher.path  # an 8B student
  c.student.lora.rank = 64
  p = plan.plan(c, devices=1, chip="v5p")
  # r x (in + out) per adapted projection: q, k, v, o, gate, up, down of 36
  # layers (D = H h = 4096, K h = 1024, F = 12288): 174,587,904 float32
  # parameters, PEFT's count for Qwen3-8B at r = 64 on every projection.
  per_layer = 64 * (
    2 * 4096 + 2 * (4096 + 1024) + 2 * 4096 + 2 * (4096 + 12288) + 16384
  )
  assert 36 * per_layer == 174_587_904
  assert p.items["LoRA adapters"] == 36 * per_layer * 4
  assert p.items["adapter gradients"] == p.items["LoRA adapters"]
  assert p.items["Adam moments"] == 2 * p.items["LoRA adapters"]
  plain = plan.model_config(c.student).replace(lora=None)
  itemsize = np.dtype(c.student.dtype).itemsize
  assert p.items["frozen base"] == models.param_count(plain) * itemsize
  assert "student gradients" not in p.items
