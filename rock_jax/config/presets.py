"""Model-pair and hardware presets, and the `preset[,hardware]` argument.

`stage2_config(arg, name)` is what every training config file starts from.
"""

from __future__ import annotations

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


def stage2_config(arg: str | None, name: str) -> ml_collections.ConfigDict:
  """OPD settings for a config argument `preset[,hardware]`.

  The empty preset is the embedded CPU task and `long_tail` its long-tailed
  variant (`EMBEDDED`); the others are `MODEL_PAIRS` on `HARDWARE` (default
  v5p8) with the paper's Stage-2 hyperparameters. The run is called `name`
  (plus `_<preset>`).
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
    embedded_difficulty(c, EMBEDDED[preset])
    return c
  set_model_pair(c, preset, hardware or "v5p8")
  # MATH-format JSONL folder (train.jsonl, test.jsonl), given as
  # --config.data.options=source=/data/math.
  c.data.name = "math"
  c.data.student_prompt_len = 1024
  c.data.teacher_prompt_len = 1024
  c.rollout.max_new_tokens = 7168
  c.rollout.num_samples = 4
  c.train.batch_size = 2  # x 4 rollouts: the script's 8 sequences per step.
  c.train.steps = 5000
  c.train.eval_every = 250
  c.train.eval_examples = 500
  c.train.eval_batch_size = 64
  c.train.checkpoint_every = 250
  c.optim.learning_rate = 2e-6
  c.optim.min_lr = 1e-8
  c.optim.warmup_steps = 250
  c.rock.k = 100
  c.rock.warmup_steps = 500
  c.loss.chunk_size = 1024
  return c


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
