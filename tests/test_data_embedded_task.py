"""The embedded task: solutions, difficulty, and the planted Rock Tokens."""

import dataclasses

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
