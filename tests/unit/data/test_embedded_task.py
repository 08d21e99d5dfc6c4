"""The embedded task: solutions, difficulty, and the planted Rock Tokens."""

import dataclasses
import re

import numpy as np
import pytest

from rock_jax.data import embedded_task, prompts, tokenization, verifiers

ALL_STYLES = embedded_task.TaskConfig(num_styles=3)


@pytest.fixture(scope="module")
def tokenizer():
  return tokenization.build_embedded_tokenizer()


@pytest.fixture(scope="module")
def problems():
  configs = list(embedded_task.DIFFICULTIES.values())
  return [
    p
    for i, config in enumerate(configs)
    for p in embedded_task.sample_problems(config, 100, seed=100 + i)
  ]


def test_solution_format_and_answer():
  problem = embedded_task.Problem((47, 85), "formal")
  assert embedded_task.question(problem) == "What is 47+85?"
  assert embedded_task.privileged(problem) == "style: formal"
  assert embedded_task.solution(problem) == (
    "First, 7+5=12\n\nNext, 4+8+1=13\n\nThus the answer is **132**"
  )
  # Shorter operands are zero-padded: one digit per operand on every line.
  terse = embedded_task.Problem((305, 9, 90), "terse")
  assert embedded_task.solution(terse) == (
    "Start, 5+9+0=14.\nThen, 0+0+9+1=10.\nThen, 3+0+0+1=4.\n"
    "So the answer is $404$"
  )
  chatty = embedded_task.Problem((5, 6), "chatty")
  assert embedded_task.solution(chatty) == (
    "Now, 5+6=11!\nHence the answer is \\boxed{11}"
  )


def test_every_solution_is_correct(problems):
  for problem in problems:
    text = embedded_task.solution(problem)
    assert verifiers.score_embedded(text, str(sum(problem.operands)))
    assert not verifiers.score_embedded(text, str(sum(problem.operands) + 1))


def test_sampling_is_deterministic_and_follows_difficulty():
  config = embedded_task.get_difficulty("hard")
  a = embedded_task.sample_problems(config, 50, seed=3)
  assert a == embedded_task.sample_problems(config, 50, seed=3)
  assert a != embedded_task.sample_problems(config, 50, seed=4)
  for problem in a:
    assert len(problem.operands) == 3
    assert all(100 <= x < 100_000 for x in problem.operands)
  assert {p.style for p in a} == set(embedded_task.STYLES)
  one = embedded_task.sample_problems(
    dataclasses.replace(config, num_styles=1), 20, seed=3
  )
  assert {p.style for p in one} == {"terse"}


def test_exclude_keeps_splits_disjoint_and_reports_exhaustion():
  config = embedded_task.TaskConfig(min_digits=1, max_digits=1)
  test = embedded_task.sample_problems(config, 30, seed=0)
  train = embedded_task.sample_problems(
    config, 30, seed=1, exclude=frozenset(p.operands for p in test)
  )
  assert not {p.operands for p in train} & {p.operands for p in test}
  every_pair = frozenset((a, b) for a in range(10) for b in range(10))
  with pytest.raises(ValueError, match="could only draw 0 of 5 problems"):
    embedded_task.sample_problems(config, 5, seed=0, exclude=every_pair)


@pytest.mark.parametrize(
  "kwargs,match",
  [
    ({"min_digits": 0}, "min_digits=0"),
    ({"min_digits": 4, "max_digits": 3}, "min_digits=4, max_digits=3"),
    ({"num_operands": 1}, "num_operands=1"),
    ({"num_styles": 4}, r"num_styles=4: expected 1\.\.3"),
  ],
)
def test_task_config_rejects_bad_values(kwargs, match):
  with pytest.raises(ValueError, match=match):
    embedded_task.TaskConfig(**kwargs)


def test_unknown_difficulty():
  with pytest.raises(ValueError, match=r"'extreme'.*'default', 'easy'"):
    embedded_task.get_difficulty("extreme")


def test_slot_tokens_are_exactly_the_rock_ids(tokenizer, problems):
  """Slots encode alone as in context; each slot opens with a rock id and
  rocks never occur in the skeleton."""
  rocks = set(embedded_task.rock_token_ids(tokenizer))
  seen = set()
  for problem in problems:
    segments = embedded_task.solution_segments(problem)
    pieces = [prompts.encode(text, tokenizer) for text, _ in segments]
    whole = prompts.encode(embedded_task.solution(problem), tokenizer)
    assert whole == [i for piece in pieces for i in piece]
    for piece, (_, is_slot) in zip(pieces, segments, strict=True):
      if is_slot:
        assert piece[0] in rocks and not set(piece[1:]) & rocks
      else:
        assert not set(piece) & rocks
    seen |= set(whole)
  assert rocks <= seen, "every ground-truth id occurs in teacher solutions"


