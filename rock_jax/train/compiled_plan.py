"""Per-device memory of a training config, from the compiled programs.

The shape-only plan (`plan.plan`) counts weights, optimizer state and the KV
cache; what it cannot count is what XLA keeps alive inside the programs:
activations, gradients, attention scores, the loss's working set. Here the
real train step and the real rollout are lowered for abstract arguments laid
out on the config's mesh and compiled (`memory_analysis()`; nothing is
allocated, no weights are read), so their temp bytes per device come from
XLA's own schedule.

The programs are compiled by XLA:CPU on fake CPU devices (`cpu_flags`, set
by the launcher before JAX starts), which needs no accelerator. One CPU
artefact is switched off: XLA:CPU has no bfloat16 matmul, so it converts
bfloat16 operands to float32, and loop-invariant code motion then hoists
those converts out of the layer scan, a float32 copy of every layer's
weights at once (most of the temp of the paper's MoE teacher).
Accelerators multiply bfloat16 natively.
TPU and GPU compilers also fuse more, so their temp figures are usually
lower, rarely higher.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from rock_jax import models
from rock_jax import sharding as shd
from rock_jax.config import placement
from rock_jax.models import lora
from rock_jax.models.config import ModelConfig
from rock_jax.opd import train_state
from rock_jax.opd.batch import OPDBatch, TeacherScores
from rock_jax.opd.train_step import Sharders, make_train_step, score_teacher
from rock_jax.sampler import rollout
from rock_jax.train import plan as shape_plan
from rock_jax.train import run_spec, widths


def cpu_flags(devices: int) -> list[str]:
  """XLA flags for compiling on `devices` fake CPU devices (see above)."""
  return [
    f"--xla_force_host_platform_device_count={devices}",
    "--xla_disable_hlo_passes=while-loop-invariant-code-motion",
  ]


@dataclasses.dataclass(frozen=True)
class Compiled:
  """Bytes per device of the compiled programs.

  `persistent`: what lives across steps on the student's devices (the
  train state and the teacher, or its hidden states and head when it has
  its own devices; the step's arguments, its outputs aliasing the donated
  state). `step_temp` / `rollout_temp`: XLA's temporaries of each program.
  `apart`: `(arguments, temp)` per device of the programs of roles on their
  own devices (the teacher's scoring, the rollout). `frozen`: of
  `persistent`, a LoRA student's frozen base (its adapters and their
  moments are the rest of the state). `merged`: the merged copies of the
  adapted kernels a LoRA student samples with, alive beside the rollout on
  the student's devices.
  """

  persistent: int
  step_temp: int
  rollout_temp: int
  hbm_bytes: int | None
  apart: dict[str, tuple[int, int]] = dataclasses.field(default_factory=dict)
  frozen: int = 0
  merged: int = 0

  @property
  def peak(self) -> int:
    """The fullest device: the student's step and (on its devices) the
    rollout run one after the other around the same state."""
    rollout = 0 if "rollout" in self.apart else self.rollout_temp + self.merged
    student = self.persistent + max(self.step_temp, rollout)
    return max([student] + [sum(p) for p in self.apart.values()])

  @property
  def fits(self) -> bool | None:
    return None if self.hbm_bytes is None else self.peak <= self.hbm_bytes


def _abstract(tree, shardings):
  return jax.tree.map(
    lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
    tree,
    shardings,
  )


def device_bytes(tree) -> int:
  """Bytes per device of abstract arrays with shardings (the largest
  shard)."""
  return sum(
    int(np.prod(x.sharding.shard_shape(x.shape))) * x.dtype.itemsize
    for x in jax.tree.leaves(tree)
  )


def abstract_params(cfg: ModelConfig, sharder: shd.Sharder):
  """A model's parameters as sharded `jax.ShapeDtypeStruct`s (nothing
  allocated), laid out by `sharder`."""
  return _abstract(
    models.param_shapes(cfg), models.param_shardings(cfg, sharder)
  )


def _sharders(config, meshes) -> Sharders:
  return Sharders(
    shd.Sharder(meshes["student"], shd.get_rules(config.student.rules)),
    shd.Sharder(meshes["teacher"], shd.get_rules(config.teacher.rules)),
  )


def _teacher_argument(step_cfg, t_params, batch, sharders, apart):
  """The step's `teacher` argument: the parameters, or (teacher apart) the
  `TeacherScores` it sends, compiling its scoring into `apart`."""
  if sharders.teacher.mesh is sharders.student.mesh:
    return t_params
  t_rows = sharders.teacher.sharding((shd.BATCH, shd.LENGTH))
  on_teacher = jax.tree.map(
    lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=t_rows), batch
  )
  scoring = jax.jit(
    lambda p, b: score_teacher(step_cfg, p, b, sharders.teacher)
  ).lower(t_params, on_teacher)
  # Its devices hold all of its weights, also those the scoring's program
  # does not read (the LM head, which the student's devices hold).
  resident = device_bytes((t_params, on_teacher))
  apart["teacher"] = (resident, _memory(scoring).temp_size_in_bytes)
  hidden = scoring.out_info
  whole = jax.sharding.NamedSharding(
    sharders.student.mesh, jax.sharding.PartitionSpec()
  )
  head = jax.eval_shape(
    functools.partial(models.lm_head, step_cfg.teacher),
    models.param_shapes(step_cfg.teacher),
  )
  return TeacherScores(
    jax.ShapeDtypeStruct(
      hidden.shape,
      hidden.dtype,
      sharding=sharders.student.sharding((shd.BATCH, shd.LENGTH)),
    ),
    jax.ShapeDtypeStruct(head.shape, head.dtype, sharding=whole),
  )


def _abstract_batch(config, pipeline, sharder: shd.Sharder) -> OPDBatch:
  """The step's batch as the loop assembles it: each role's prompt width
  followed by the bucketed generation budget."""
  sequences = pipeline.prompts * pipeline.num_samples
  width = rollout.bucket(pipeline.max_new_tokens, rollout.DEFAULT_BUCKETS)

  def rows(length, dtype):
    sharding = sharder.sharding((shd.BATCH, shd.LENGTH), (sequences, length))
    return jax.ShapeDtypeStruct((sequences, length), dtype, sharding=sharding)

  s_len, t_len = (
    widths.padded(widths.resolve(config, role, None)) + width
    for role in ("student", "teacher")
  )
  return OPDBatch(
    student_tokens_BxS=rows(s_len, jnp.int32),
    student_mask_BxS=rows(s_len, jnp.bool_),
    teacher_tokens_BxU=rows(t_len, jnp.int32),
    teacher_mask_BxU=rows(t_len, jnp.bool_),
    completion_mask_BxN=rows(width, jnp.bool_),
  )


def _memory(lowered):
  return lowered.compile().memory_analysis()


def compiled(
  config: ml_collections.ConfigDict,
  devices: int,
  chip: str | None = None,
  teacher: ModelConfig | None = None,
  student: ModelConfig | None = None,
) -> Compiled:
  """Compiles the config's train step and rollout on `devices` devices.

  Args:
    config: a training config (model folders need only config.json).
    devices: how many of this process's devices the mesh spans.
    chip: a key of `plan.CHIPS` for the capacity check, or None.
    teacher, student: model configs (default: from the config's folders).

  Returns:
    A `Compiled`.
  """
  hbm = shape_plan.hbm_bytes(chip)
  available = jax.devices()
  if len(available) < devices:
    raise ValueError(
      f"--devices={devices} but this process sees {len(available)} devices"
    )
  where = placement.plan(config, count=devices)
  meshes = placement.meshes(config, where, available[:devices])
  t_cfg = teacher or shape_plan.model_config(config.teacher)
  s_cfg = student or shape_plan.model_config(config.student)
  sharders = _sharders(config, meshes)
  spec = run_spec.build(config)
  optimizer = spec.optim.optimizer()
  step_cfg = spec.step_config(s_cfg, t_cfg)
  s_params = abstract_params(s_cfg, sharders.student)
  t_params = abstract_params(t_cfg, sharders.teacher)
  frozen = None
  if s_cfg.lora is not None:
    frozen, s_params = lora.split(s_params)
  state = train_state.abstract(
    s_params,
    optimizer,
    s_cfg.vocab_size,
    rock_decay=spec.rocks.decay,
    rock_fast_decay=spec.rocks.fast_decay,
  )
  p = spec.pipeline
  batch = _abstract_batch(config, p, sharders.student)
  apart = {}
  teacher_arg = _teacher_argument(step_cfg, t_params, batch, sharders, apart)
  step = make_train_step(
    step_cfg,
    optimizer,
    state_shardings=jax.tree.map(lambda x: x.sharding, state),
    teacher_shardings=jax.tree.map(lambda x: x.sharding, teacher_arg),
    batch_sharding=sharders.student.sharding((shd.BATCH, shd.LENGTH)),
    frozen_shardings=None
    if frozen is None
    else jax.tree.map(lambda x: x.sharding, frozen),
    sharders=sharders,
  )
  args = (state, teacher_arg, batch, None)
  if frozen is not None:
    args += (frozen,)
  step_memory = _memory(step.lower(*args))
  rollout_memory, merged = _rollout(config, meshes, s_cfg, p, where, apart)
  return Compiled(
    persistent=step_memory.argument_size_in_bytes,
    step_temp=step_memory.temp_size_in_bytes,
    rollout_temp=rollout_memory.temp_size_in_bytes,
    hbm_bytes=hbm,
    apart=apart,
    frozen=0 if frozen is None else device_bytes(frozen),
    merged=merged,
  )


def _rollout(config, meshes, s_cfg, p, where, apart):
  """The rollout's compiled memory (into `apart` when it has its own
  devices), and the bytes per device of the merged kernels a LoRA student
  samples with on the student's devices (0 otherwise)."""
  rules = config.rollout.rules or config.student.rules
  sampler = shd.Sharder(meshes["rollout"], shd.get_rules(rules))
  merging = s_cfg.lora is not None and p.merge_adapters
  sampled = s_cfg.replace(lora=None) if merging else s_cfg
  sampled_params = abstract_params(sampled, sampler)
  rollout_memory = _memory(
    rollout.lower(
      sampled,
      sampled_params,
      p.prompts,
      widths.padded(widths.resolve(config, "student", None)),
      p.max_new_tokens,
      p.sampling,
      num_samples=p.num_samples,
      slots=p.slots,
      page_size=p.page_size,
      sharder=sampler,
    )
  )
  if "rollout" in where.apart:
    apart["rollout"] = (
      rollout_memory.argument_size_in_bytes,
      rollout_memory.temp_size_in_bytes,
    )
  merged = 0
  if merging and "rollout" not in where.apart:
    # Only the adapted kernels are new arrays; the rest pass through.
    merged = device_bytes(
      [
        x
        for path, x in jax.tree_util.tree_leaves_with_path(sampled_params)
        if lora.adapts(tuple(k.key for k in path), s_cfg.lora)
      ]
    )
  return rollout_memory, merged


