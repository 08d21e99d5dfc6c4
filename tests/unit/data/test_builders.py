"""TFDS builders: prepare and read back without TensorFlow, configs, errors."""

import json
import os
import shutil
import sys

import pytest
from data_helpers import FIXTURES, prepare_embedded

from rock_jax.data import (
  builders,
  embedded_builder,
  embedded_task,
  schema,
  tokenization,
  verifiers,
)


def _read_all(dataset_dir, split):
  source = builders.open_split(dataset_dir, split)
  return [schema.from_record(source[i]) for i in range(len(source))]


@pytest.fixture(scope="module")
def embedded(tmp_path_factory):
  return prepare_embedded(tmp_path_factory.mktemp("data"))


def test_embedded_prepares_and_reads_back_without_tensorflow(embedded):
  assert builders.split_sizes(embedded) == {"test": 16, "train": 64}
  train, test = _read_all(embedded, "train"), _read_all(embedded, "test")
  assert "tensorflow" not in sys.modules
  example = train[0]
  assert example.task == "embedded"
  assert example.privileged.startswith("style: ")
  assert example.messages[0]["role"] == "user"
  assert verifiers.score_embedded(example.solution, example.reference)
  questions = [{x.messages[0]["content"] for x in xs} for xs in (train, test)]
  assert not questions[0] & questions[1], "splits share problems"
  assert len({x.uid for x in train}) == 64


def test_embedded_assets_match_the_ground_truth(embedded):
  tok = tokenization.load_tokenizer(os.path.join(embedded, "tokenizer"))
  with open(os.path.join(embedded, embedded_builder.ROCK_FILE)) as f:
    rock = json.load(f)
  assert rock["token_ids"] == embedded_task.rock_token_ids(tok)
  assert rock["tokens"] == [tok.decode([i]) for i in rock["token_ids"]]
  assert rock["styles"] == ["terse", "formal", "chatty"]


def test_prepare_reuses_and_separates_configs(embedded):
  root = os.path.dirname(os.path.dirname(os.path.dirname(embedded)))
  assert prepare_embedded(root) == embedded
  easy = prepare_embedded(root, difficulty="easy", num_styles=1, seed=1)
  assert easy != embedded and "d1-2_x2_s1_n64-16_seed1" in easy
  with open(os.path.join(easy, embedded_builder.ROCK_FILE)) as f:
    assert json.load(f)["token_ids"] == []
  with pytest.raises(
    ValueError, match=r"unknown embedded task options \['x'\]"
  ):
    builders.get_builder("embedded", root, x=1)


def test_long_tail_dataset_and_config_names(embedded):
  root = os.path.dirname(os.path.dirname(os.path.dirname(embedded)))
  long_tail = prepare_embedded(root, difficulty="long_tail")
  name = os.path.basename(os.path.dirname(long_tail))
  assert name == "d2-3_x2_s3_n64-16_seed0_i192z1.1"
  assert os.path.basename(os.path.dirname(embedded)) == name.split("_i")[0]
  tok = tokenization.load_tokenizer(os.path.join(long_tail, "tokenizer"))
  for example in _read_all(long_tail, "train") + _read_all(long_tail, "test"):
    problem = embedded_task.problem_of(example)
    unit = embedded_task.unit_word(problem.item)
    assert example.reference == f"{problem.answer} {unit}"
    assert example.privileged.endswith(f", unit: {unit}")
    assert verifiers.score_embedded(example.solution, example.reference)
    assert len(tok.encode(f" {unit}", add_special_tokens=False)) == 1
  with open(os.path.join(long_tail, embedded_builder.ROCK_FILE)) as f:
    rock = json.load(f)
  with open(os.path.join(embedded, embedded_builder.ROCK_FILE)) as f:
    assert sorted(rock["tokens"]) == sorted(json.load(f)["tokens"])
  assert rock["token_ids"] == embedded_task.rock_token_ids(tok)

  def name_of(**options):
    return embedded_builder.EmbeddedTask.make_config(**options).name

  assert name_of() == "d2-3_x2_s3_n20000-500_seed0"
  assert name_of(item_zipf=2) == name_of()  # No items: the zipf is moot.
  assert name_of(num_items="192") == name_of(difficulty="long_tail")
  assert name_of(difficulty="long_tail", item_zipf="1.5").endswith("_i192z1.5")
  assert name_of(difficulty="long_tail", num_items=0) == name_of()
  with pytest.raises(ValueError, match=r"item_zipf='x': expected a finite"):
    name_of(item_zipf="x")