def test_rock_ids_are_absent_from_student_prompts(tokenizer, problems):
  rocks = set(embedded_task.rock_token_ids(tokenizer))
  for i, problem in enumerate(problems):
    example = embedded_task.to_example(problem, str(i))
    student = prompts.render_student_prompt(example, tokenizer)
    teacher = prompts.render_teacher_prompt(example, tokenizer)
    assert not set(prompts.encode(student, tokenizer)) & rocks
    assert "style:" not in student
    assert f"style: {problem.style}" in teacher


def test_rock_ids_depend_on_the_styles_in_use(tokenizer):
  def tokens(styles):
    ids = embedded_task.rock_token_ids(tokenizer, styles)
    return {tokenizer.decode([i]) for i in ids}

  every = tokens(tuple(embedded_task.STYLES))
  assert {"So", "Thus", "Wait", ".\n", "\n\n", "!\n", " **", " \\"} <= every
  # "boxed" and "{" follow from " \\"; the skeleton decides nothing.
  assert not {"boxed", "{", "\n", " the", " answer", ",", "+", "="} & every
  assert len(every) == 18
  assert not any(t.strip().isdigit() for t in every)
  two = tokens(("terse", "chatty"))
  assert {"So", "Hence", ".\n", "!\n", " $", "}"} <= two
  assert not {"Thus", "\n\n", " **"} & two
  # One style decides nothing: the no-rock control.
  assert tokens(("formal",)) == set()


def test_default_difficulty_is_short(tokenizer):
  """The CPU run relies on prompts and solutions of tens of tokens."""
  problems = embedded_task.sample_problems(ALL_STYLES, 300, seed=0)
  lengths = np.array(
    [
      len(prompts.encode(embedded_task.solution(p), tokenizer))
      for p in problems
    ]
  )
  assert lengths.max() <= 48
  assert lengths.min() >= 20


def test_problem_of_inverts_to_example(problems):
  for i, problem in enumerate(problems[:50]):
    example = embedded_task.to_example(problem, str(i))
    assert embedded_task.problem_of(example) == problem
  with pytest.raises(ValueError, match=r"'x' is not an embedded-task example"):
    embedded_task.problem_of(
      embedded_task.to_example(problems[0], "x").__class__(
        uid="x", task="gsm8k", messages=({"role": "user", "content": "Hi"},)
      )
    )


# The long-tailed variant: items with Zipf frequencies and their units.

LONG_TAIL = embedded_task.get_difficulty("long_tail")
ITEM_WORDS = {
  embedded_task.item_word(i) for i in range(embedded_task.MAX_ITEMS)
}
UNIT_WORDS = {
  embedded_task.unit_word(i) for i in range(embedded_task.MAX_ITEMS)
}


@pytest.fixture(scope="module")
def long_tail_tokenizer():
  return tokenization.build_embedded_tokenizer(num_items=LONG_TAIL.num_items)


@pytest.fixture(scope="module")
def long_tail_problems():
  return embedded_task.sample_problems(LONG_TAIL, 2000, seed=7)


def _words(text):
  return set(re.findall(r"[a-z]+", text))


def test_long_tail_is_the_default_with_items():
  assert LONG_TAIL == dataclasses.replace(
    embedded_task.TaskConfig(), num_items=LONG_TAIL.num_items
  )
  assert LONG_TAIL.num_items >= 100


def test_plain_task_names_no_items():
  assert embedded_task.TaskConfig().num_items == 0
  plain = [
    p
    for i, (name, config) in enumerate(embedded_task.DIFFICULTIES.items())
    if name != "long_tail"
    for p in embedded_task.sample_problems(config, 100, seed=100 + i)
  ]
  for i, problem in enumerate(plain):
    assert problem.item is None
    example = embedded_task.to_example(problem, str(i))
    words = _words(
      f"{example.messages[0]['content']} {example.privileged} "
      f"{example.solution} {example.reference}"
    )
    assert not words & (ITEM_WORDS | UNIT_WORDS)
    assert "unit" not in example.privileged
    assert example.reference == str(problem.answer)


def test_item_and_unit_words_are_distinct_pseudo_words():
  assert len(ITEM_WORDS) == len(UNIT_WORDS) == embedded_task.MAX_ITEMS
  assert not ITEM_WORDS & UNIT_WORDS
  task_words = {
    w.lower()
    for text in embedded_task.tokenizer_corpus()
    for w in re.findall(r"[A-Za-z]+", text)
  }
  assert not task_words & (ITEM_WORDS | UNIT_WORDS)
  for i in range(embedded_task.MAX_ITEMS):
    # The pairing is arbitrary: no unit is spelled like its item.
    assert embedded_task.unit_word(i)[:2] != embedded_task.item_word(i)[:2]


