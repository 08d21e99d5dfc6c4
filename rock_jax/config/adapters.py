"""`student.lora`: the student's low-rank adapters, from the config.

`validate` checks the keys with the rest of the config; `spec` reads them
(or a PEFT folder's `adapter_config.json`) into the `LoraSpec` the student's
`ModelConfig` carries; `attach` adds the adapters, fresh or from that
folder, to the loaded base.
"""

from __future__ import annotations

import dataclasses

import jax
import ml_collections

from rock_jax import storage
from rock_jax.config import fields, keys
from rock_jax.models import lora, model, peft_adapter
from rock_jax.models.config import DTYPES, ModelConfig

# How rollouts see the adapters: folded into the weights at each weight
# sync, or applied in every decode step.
ROLLOUTS = ("merged", "applied")


def _fail(field: str, value, expected: str):
  raise ValueError(f"{field}={value!r}: expected {expected}")


def enabled(c: ml_collections.ConfigDict) -> bool:
  """Whether a role config asks for adapters."""
  return c.lora.rank != 0 or bool(c.lora.adapter)


def validate(config: ml_collections.ConfigDict) -> None:
  """Fails on a bad `<role>.lora` key, and on adapters for the teacher."""
  t = config.teacher.lora
  if enabled(config.teacher):
    field, value = ("teacher.lora.rank", t.rank)
    if not t.rank:
      field, value = ("teacher.lora.adapter", t.adapter)
    _fail(
      field,
      value,
      "no adapters on the teacher (rank 0, no adapter): it is frozen whole; "
      "to distil from a LoRA-tuned teacher, merge its adapter into the base "
      "first (PEFT's merge_and_unload, save_pretrained) and give that folder "
      "as teacher.path",
    )
  c = config.student.lora
  rank = c.rank
  if isinstance(rank, bool) or not isinstance(rank, int) or rank < 0:
    _fail("student.lora.rank", rank, "an integer > 0 (0: no adapters)")
  if not enabled(config.student):
    changed = [
      f"student.lora.{k}={c[k]!r}"
      for k, v in keys.model_config().lora.items()
      if k not in ("rank", "adapter") and c[k] != v
    ]
    if changed:
      _fail(
        "student.lora.rank",
        rank,
        f"an integer > 0 with {', '.join(changed)} (rank 0 trains every "
        "weight, without adapters)",
      )
    return
  if not isinstance(c.alpha, (int, float)) or c.alpha <= 0:
    _fail("student.lora.alpha", c.alpha, "a number > 0")
  targets = fields.parse_list(c.targets)
  unknown = [t for t in targets if t not in lora.TARGETS]
  if not targets or unknown:
    _fail(
      "student.lora.targets",
      c.targets,
      f"a comma list of projections from {list(lora.TARGETS)} (no match "
      f"for {unknown})",
    )
  if not 0 <= c.dropout < 1:
    _fail("student.lora.dropout", c.dropout, "a value in [0, 1)")
  if c.dtype not in DTYPES:
    _fail("student.lora.dtype", c.dtype, f"one of {list(DTYPES)}")
  if c.rollout not in ROLLOUTS:
    _fail("student.lora.rollout", c.rollout, f"one of {list(ROLLOUTS)}")
  if c.adapter:
    where = storage.join(c.adapter, peft_adapter.CONFIG_FILE)
    if not storage.isfile(where):
      _fail(
        "student.lora.adapter",
        c.adapter,
        f"a PEFT LoRA adapter folder ({peft_adapter.CONFIG_FILE} + "
        f"{peft_adapter.WEIGHTS_FILE})",
      )


def spec(c: ml_collections.ConfigDict) -> lora.LoraSpec | None:
  """The student's `LoraSpec` (None without adapters). A PEFT folder's
  rank, alpha and targets win; the config may repeat them, not contradict
  them."""
  if not enabled(c):
    return None
  settings = dict(dropout=float(c.lora.dropout), dtype=c.lora.dtype)
  if not c.lora.adapter:
    targets = fields.parse_list(c.lora.targets)
    return lora.LoraSpec(
      rank=c.lora.rank,
      alpha=float(c.lora.alpha),
      targets=tuple(t for t in lora.TARGETS if t in targets),
      **settings,
    )
  folder = peft_adapter.read_spec(c.lora.adapter)
  if c.lora.rank and c.lora.rank != folder.rank:
    raise ValueError(
      f"student.lora.rank={c.lora.rank}, but student.lora.adapter="
      f"{c.lora.adapter!r} has r={folder.rank}; set rank to 0 (or "
      f"{folder.rank}) to resume that adapter"
    )
  return dataclasses.replace(folder, **settings)


def attach(
  cfg: ModelConfig, params, c: ml_collections.ConfigDict, sharder, seed: int
):
  """`(cfg, params)` of the adapted student: the base `params` with fresh
  adapters (seeded by `seed`) or the PEFT folder's, laid out by `sharder`."""
  adapted = spec(c)
  if adapted is None:
    return cfg, params
  try:
    cfg = cfg.replace(lora=adapted)
  except ValueError as e:
    raise ValueError(f"student.lora.targets={c.lora.targets!r}: {e}") from e
  if c.lora.adapter:
    adapters = peft_adapter.load(cfg, c.lora.adapter, sharder)
  else:
    adapters = model.init_adapters(cfg, jax.random.key(seed), sharder)
  return cfg, lora.combine(params, adapters)
