"""The flags that say which model a one-model command (evaluate.py,
generate.py) loads, and the config it runs under.

Imported by those launchers, which run with this folder on sys.path.
"""

from absl import app, flags
from ml_collections import config_flags

CONFIG = config_flags.DEFINE_config_file(
  "config",
  "configs/opd_rock.py",
  "Config file[:preset[,hardware]]: the data, prompt widths, template, "
  "sampling and layout (not with --workdir, whose config.json says them).",
  lock_config=True,
)
MODEL = flags.DEFINE_string(
  "model", "", "Hugging Face model folder or gs:// URL (or --workdir)."
)
WORKDIR = flags.DEFINE_string(
  "workdir", "", "A run's work directory: its export, or --step."
)
STEP = flags.DEFINE_integer(
  "step", 0, "With --workdir: a checkpoint step (0: the export)."
)
ROLE = flags.DEFINE_enum(
  "role",
  "student",
  ["student", "teacher"],
  "Whose prompt format and layout the model takes (the teacher's prompt "
  "carries the privileged text).",
)


def config():
  """The run's config.json with --workdir, else --config, set up for this
  process (`runtime.setup`); exactly one of --model and --workdir."""
  if bool(MODEL.value) == bool(WORKDIR.value):
    raise app.UsageError("give --model or --workdir, one of them")
  if WORKDIR.value and flags.FLAGS["config"].present:
    raise app.UsageError(
      "--config with --workdir: the run's config.json says the data, "
      "template, sampling and layout; give its export as --model to use "
      "another config"
    )
  from rock_jax.config import runtime
  from rock_jax.train import model_source

  c = model_source.run_config(WORKDIR.value) if WORKDIR.value else CONFIG.value
  runtime.setup(c)
  return c


def source() -> dict:
  """`model_source.load`'s keywords: where the model is."""
  return dict(folder=MODEL.value, workdir=WORKDIR.value, step=STEP.value)
