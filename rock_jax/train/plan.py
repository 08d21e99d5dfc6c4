"""Per-device memory of a training config, from shapes only (no weights).

Counts what the trainer allocates, laid out by the config's mesh and rules:
the teacher's weights, the student's weights, gradients and Adam moments (in
the student's parameter dtype), the rollout KV (its slot pool at the
bucketed length and each prompt's prefill), and the chunked loss's working
set.
With `teacher.devices` / `rollout.devices` each role's devices are counted
on their own (the student's devices hold the teacher's LM head,
replicated, instead of its weights; the rollout's hold a copy of the
student's weights and the KV), and the peak is the fullest device.
Activations of the student's forward and backward are not counted (they
depend on remat and on XLA's schedule): `compiled_plan` compiles the step
and the rollout for those.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from rock_jax import models
from rock_jax import sharding as shd
from rock_jax.config import adapters, placement
from rock_jax.models import hf, lora
from rock_jax.models.config import ModelConfig
from rock_jax.models.transformer import CACHE_LOGICAL
from rock_jax.sampler import rollout
from rock_jax.train import run_spec, session, widths

# High-bandwidth memory per device, GiB.
CHIPS = {
  "v5e": 16,
  "v5p": 95,
  "v6e": 32,
  "h100": 80,
  "h200": 141,
  "a100": 80,
}

# The chunked loss+grad holds about four fp32 [chunk, V] buffers
# (benchmarks/loss_memory.py).
_LOSS_BUFFERS = 4


@dataclasses.dataclass(frozen=True)
class Plan:
  """Bytes per device by item, the mesh, and the chip's capacity: the
  student's devices, and in `apart` those of roles on their own devices."""

  items: dict[str, int]
  mesh: dict[str, int]
  hbm_bytes: int | None
  apart: dict[str, Plan] = dataclasses.field(default_factory=dict)

  @property
  def total(self) -> int:
    return sum(self.items.values())

  @property
  def peak(self) -> int:
    """The fullest device's bytes, over every role's devices."""
    return max([self.total] + [p.total for p in self.apart.values()])

  @property
  def fits(self) -> bool | None:
    return None if self.hbm_bytes is None else self.peak <= self.hbm_bytes


