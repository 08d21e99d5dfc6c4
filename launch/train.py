"""Trains a student by on-policy distillation (or Stage-1 KD) from a config.

  python launch/train.py --config=configs/opd_rock.py
  python launch/train.py --config=configs/opd_rock.py:paper,h100x8 \
      --config.teacher.path=... --config.student.path=... --workdir=...

Re-running the same command resumes from the newest checkpoint in the work
directory. Compiled programs are cached (`--config.compile_cache`, default
under the rock_jax cache folder; `off` turns it off), so a second start of
the same config skips most compiling. All the work is in `rock_jax.train.run`.
"""

from absl import app, flags
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file(
  "config",
  "configs/opd_rock.py",
  "Config file[:preset[,hardware]].",
  lock_config=True,
)
_WORKDIR = flags.DEFINE_string(
  "workdir", None, "Overrides config.workdir (default ./workdir/<name>)."
)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  from rock_jax.config import runtime

  runtime.setup(_CONFIG.value)
  from rock_jax import train

  train.run(_CONFIG.value, _WORKDIR.value)


if __name__ == "__main__":
  app.run(main)
