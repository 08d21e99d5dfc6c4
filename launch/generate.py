"""Samples completions from a model: prompts from a file, or a chat.

  # Each line of prompts.jsonl: {"prompt": "..."} or {"messages": [...]}.
  python launch/generate.py --model=/models/Qwen3-1.7B \
      --prompts=prompts.jsonl --samples=4 --out=completions.jsonl \
      --config.rollout.max_new_tokens=256 --config.rollout.temperature=0.7
  # A run's export (or --step=N), its config.json's template and sampling:
  python launch/generate.py --workdir=workdir/opd_rock --chat

Prompts are rendered with the model's chat template and sampled with the
rollouts' engine (`rock_jax.sampler.generate`) as the config's rollouts are
(temperature 0: greedy). Writes one JSON line per prompt: its uid, the
rendered prompt and the completions. All the work is in
`rock_jax.train.generation`.
"""

import json
import sys

from absl import app, flags
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file(
  "config",
  "configs/opd_rock.py",
  "Config file: the role's template and layout, rollout.* sampling (not "
  "with --workdir, whose config.json says them).",
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
  "role", "student", ["student", "teacher"], "Whose prompt format and layout."
)
_PROMPTS = flags.DEFINE_string("prompts", "", "JSONL file of prompts.")
_FIELD = flags.DEFINE_string(
  "field", "", "The field holding each prompt (default messages or prompt)."
)
_CHAT = flags.DEFINE_bool("chat", False, "Chat on stdin instead.")
_SAMPLES = flags.DEFINE_integer("samples", 1, "Completions per prompt.")
_SEED = flags.DEFINE_integer("seed", 0, "The samples' key.")
_OUT = flags.DEFINE_string(
  "out", "", "Output JSONL file or gs:// URL (default stdout)."
)


def _chat(generator) -> None:
  """Turns on stdin until an empty line or end of input."""
  from rock_jax.train import generation

  history = []
  for turn, line in enumerate(iter(lambda: input("> "), "")):
    history.append({"role": "user", "content": line})
    example = generation.chat_example(history)
    _, (reply,) = next(generator.complete([example], 1, _SEED.value + turn))
    print(reply, flush=True)
    history.append({"role": "assistant", "content": reply})


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  if bool(_MODEL.value) == bool(_WORKDIR.value):
    raise app.UsageError("give --model or --workdir, one of them")
  if bool(_PROMPTS.value) == _CHAT.value:
    raise app.UsageError("give --prompts or --chat, one of them")
  if _WORKDIR.value and flags.FLAGS["config"].present:
    raise app.UsageError(
      "--config with --workdir: the run's config.json says the template "
      "and sampling; sample from its export as --model to use another"
    )
  from rock_jax.config import runtime, validate
  from rock_jax.train import generation, model_source

  config = (
    model_source.run_config(_WORKDIR.value) if _WORKDIR.value else _CONFIG.value
  )
  runtime.setup(config)
  validate.evaluation(config, _ROLE.value)
  sharder = model_source.sharder_for(config, _ROLE.value)
  model = model_source.load(
    config,
    _ROLE.value,
    sharder,
    folder=_MODEL.value,
    workdir=_WORKDIR.value,
    step=_STEP.value,
  )
  generator = generation.Generator.create(config, model, _ROLE.value, sharder)
  if _CHAT.value:
    try:
      _chat(generator)
    except EOFError:
      pass
    return
  from rock_jax import storage

  examples = generation.read_prompts(_PROMPTS.value, _FIELD.value)
  lines = []
  for example, texts in generator.complete(
    examples, _SAMPLES.value, _SEED.value
  ):
    row = {
      "uid": example.uid,
      "prompt": generator.prompt_text(example),
      "completions": texts,
    }
    lines.append(json.dumps(row) + "\n")
    if not _OUT.value:
      sys.stdout.write(lines[-1])
      sys.stdout.flush()
  if _OUT.value:
    storage.write_text(_OUT.value, "".join(lines))


if __name__ == "__main__":
  app.run(main)