def format_compiled(c: Compiled) -> str:
  """The compiled figures, with a verdict when a chip is given."""
  gib = 2**30
  lines = [
    "compiled (XLA:CPU, per device):",
    f"  {'state + teacher':<18} {c.persistent / gib:8.2f} GiB",
    *(
      [f"  {'  of which base':<18} {c.frozen / gib:8.2f} GiB"]
      if c.frozen
      else []
    ),
    f"  {'train step temp':<18} {c.step_temp / gib:8.2f} GiB",
    f"  {'rollout temp':<18} {c.rollout_temp / gib:8.2f} GiB",
  ]
  if c.merged:
    lines.append(f"  {'merged kernels':<18} {c.merged / gib:8.2f} GiB")
  names = {"teacher": "teacher scoring", "rollout": "rollout"}
  for role, (arguments, temp) in sorted(c.apart.items()):
    lines += [
      f"  on the {role}'s devices:",
      f"    {names[role] + ' arguments':<26} {arguments / gib:8.2f} GiB",
      f"    {names[role] + ' temp':<26} {temp / gib:8.2f} GiB",
    ]
  lines.append(f"  {'peak':<18} {c.peak / gib:8.2f} GiB")
  if c.hbm_bytes is not None:
    verdict = "fits" if c.fits else "DOES NOT FIT"
    lines.append(
      f"  {verdict} in {c.hbm_bytes / gib:.0f} GiB "
      f"({(c.hbm_bytes - c.peak) / gib:+.2f} GiB spare)"
    )
  return "\n".join(lines)
