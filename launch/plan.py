"""Prints the per-device memory of a training config.

  python launch/plan.py --config=configs/opd_rock.py:qwen3_8b_to_1p7b,h100x8 \
      --config.teacher.path=/models/Qwen3-8B \
      --config.student.path=/models/Qwen3-1.7B --devices=8 --chip=h100

By default from shapes only (weights, optimizer state, KV cache; seconds).
With --compile it also lowers and compiles the real train step and rollout
on --devices fake CPU devices and reports XLA's temp bytes (activations,
gradients, attention) and the peak (minutes for billion-parameter models).
Model folders need only their config.json; no weights are read and no
accelerator is needed. Exits with status 1 when the plan does not fit --chip.
"""

import os
import sys

from absl import app, flags
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file(
  "config", None, "Config file[:preset[,hardware]].", lock_config=True
)
_DEVICES = flags.DEFINE_integer("devices", 8, "Devices the mesh spans.")
_CHIP = flags.DEFINE_string("chip", None, "Chip for the capacity check.")
_COMPILE = flags.DEFINE_bool(
  "compile", False, "Also compile the train step and rollout (XLA:CPU)."
)


def _fake_cpu_devices(count: int) -> None:
  # Before anything initialises a backend: XLA reads its flags then.
  import jax

  from rock_jax.train import compiled_plan

  jax.config.update("jax_platforms", "cpu")
  flags = " ".join(compiled_plan.cpu_flags(count))
  os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {flags}"


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  if _COMPILE.value:
    _fake_cpu_devices(_DEVICES.value)
  from rock_jax.train import plan

  result = plan.plan(_CONFIG.value, _DEVICES.value, _CHIP.value)
  print(plan.format_plan(result))
  fits = result.fits
  if _COMPILE.value:
    from rock_jax.train import compiled_plan

    compiled = compiled_plan.compiled(
      _CONFIG.value, _DEVICES.value, _CHIP.value
    )
    print(compiled_plan.format_compiled(compiled))
    fits = compiled.fits
  if fits is False:
    sys.exit(1)


if __name__ == "__main__":
  flags.mark_flag_as_required("config")
  app.run(main)
