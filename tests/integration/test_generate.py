"""`launch/generate.py` and `rock_jax.train.generation` with a tiny model:
prompts from a file and a chat, sampled by the rollouts' engine."""

import dataclasses
import json
import subprocess
import sys

import jax
import numpy as np
import pytest
from process_helpers import cpu_env
from run_helpers import ROOT, tiny_config, tiny_overrides

from rock_jax.data import prompts
from rock_jax.sampler import rollout
from rock_jax.train import generation, model_source

PROMPTS = ROOT / "tests" / "fixtures" / "prompts"


@pytest.fixture(scope="module")
def generator(assets, tmp_path_factory):
  config = tiny_config(
    assets, tmp_path_factory.mktemp("gen"), rollout__temperature=0.0
  )
  sharder = model_source.sharder_for(config, "student")
  model = model_source.load(
    config, "student", sharder, folder=assets["student"]
  )
  return generation.Generator.create(config, model, "student", sharder)


def test_greedy_completions_are_the_samplers_own(generator):
  examples = generation.read_prompts(str(PROMPTS / "chat.jsonl"))
  assert examples[0].messages[0] == {
    "role": "system",
    "content": "You are terse.",
  }
  done = list(generator.complete(examples, 2, seed=0))
  assert [e.uid for e, _ in done] == [e.uid for e in examples]
  model, tokenizer = generator.model, generator.model.tokenizer
  one_device = jax.device_put(model.params, jax.devices()[0])
  for example, texts in done:
    # Greedy: both samples agree, and equal one prompt decoded alone.
    assert len(texts) == 2 and texts[0] == texts[1]
    ids = prompts.encode(generator.prompt_text(example), tokenizer)
    out = rollout.generate(
      model.cfg,
      one_device,
      np.asarray([ids], np.int32),
      np.ones((1, len(ids)), bool),
      jax.random.key(0),
      generator.max_new_tokens,
      "greedy",
    )
    alone = np.asarray(out.tokens[0, len(ids) :])[
      np.asarray(out.completion_mask[0, len(ids) :])
    ]
    assert texts[0] == tokenizer.decode(
      alone.tolist(), skip_special_tokens=True
    )


def test_a_prompt_past_the_models_positions_fails_naming_it(generator):
  examples = generation.read_prompts(str(PROMPTS / "plain.jsonl"))
  tokenizer = generator.model.tokenizer
  lengths = [
    len(prompts.encode(generator.prompt_text(e), tokenizer)) for e in examples
  ]
  longest = max(lengths)
  limit = generator.model.cfg.max_position_embeddings
  too_long = dataclasses.replace(generator, max_new_tokens=limit - longest + 1)
  line = lengths.index(longest) + 1
  with pytest.raises(
    ValueError,
    match=rf"prompt '.*plain.jsonl:{line}' has {longest} tokens: with "
    rf"rollout.max_new_tokens={limit - longest + 1} it exceeds the model's "
    rf"max_position_embeddings={limit}; .* to at most {limit - longest}",
  ):
    next(too_long.complete(examples, 1, seed=0))


def test_prompt_files_name_their_bad_line(tmp_path):
  bad = tmp_path / "bad.jsonl"
  bad.write_text('{"prompt": "hi"}\n{"text": "no prompt"}\n')
  with pytest.raises(ValueError, match=r"bad.jsonl:2: field 'prompt'"):
    generation.read_prompts(str(bad))
  (tmp_path / "empty.jsonl").write_text("\n")
  with pytest.raises(ValueError, match=r"empty.jsonl: no prompts"):
    generation.read_prompts(str(tmp_path / "empty.jsonl"))


def _command(assets, *flags):
  overrides = tiny_overrides(assets)
  overrides["rollout.max_new_tokens"] = 8
  return [
    sys.executable,
    str(ROOT / "launch" / "generate.py"),
    f"--model={assets['student']}",
    *[f"--config.{k}={v}" for k, v in overrides.items()],
    *flags,
  ]


def test_the_command_samples_a_file_and_chats(assets, tmp_path):
  out = tmp_path / "out.jsonl"
  command = _command(
    assets,
    f"--prompts={PROMPTS / 'plain.jsonl'}",
    "--samples=3",
    f"--out={out}",
  )
  done = subprocess.run(command, capture_output=True, text=True, env=cpu_env())
  assert done.returncode == 0, done.stderr[-3000:]
  rows = [json.loads(x) for x in out.read_text().splitlines()]
  lines = (PROMPTS / "plain.jsonl").read_text().splitlines()
  assert len(rows) == len([x for x in lines if x.strip()])
  assert all(len(r["completions"]) == 3 for r in rows)
  assert "Write a haiku about rivers." in rows[0]["prompt"]
  chat = subprocess.run(
    _command(assets, "--chat"),
    input="What is 2+2?\nAnd 3+3?\n\n",
    capture_output=True,
    text=True,
    env=cpu_env(),
  )
  assert chat.returncode == 0, chat.stderr[-3000:]
  assert chat.stdout.count("> ") == 3  # two turns, then the empty line
