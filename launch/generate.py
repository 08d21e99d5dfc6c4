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

import model_flags
from absl import app, flags

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
  if bool(_PROMPTS.value) == _CHAT.value:
    raise app.UsageError("give --prompts or --chat, one of them")
  config = model_flags.config()
  from rock_jax.config import validate
  from rock_jax.train import generation, model_source

  role = model_flags.ROLE.value
  validate.evaluation(config, role)
  sharder = model_source.sharder_for(config, role)
  model = model_source.load(config, role, sharder, **model_flags.source())
  generator = generation.Generator.create(config, model, role, sharder)
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