def test_item_frequencies_are_long_tailed():
  drawn = embedded_task.sample_problems(LONG_TAIL, 20_000, seed=11)
  counts = np.bincount([p.item for p in drawn], minlength=LONG_TAIL.num_items)
  assert len(counts) == LONG_TAIL.num_items
  assert np.count_nonzero(counts) >= 0.9 * LONG_TAIL.num_items
  assert counts[0] == counts.max()
  assert counts[0] > 50 * np.median(counts)
  # Rank order: the first items are drawn the most.
  assert counts[:10].sum() > counts[100:].sum()
  uniform = dataclasses.replace(LONG_TAIL, item_zipf=0.0)
  counts = np.bincount(
    [p.item for p in embedded_task.sample_problems(uniform, 5000, seed=11)]
  )
  assert counts.max() < 3 * np.median(counts)


def test_long_tail_format_and_round_trip(long_tail_problems):
  problem = embedded_task.Problem((47, 85), "terse", 0)
  item, unit = embedded_task.item_word(0), embedded_task.unit_word(0)
  assert embedded_task.question(problem) == f"What is 47+85 {item}?"
  assert embedded_task.privileged(problem) == f"style: terse, unit: {unit}"
  assert embedded_task.solution(problem) == (
    f"Start, 7+5=12.\nThen, 4+8+1=13.\nSo the answer is $132$ {unit}"
  )
  assert embedded_task.reference(problem) == f"132 {unit}"
  for i, problem in enumerate(long_tail_problems[:300]):
    example = embedded_task.to_example(problem, str(i))
    assert embedded_task.problem_of(example) == problem
    assert verifiers.score_embedded(example.solution, example.reference)
  example = embedded_task.to_example(problem, "x")
  wrong = embedded_task.unit_word(problem.item + 1)
  for privileged in (f"style: terse, unit: {wrong}", "style: terse"):
    with pytest.raises(ValueError, match=r"'x' is not an embedded-task"):
      embedded_task.problem_of(
        dataclasses.replace(example, privileged=privileged)
      )


def test_each_unit_follows_its_item_only(long_tail_problems):
  units_of = {}
  for problem in long_tail_problems:
    example = embedded_task.to_example(problem, "u")
    unit = embedded_task.unit_word(problem.item)
    # The unit is the solution's last word and skeleton, never in the
    # student's question.
    assert example.solution.endswith(f" {unit}")
    assert embedded_task.solution_segments(problem)[-1] == (f" {unit}", False)
    assert not _words(example.messages[0]["content"]) & UNIT_WORDS
    assert _words(example.solution) & UNIT_WORDS == {unit}
    assert f"unit: {unit}" in example.privileged
    units_of.setdefault(unit, set()).add(problem.item)
  assert all(len(items) == 1 for items in units_of.values())
  assert len(units_of) > 100


def test_long_tail_words_are_single_non_rock_tokens(long_tail_tokenizer):
  rocks = set(embedded_task.rock_token_ids(long_tail_tokenizer))
  for i in range(LONG_TAIL.num_items):
    for word in (embedded_task.item_word(i), embedded_task.unit_word(i)):
      ids = prompts.encode(f" {word}", long_tail_tokenizer)
      assert len(ids) == 1 and ids[0] not in rocks, word


def test_long_tail_rocks_are_the_default_ones(tokenizer, long_tail_tokenizer):
  for styles in (tuple(embedded_task.STYLES), ("terse", "chatty")):
    texts = [
      sorted(t.decode([i]) for i in embedded_task.rock_token_ids(t, styles))
      for t in (tokenizer, long_tail_tokenizer)
    ]
    assert texts[0] == texts[1]


def test_long_tail_rocks_stay_out_of_student_prompts_and_fit(
  long_tail_tokenizer, long_tail_problems
):
  """No rock in a student prompt; prompts fit 32 tokens, solutions 64."""
  tok = long_tail_tokenizer
  rocks = set(embedded_task.rock_token_ids(tok))
  # The longest case: two 3-digit operands with a carry out of the top.
  longest = [
    embedded_task.Problem((999, 999), style, LONG_TAIL.num_items - 1)
    for style in embedded_task.STYLES
  ]
  for i, problem in enumerate(long_tail_problems[:300] + longest):
    example = embedded_task.to_example(problem, str(i))
    student = prompts.encode(prompts.render_student_prompt(example, tok), tok)
    teacher = prompts.encode(prompts.render_teacher_prompt(example, tok), tok)
    assert not set(student) & rocks
    assert max(len(student), len(teacher)) <= 32
    slots = embedded_task.solution_segments(problem)
    pieces = [prompts.encode(text, tok) for text, _ in slots]
    whole = prompts.encode(example.solution, tok)
    assert whole == [i for piece in pieces for i in piece]
    assert len(whole) + 1 <= 64  # With the eos; embedded_sft.SOLUTION_LEN.


def test_task_config_rejects_bad_items():
  with pytest.raises(ValueError, match=r"num_items=-1: expected 0\.\.625"):
    embedded_task.TaskConfig(num_items=-1)
  with pytest.raises(ValueError, match=r"num_items=626: expected 0\.\.625"):
    embedded_task.TaskConfig(num_items=626)
  with pytest.raises(ValueError, match=r"item_zipf=-1: expected a finite"):
    embedded_task.TaskConfig(num_items=3, item_zipf=-1)
