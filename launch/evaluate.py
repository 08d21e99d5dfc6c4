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

import model_flags
from absl import app, flags

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
  if model_flags.WORKDIR.value:
    step = model_flags.STEP.value
    name = f"step_{step}" if step else "export"
    return os.path.join(model_flags.WORKDIR.value, "eval", f"{name}-{split}")
  model = os.path.basename(model_flags.MODEL.value.rstrip("/"))
  return os.path.join("eval", f"{model}-{split}")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  config = model_flags.config()
  from rock_jax.train import evaluation

  split = _SPLIT.value or config.data.eval_split
  result = evaluation.run(
    config,
    _out(split),
    role=model_flags.ROLE.value,
    split=split,
    samples=_SAMPLES.value,
    seed=_SEED.value,
    **model_flags.source(),
  )
  print(
    " ".join(f"{k}={v}" for k, v in result.items()),
    f"\nwritten to {_out(split)}",
    flush=True,
  )


if __name__ == "__main__":
  app.run(main)
