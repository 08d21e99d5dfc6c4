"""Prompt widths: configured, bucketed, or measured from the data."""

import pytest
from run_helpers import load_config

from rock_jax.data import embedded_task, prompts, schema, tokenization
from rock_jax.train import widths


@pytest.fixture(scope="module")
def tok():
  return tokenization.build_embedded_tokenizer()


def _split(n, seed):
  """The records of `n` embedded problems, as a prepared split holds them."""
  problems = embedded_task.sample_problems(embedded_task.TaskConfig(), n, seed)
  return [
    schema.to_record(embedded_task.to_example(p, f"{seed}-{i}"))
    for i, p in enumerate(problems)
  ]


def test_measure_finds_each_roles_longest_prompt_over_the_splits(tok):
  splits = {"train": _split(20, 0), "test": _split(5, 1)}
  formats = [prompts.PromptFormat(r, tok, 0) for r in prompts.ROLES]
  longest = widths.measure(splits, formats)
  for f in formats:
    lengths = {
      (s, r["uid"]): len(f.ids(schema.from_record(r)))
      for s in splits
      for r in splits[s]
    }
    top = max(lengths.values())
    assert longest[f.role].tokens == top
    assert lengths[(longest[f.role].split, longest[f.role].uid)] == top
  # The teacher's prompt carries the privileged style: it is longer.
  assert longest["teacher"].tokens > longest["student"].tokens


def test_any_positive_width_is_kept_and_padded_to_its_bucket(tok):
  config = load_config()
  config.data.student_prompt_len = 96
  assert widths.resolve(config, "student", None) == 96
  assert widths.padded(96) == 128 and widths.padded(128) == 128
  fmt = widths.format_of("student", tok, 96)
  assert (fmt.width, fmt.array_width) == (96, 128)


def test_auto_width_is_the_longest_prompt_rounded_up_to_its_bucket():
  config = load_config()
  config.data.teacher_prompt_len = widths.AUTO
  longest = widths.Longest(37, "x", "train")
  assert widths.resolve(config, "teacher", longest) == 64
  assert "has 37 tokens" in widths.describe("teacher", 64, longest)
  with pytest.raises(ValueError, match=r"teacher_prompt_len=0 measures"):
    widths.resolve(config, "teacher", None)
  huge = widths.Longest(70000, "big", "test")
  with pytest.raises(
    ValueError,
    match=r"data.teacher_prompt_len=0: the longest teacher prompt \('big' of "
    r"split 'test'\) has 70000 tokens, more than the largest width 65536",
  ):
    widths.resolve(config, "teacher", huge)
