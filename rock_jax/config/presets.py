"""Model-pair and hardware presets, and the `preset[,hardware]` argument.

`base(arg, name)` is what every training config file starts from: where it
runs (the embedded task, or a model pair on some hardware); the config file
sets its experiment.
"""

from __future__ import annotations

import importlib.util
import os

import ml_collections

from rock_jax import storage
from rock_jax.config import keys
from rock_jax.data import embedded_task

# Hugging Face model pairs: (teacher folder name, student folder name).
MODEL_PAIRS = {
  "qwen3_8b_to_1p7b": ("Qwen3-8B", "Qwen3-1.7B"),
  # The paper's pair; the MoE teacher uses the `expert` sharding rules.
  "paper": ("Qwen3-30B-A3B-Instruct-2507", "Qwen3-4B-Instruct-2507"),
}

# Meshes for 8-chip hosts: one TPU v5p-8 VM (4 chips, 8 TensorCores seen as
# 4 devices in megacore mode) and one 8xH100 node. Parameters and batch are
# fully sharded over `fsdp`; teacher weights too (they do not fit replicated
# next to the student's optimizer state).
HARDWARE = {
  "v5p8": "data:1,fsdp:4,tensor:1",
  "h100x8": "data:1,fsdp:8,tensor:1",
}


def set_model_pair(
  c: ml_collections.ConfigDict,
  pair: str,
  hardware: str,
  models_dir: str = "/models",
) -> None:
  """Points teacher and student at a Hugging Face pair laid out for hardware.

  Args:
    c: the config to modify.
    pair: a key of `MODEL_PAIRS`.
    hardware: a key of `HARDWARE`.
    models_dir: folder holding the model folders (override the paths with
      `--config.teacher.path=...` / `--config.student.path=...`).
  """
  if pair not in MODEL_PAIRS:
    raise ValueError(
      f"unknown model pair {pair!r}; available: {sorted(MODEL_PAIRS)}"
    )
  if hardware not in HARDWARE:
    raise ValueError(
      f"unknown hardware {hardware!r}; available: {sorted(HARDWARE)}"
    )
  teacher, student = MODEL_PAIRS[pair]
  c.mesh = HARDWARE[hardware]
  for role, folder in ((c.teacher, teacher), (c.student, student)):
    role.path = storage.join(models_dir, folder)
    role.compute_dtype = "bfloat16"
  # The frozen teacher is stored in bfloat16. The student keeps float32
  # master weights (and so float32 Adam moments): a 2e-6 step is far below
  # bfloat16's resolution of a weight and would round away. Its backward
  # recomputes each layer instead of storing long-sequence activations.
  c.teacher.dtype = "bfloat16"
  c.student.dtype = "float32"
  c.student.remat = True
  c.student.rules = "fsdp"
  c.teacher.rules = "expert" if "A3B" in teacher else "fsdp"
  if "A3B" in teacher:
    # Routed intermediates of 1,024 positions at a time: at 9,216
    # positions a whole-sequence dispatch holds several GiB per layer.
    c.teacher.moe_chunk_size = 1024
  # Qwen3 Instruct-2507 has no thinking mode; the hybrid models' thinking is
  # switched off as in the paper.
  c.student.template_kwargs = c.teacher.template_kwargs = (
    "enable_thinking=false"
  )


# Config arguments that select the embedded task, and its difficulty.
EMBEDDED = {"": "default", "long_tail": "long_tail"}
PRESETS = tuple(EMBEDDED) + tuple(MODEL_PAIRS)


def embedded_difficulty(c: ml_collections.ConfigDict, difficulty: str) -> None:
  """Sets the embedded task's difficulty and the teacher recipe it needs.

  A task whose problems name items (`long_tail`) also needs its teacher to
  copy the item's unit from its prompt for every one of the rare items: on
  the default 600-step schedule it ends at a held-out accuracy of 0.63, on
  a 1,500-step one measured every 100 steps it is in the 0.95 band by step
  900.
  """
  c.embedded.difficulty = difficulty
  if embedded_task.get_difficulty(difficulty).num_items:
    c.embedded.teacher.steps = 1500
    c.embedded.teacher.eval_every = 100


def base(arg: str | None, name: str) -> ml_collections.ConfigDict:
  """Where a config file's experiment runs, for a config argument
  `preset[,hardware]`: every key at its default, then the embedded CPU task
  (the empty preset; `long_tail` its long-tailed variant, `EMBEDDED`) or a
  `MODEL_PAIRS` pair laid out on `HARDWARE` (default v5p8). The experiment's
  own settings are the config file's. The run is called `name` (plus
  `_<preset>`).
  """
  preset, hardware = parse_arg(arg, PRESETS)
  c = keys.base_config()
  c.name = name + (f"_{preset}" if preset else "")
  if preset in EMBEDDED:
    if hardware:
      raise ValueError(
        f"config argument {arg!r}: hardware applies to the model pairs "
        f"{sorted(MODEL_PAIRS)}; the embedded task runs on any machine"
      )
    # The embedded task plants 18 rock ids (K = 20 leaves room for them).
    c.rock.k = 20
    # Two-layer stacks: unrolled, a step skips writing and reading back
    # each layer's residuals (benchmarks/opd_step.py: 0.14 -> 0.12 s).
    c.teacher.scan_unroll = c.student.scan_unroll = 0
    embedded_difficulty(c, EMBEDDED[preset])
    return c
  set_model_pair(c, preset, hardware or "v5p8")
  return c


def paper_freeze(c: ml_collections.ConfigDict) -> None:
  """The paper's Rock-Freeze selection: the tracker's top K by R(v) as it
  ranks them, without the guards that keep content tokens out of the set
  (`rock.protect`, `rock.min_loss_ratio`, `rock.min_score_ratio`). With
  λ = 0 this is the recipe whose cost docs/reproduction.md measures."""
  c.rock.protect = ""
  c.rock.min_loss_ratio = 0.0
  c.rock.min_score_ratio = 0.0


def is_model_pair(arg: str | None) -> bool:
  """Whether a config argument names a real model pair (not the embedded
  task)."""
  return parse_arg(arg, PRESETS)[0] in MODEL_PAIRS


def load_sibling(config_file: str, name: str):
  """The config module `name` in the folder of `config_file` (a config
  file that builds on another experiment's)."""
  path = os.path.join(os.path.dirname(os.path.abspath(config_file)), name)
  spec = importlib.util.spec_from_file_location(
    f"rock_jax_config_{os.path.splitext(name)[0]}", path
  )
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def parse_arg(arg: str | None, presets=PRESETS) -> tuple[str, str | None]:
  """Splits a config argument `preset[,hardware]` and checks both names."""
  parts = [p.strip() for p in (arg or "").split(",") if p.strip()]
  preset = parts[0] if parts else ""
  if preset not in presets:
    raise ValueError(
      f"unknown preset {preset!r}; available: {sorted(presets)} ('' is the "
      "embedded default)"
    )
  hardware = parts[1] if len(parts) > 1 else None
  if len(parts) > 2 or (hardware is not None and hardware not in HARDWARE):
    raise ValueError(
      f"config argument {arg!r}: expected preset[,hardware] with hardware "
      f"one of {sorted(HARDWARE)}"
    )
  return preset, hardware
