"""Prints the per-device memory of a training config, from shapes only.

  python launch/plan.py --config=configs/opd_rock.py:qwen3_8b_to_1p7b,h100x8 \
      --config.teacher.path=/models/Qwen3-8B \
      --config.student.path=/models/Qwen3-1.7B --devices=8 --chip=h100

Model folders need only their config.json; no weights are read and no
accelerator is needed. Exits with status 1 when the plan does not fit --chip.
"""

import sys

from absl import app, flags
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file(
  "config", None, "Config file[:preset[,hardware]].", lock_config=True
)
_DEVICES = flags.DEFINE_integer("devices", 8, "Devices the mesh spans.")
_CHIP = flags.DEFINE_string("chip", None, "Chip for the capacity check.")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  from rock_jax.train import plan

  result = plan.plan(_CONFIG.value, _DEVICES.value, _CHIP.value)
  print(plan.format_plan(result))
  if result.fits is False:
    sys.exit(1)


if __name__ == "__main__":
  flags.mark_flag_as_required("config")
  app.run(main)
