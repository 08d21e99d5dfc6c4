"""The compiled memory plan: the real step and rollout, compiled only."""

import pathlib
import re
import subprocess
import sys

import jax
import numpy as np
import pytest
import transformers

from rock_jax import models
from rock_jax.config import presets
from rock_jax.train import compiled_plan

ROOT = pathlib.Path(__file__).parents[2]
TINY = dict(
  vocab_size=512,
  hidden_size=64,
  num_hidden_layers=1,
  num_attention_heads=4,
  num_key_value_heads=2,
  head_dim=16,
  intermediate_size=128,
)


@pytest.fixture(scope="module")
def config(tmp_path_factory):
  root = tmp_path_factory.mktemp("models")
  c = presets.base("qwen3_8b_to_1p7b", "plan")
  for role in ("teacher", "student"):
    transformers.Qwen3Config(**TINY).save_pretrained(root / role)
    c[role].path = str(root / role)
  c.mesh = "data:1,fsdp:8,tensor:1"
  c.train.batch_size, c.rollout.num_samples = 4, 4  # 16 sequences
  c.data.student_prompt_len = c.data.teacher_prompt_len = 64
  c.rollout.max_new_tokens = 256
  c.loss.chunk_size = 256
  return c


def _step_temp(config, **changes):
  c = config.copy_and_resolve_references()
  for field, value in changes.items():
    section, key = field.split(".")
    c[section][key] = value
  return compiled_plan.compiled(c, devices=8).step_temp


def test_micro_batches_shrink_the_step(config):
  # Blockwise against dense attention: benchmarks/long_context.py.
  whole = _step_temp(config)
  half = _step_temp(config, **{"train.micro_batch_size": 8})
  assert half < whole


def test_roles_on_their_own_devices_compile_on_their_meshes(config):
  c = config.copy_and_resolve_references()
  c.mesh = "data:1,fsdp:4,tensor:1"
  c.teacher.devices, c.rollout.devices = "4:6", "6:8"
  c.teacher.mesh = c.rollout.mesh = "data:2,fsdp:1,tensor:1"
  split = compiled_plan.compiled(c, devices=8)
  assert set(split.apart) == {"teacher", "rollout"}
  # The teacher's scoring holds its whole parameters (its rules split over
  # fsdp, which its mesh does not have).
  teacher_bytes = sum(
    int(np.prod(x.shape)) * x.dtype.itemsize
    for x in jax.tree.leaves(
      models.param_shapes(compiled_plan.shape_plan.model_config(c.teacher))
    )
  )
  assert split.apart["teacher"][0] >= teacher_bytes
  assert all(temp > 0 for _, temp in split.apart.values())
  assert split.peak == max(
    split.persistent + split.step_temp,
    *(sum(v) for v in split.apart.values()),
  )
  text = compiled_plan.format_compiled(split)
  assert "on the teacher's devices" in text and "on the rollout's" in text


def test_command_prints_the_compiled_figures(config):
  command = [
    sys.executable,
    str(ROOT / "launch" / "plan.py"),
    f"--config={ROOT / 'configs' / 'opd_rock.py'}:qwen3_8b_to_1p7b,h100x8",
    f"--config.teacher.path={config.teacher.path}",
    f"--config.student.path={config.student.path}",
    "--config.train.batch_size=4",
    "--config.rollout.max_new_tokens=64",
    "--config.mesh=data:1,fsdp:2,tensor:1",
    "--devices=2",
    "--chip=h100",
    "--compile",
  ]
  out = subprocess.run(command, capture_output=True, text=True, check=True)
  assert "teacher weights" in out.stdout
  compiled = out.stdout.split("compiled (XLA:CPU, per device):")[1]
  figures = dict(re.findall(r"  (\S[\w +]+?)\s+([\d.]+) GiB", compiled))
  assert set(figures) >= {"train step temp", "rollout temp", "peak"}
  assert "fits in 80 GiB" in compiled


def test_lora_counts_the_frozen_base_and_the_adapters_apart(config):
  c = config.copy_and_resolve_references()
  full = compiled_plan.compiled(c, devices=8)
  c.student.lora.rank = 8
  adapted = compiled_plan.compiled(c, devices=8)
  shape = compiled_plan.shape_plan.plan(c, devices=8)
  assert shape.items["frozen base"] == adapted.frozen > 0
  assert shape.items["Adam moments"] == 2 * shape.items["LoRA adapters"]
  assert "student gradients" not in shape.items
  # Merged rollouts hold a copy of every adapted kernel beside the KV.
  assert adapted.merged == shape.items["merged kernels"] > 0
  assert adapted.persistent < full.persistent
  c.student.lora.rollout = "applied"
  assert compiled_plan.compiled(c, devices=8).merged == 0
  assert "merged kernels" in compiled_plan.format_compiled(adapted)
