"""Evaluates a model on a dataset split with the task's verifier.

  # A run's export, or one of its checkpoint steps (its config.json says the
  # data, widths and layout):
  python launch/evaluate.py --workdir=workdir/opd_rock
  python launch/evaluate.py --workdir=workdir/opd_rock --step=200
  # Any Hugging Face folder or gs:// URL on a dataset, greedy and pass@k:
  python launch/evaluate.py --model=/models/Qwen3-1.7B \
      --config.data.name=gsm8k --config.data.options=source=/data/gsm8k \
      --config.data.student_prompt_len=0 --config.rollout.max_new_tokens=512 \
      --config.train.eval_examples=0 --samples=8

Writes accuracy.json (greedy accuracy, and pass@1..k over --samples sampled
completions per problem at the config's rollout temperature) and
completions.jsonl (one row per completion: prompt, completion, verdict) to
--out. All the work is in `rock_jax.train.evaluation.run`.
"""

import os

from absl import app, flags
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file(
  "config",
  "configs/opd_rock.py",
  "Config file[:preset[,hardware]]: the data, prompt widths and layout "
  "(not with --workdir, whose config.json says them).",
  lock_config=True,
)
_MODEL = flags.DEFINE_string(
  "model", "", "Hugging Face model folder or gs:// URL (or --workdir)."
)
_WORKDIR = flags.DEFINE_string(
  "workdir", "", "A run's work directory: its export, or --step."
)
_STEP = flags.DEFINE_integer(
  "step", 0, "With --workdir: a checkpoint step (0: the export)."
)
_ROLE = flags.DEFINE_enum(
  "role",
  "student",
  ["student", "teacher"],
  "Whose prompts and layout the model takes (the teacher's prompt carries "
  "the privileged text).",
)
_SPLIT = flags.DEFINE_string("split", "", "Split (default data.eval_split).")
_SAMPLES = flags.DEFINE_integer(
  "samples", 0, "Sampled completions per problem for pass@k (0: greedy only)."
)
_SEED = flags.DEFINE_integer("seed", 0, "The samples' key.")
_OUT = flags.DEFINE_string(
  "out",
  "",
  "Output folder or gs:// URL (default <workdir>/eval/<export|step_N>-"
  "<split>, or eval/<model name>-<split>).",
)


def _out(split: str) -> str:
  if _OUT.value:
    return _OUT.value
  if _WORKDIR.value:
    name = f"step_{_STEP.value}" if _STEP.value else "export"
    return os.path.join(_WORKDIR.value, "eval", f"{name}-{split}")
  return os.path.join(
    "eval", f"{os.path.basename(_MODEL.value.rstrip('/'))}-{split}"
  )


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  if bool(_MODEL.value) == bool(_WORKDIR.value):
    raise app.UsageError("give --model or --workdir, one of them")
  if _WORKDIR.value and flags.FLAGS["config"].present:
    raise app.UsageError(
      "--config with --workdir: the run's config.json says the data and "
      "layout; evaluate its export as --model to use another config"
    )
  from rock_jax.config import runtime
  from rock_jax.train import evaluation, model_source

  config = (
    model_source.run_config(_WORKDIR.value) if _WORKDIR.value else _CONFIG.value
  )
  runtime.setup(config)
  split = _SPLIT.value or config.data.eval_split
  result = evaluation.run(
    config,
    _out(split),
    folder=_MODEL.value,
    workdir=_WORKDIR.value,
    step=_STEP.value,
    role=_ROLE.value,
    split=split,
    samples=_SAMPLES.value,
    seed=_SEED.value,
  )
  print(
    " ".join(f"{k}={v}" for k, v in result.items()),
    f"\nwritten to {_out(split)}",
    flush=True,
  )


if __name__ == "__main__":
  app.run(main)