def _abstract_mesh(
  text: str, devices: int, field: str = "mesh", where: str = "--devices"
) -> jax.sharding.AbstractMesh:
  axes = shd.parse_mesh(text, field)
  fixed = math.prod(size for _, size in axes if size != -1)
  sizes = [devices // fixed if size == -1 else size for _, size in axes]
  if math.prod(sizes) != devices:
    raise ValueError(
      f"{field}={text!r} has {math.prod(sizes)} devices, not the {devices} "
      f"of {where}"
    )
  return jax.sharding.AbstractMesh(
    tuple(sizes), tuple(name for name, _ in axes)
  )


def _per_device(shape, dtype, logical, rules, mesh) -> int:
  spec = shd.logical_to_spec(logical, rules, mesh, shape)
  shards = 1
  for axes in spec:
    for axis in () if axes is None else np.atleast_1d(axes):
      shards *= mesh.shape[str(axis)]
  return int(np.prod(shape)) * jnp.dtype(dtype).itemsize // shards


def _param_bytes(cfg: ModelConfig, rules, mesh, part: str = "") -> int:
  """Bytes per device of a model's parameters; `part` "base" or
  "adapters" counts one side of a LoRA model (`lora.split`)."""
  shapes = models.param_shapes(cfg)
  logical = models.param_logical_axes(cfg)
  if part:
    side = {"base": 0, "adapters": 1}[part]
    shapes, logical = lora.split(shapes)[side], lora.split(logical)[side]
  total = jax.tree.map(
    lambda names, x: _per_device(x.shape, x.dtype, names, rules, mesh),
    logical,
    shapes,
    is_leaf=lambda n: isinstance(n, tuple),
  )
  return int(sum(jax.tree.leaves(total)))


def hbm_bytes(chip: str | None) -> int | None:
  """The capacity of one `chip` (a key of `CHIPS`), or None without one."""
  if chip is None:
    return None
  if chip not in CHIPS:
    raise ValueError(f"unknown chip {chip!r}; available: {sorted(CHIPS)}")
  return CHIPS[chip] * 2**30


def model_config(role: ml_collections.ConfigDict) -> ModelConfig:
  """A role's architecture and dtypes from its folder's config.json, with
  its LoRA adapters (`<role>.lora`)."""
  dtype = role.dtype
  cfg = hf.load_config(
    role.path, dtype=role.compute_dtype or dtype, param_dtype=dtype
  )
  return session.role_model(cfg, role).replace(lora=adapters.spec(role))


def plan(
  config: ml_collections.ConfigDict,
  devices: int,
  chip: str | None = None,
  teacher: ModelConfig | None = None,
  student: ModelConfig | None = None,
) -> Plan:
  """Per-device bytes of `config` on `devices` devices of `chip`.

  Args:
    config: a training config (model folders need only config.json).
    devices: number of devices the mesh spans.
    chip: a key of `CHIPS` for the capacity check, or None.
    teacher, student: model configs (default: from the config's folders).

  Returns:
    A `Plan`.
  """
  hbm = hbm_bytes(chip)
  where = placement.plan(config, count=devices)
  meshes = {"student": _abstract_mesh(config.mesh, len(where.student))}
  for role in where.apart:
    field = f"{role}.mesh" if config[role].mesh else "mesh"
    meshes[role] = _abstract_mesh(
      config[role].mesh or config.mesh,
      len(getattr(where, role)),
      field,
      f"{role}.devices={config[role].devices!r}",
    )
  mesh = meshes["student"]
  t_cfg = teacher or model_config(config.teacher)
  s_cfg = student or model_config(config.student)
  t_rules = shd.get_rules(config.teacher.rules)
  s_rules = shd.get_rules(config.student.rules)
  p = run_spec.build(config).pipeline
  sequences = p.prompts * p.num_samples
  prompt = widths.padded(widths.resolve(config, "student", None))
  budget = rollout.bucket(p.max_new_tokens, rollout.DEFAULT_BUCKETS)
  pages = -(-(prompt + budget) // p.page_size)

  def kv_bytes(rows, length, rules, mesh):
    shape = (s_cfg.num_layers, rows, length, s_cfg.num_kv_heads, s_cfg.head_dim)
    return 2 * _per_device(
      shape, s_cfg.compute_dtype, CACHE_LOGICAL, rules, mesh
    )

  def kv(rules, mesh):
    # The slot pool (`sampler.slot_pool`) and each prompt's prefilled KV.
    return kv_bytes(
      p.slots or sequences, pages * p.page_size, rules, mesh
    ) + kv_bytes(p.prompts, prompt, rules, mesh)

  batch_devices = mesh.shape.get("data", 1) * mesh.shape.get("fsdp", 1)
  chunk = -(-config.loss.chunk_size // batch_devices)
  items = {"teacher weights": _param_bytes(t_cfg, t_rules, mesh)}
  apart = {}
  if "teacher" in where.apart:
    # Replicated on the student's devices (`pipeline.Pipeline._head`).
    head = t_cfg.hidden_size * t_cfg.vocab_size
    items = {"teacher LM head": head * jnp.dtype(t_cfg.param_dtype).itemsize}
    apart["teacher"] = Plan(
      {"teacher weights": _param_bytes(t_cfg, t_rules, meshes["teacher"])},
      dict(meshes["teacher"].shape),
      hbm,
    )
  items.update(_student_items(s_cfg, s_rules, mesh))
  items["loss working set"] = _LOSS_BUFFERS * chunk * s_cfg.vocab_size * 4
  # A LoRA student samples with the adapters merged into a copy of the
  # kernels they adapt, or as it trains.
  merged = s_cfg.lora is not None and p.merge_adapters
  sampled = s_cfg.replace(lora=None) if merged else s_cfg
  if "rollout" in where.apart:
    r_rules = shd.get_rules(config.rollout.rules or config.student.rules)
    r_mesh = meshes["rollout"]
    apart["rollout"] = Plan(
      {
        "student weights": _param_bytes(sampled, r_rules, r_mesh),
        "rollout KV cache": kv(r_rules, r_mesh),
      },
      dict(r_mesh.shape),
      hbm,
    )
  else:
    items["rollout KV cache"] = kv(s_rules, mesh)
    if merged:
      items["merged kernels"] = _merged_bytes(s_cfg, s_rules, mesh)
  return Plan(items, dict(mesh.shape), hbm, apart)


def _student_items(cfg: ModelConfig, rules, mesh) -> dict[str, int]:
  """The student's weights, gradients and Adam moments: all of its
  parameters, or under LoRA the frozen base (no gradients, no moments)
  and the adapters."""
  if cfg.lora is None:
    weights = _param_bytes(cfg, rules, mesh)
    return {
      "student weights": weights,
      "student gradients": weights,
      "Adam moments": 2 * weights,
    }
  adapters = _param_bytes(cfg, rules, mesh, "adapters")
  return {
    "frozen base": _param_bytes(cfg, rules, mesh, "base"),
    "LoRA adapters": adapters,
    "adapter gradients": adapters,
    "Adam moments": 2 * adapters,
  }


def _merged_bytes(cfg: ModelConfig, rules, mesh) -> int:
  """Bytes per device of the adapted kernels' merged copies."""
  shapes = models.param_shapes(cfg)
  logical = models.param_logical_axes(cfg)
  total = 0
  for path, x in jax.tree_util.tree_leaves_with_path(shapes):
    keys = tuple(k.key for k in path)
    if lora.adapts(keys, cfg.lora):
      names = logical
      for key in keys:
        names = names[key]
      total += _per_device(x.shape, x.dtype, names, rules, mesh)
  return total


def format_plan(p: Plan) -> str:
  """A table of GiB per device (per role's devices when roles are apart),
  with a warning when the fullest device does not fit."""
  gib = 2**30
  lines = []
  for role, part in (("student", p), *sorted(p.apart.items())):
    where = f" ({role}'s devices)" if p.apart else ""
    lines.append(f"per device{where}, mesh {part.mesh}:")
    lines += [
      f"  {name:<18} {size / gib:8.2f} GiB" for name, size in part.items.items()
    ]
    lines.append(f"  {'total':<18} {part.total / gib:8.2f} GiB")
  if p.hbm_bytes is not None:
    verdict = "fits" if p.fits else "DOES NOT FIT"
    lines.append(
      f"  {verdict} in {p.hbm_bytes / gib:.0f} GiB "
      f"({(p.hbm_bytes - p.peak) / gib:+.2f} GiB left for activations)"
    )
  return "\n".join(lines)
