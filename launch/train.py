"""Trains a student by on-policy distillation (or Stage-1 KD) from a config.

  python launch/train.py --config=configs/opd_rock.py
  python launch/train.py --config=configs/opd_rock.py:paper,h100x8 \
      --config.teacher.path=... --config.student.path=... --workdir=...

Re-running the same command resumes from the newest checkpoint in the work
directory. Compiled programs are cached (`--config.compile_cache`, default
under the rock_jax cache folder; `off` turns it off), so a second start of
the same config skips most compiling. `--profile_steps=a:b` traces steps a..b
with jax.profiler into <workdir>/profile (TensorBoard/XProf, or Perfetto:
its perfetto_trace.json.gz). All the work is in `rock_jax.train.run`.
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
_PROFILE_STEPS = flags.DEFINE_string(
  "profile_steps",
  None,
  "Overrides config.train.profile_steps: steps 'a:b' traced with "
  "jax.profiler into <workdir>/profile.",
)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  from rock_jax.config import runtime

  config = _CONFIG.value
  if _PROFILE_STEPS.value is not None:
    with config.unlocked():
      config.train.profile_steps = _PROFILE_STEPS.value
  runtime.setup(config)
  from rock_jax import train

  train.run(config, _WORKDIR.value)


if __name__ == "__main__":
  app.run(main)