def test_gsm8k_from_local_files(tmp_path):
  path = builders.prepare("gsm8k", tmp_path, source=FIXTURES / "gsm8k")
  assert builders.split_sizes(path) == {"test": 4, "train": 7}
  by_uid = {x.uid: x for x in _read_all(path, "train")}
  leo = by_uid["train.jsonl:7"]
  assert leo.task == "gsm8k" and leo.reference == "1300"
  assert leo.solution == "He saves 25 * 52 = 1300 dollars."
  assert leo.messages == (
    {
      "role": "user",
      "content": "Leo saves $25 each week for 52 weeks. How much has he saved?",
    },
  )
  assert {x.reference for x in _read_all(path, "test")} == {
    "13",
    "-5",
    "37.5",
    "260",
  }


def test_math500_from_local_file(tmp_path):
  source = FIXTURES / "math500" / "test.jsonl"
  path = builders.prepare(
    "math", tmp_path, source=source, instruction="Box it."
  )
  examples = {x.uid: x for x in _read_all(path, "test")}
  assert len(examples) == 8
  half = examples["test/prealgebra/0.json"]
  assert half.reference == "\\frac{1}{2}" and half.task == "math"
  assert half.messages[0]["content"].endswith("$?\nBox it.")


def test_prompts_with_string_and_chat_fields(tmp_path):
  plain = builders.prepare(
    "prompts",
    tmp_path,
    source=FIXTURES / "prompts" / "plain.jsonl",
    privileged_field="hint",
  )
  by_uid = {x.uid: x for x in _read_all(plain, "plain")}
  assert by_uid["plain.jsonl:1"].privileged == "Use the word 'stone'."
  assert by_uid["plain.jsonl:1"].task == ""
  chat = builders.prepare(
    "prompts",
    tmp_path,
    source=FIXTURES / "prompts" / "chat.jsonl",
    field="messages",
    task="gsm8k",
    reference_field="answer",
    solution_field="solution",
  )
  examples = sorted(_read_all(chat, "chat"), key=lambda x: x.uid)
  assert [x.reference for x in examples] == ["13", "-15"]
  assert examples[0].messages[0] == {
    "role": "system",
    "content": "You are terse.",
  }


@pytest.mark.parametrize(
  "options,match",
  [
    ({"task": "gsm8k"}, r"task='gsm8k', reference_field='': set both"),
    ({"task": "mmlu", "reference_field": "a"}, r"task='mmlu': expected"),
    ({"colour": "red"}, r"unknown rock_prompts options \['colour'\]"),
    (
      {"reference_field": "answer", "task": "gsm8k"},
      r"plain.jsonl:1: field 'answer' is None; expected a string",
    ),
    ({"field": "hint2"}, r"plain.jsonl:1: field 'hint2': expected a list"),
  ],
)
def test_prompt_option_errors(tmp_path, options, match):
  source = FIXTURES / "prompts" / "plain.jsonl"
  with pytest.raises(ValueError, match=match):
    builders.prepare("prompts", tmp_path, source=source, **options)


def test_changed_file_is_prepared_again(tmp_path):
  source = tmp_path / "src"
  shutil.copytree(FIXTURES / "gsm8k", source)
  first = builders.prepare("gsm8k", tmp_path / "data", source=source)
  with open(source / "test.jsonl", "a") as f:
    f.write(json.dumps({"question": "1+1?", "answer": "1+1=2\n#### 2"}) + "\n")
  second = builders.prepare("gsm8k", tmp_path / "data", source=source)
  assert first != second
  assert builders.split_sizes(first)["test"] == 4
  assert builders.split_sizes(second)["test"] == 5


@pytest.mark.parametrize(
  "line,match",
  [
    ("{not json", r"bad.jsonl:2: not valid JSON"),
    ('["a list"]', r"bad.jsonl:2: expected a JSON object"),
    ('{"question": "q", "answer": "no marker"}', r"bad.jsonl:2: .*'#### "),
    ('{"answer": "#### 3"}', r"bad.jsonl:2: field 'question' is None"),
  ],
)
def test_bad_gsm8k_lines_name_file_and_line(tmp_path, line, match):
  good = json.dumps({"question": "q", "answer": "#### 1"})
  (tmp_path / "bad.jsonl").write_text(f"{good}\n{line}\n")
  with pytest.raises(ValueError, match=match):
    builders.prepare("gsm8k", tmp_path / "d", source=tmp_path / "bad.jsonl")


def test_source_and_name_errors(tmp_path, embedded):
  with pytest.raises(ValueError, match=r"expected a .jsonl file or a folder"):
    builders.get_builder("gsm8k", tmp_path, source=tmp_path / "nope.json")
  with pytest.raises(ValueError, match=r"folder holds no .jsonl file"):
    builders.get_builder("gsm8k", tmp_path, source=tmp_path)
  with pytest.raises(ValueError, match=r"unknown dataset 'c4'; available"):
    builders.get_builder("c4", tmp_path)
  with pytest.raises(ValueError, match=r"split 'validation' not in .*'test'"):
    builders.open_split(embedded, "validation")
