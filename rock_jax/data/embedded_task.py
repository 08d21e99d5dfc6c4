"""The embedded reasoning task: column addition with planted Rock Tokens.

A problem is a sum of a few multi-digit integers; its solution adds one column
per line, least significant first, and ends with the answer:

  Start, 7+5=12.
  Then, 4+8+1=13.
  So the answer is $132$

Every solution is a sequence of segments that are either *skeleton* (fully
determined by the operands: digits, `+`, `=`, `the answer is`) or *slots*
filled by the example's style: the discourse word opening each line, the line
break (`.\\n`, `\\n\\n` or `!\\n`) and the markup around the answer (`$..$`,
`**..**`, `\\boxed{..}`). The style is drawn at random per example, independent
of the operands, and is written only into the teacher's prompt (the privileged
`style: <name>` system message). The student cannot infer it, and the teacher
follows its tag whatever the student wrote in earlier slots, so the tokens
that fill the slots keep a teacher-student divergence that training cannot
remove, while never changing the answer. They are the
ground-truth Rock Tokens; `rock_token_ids` returns their ids.

This mirrors the paper's structural and discourse residuals (markdown,
whitespace, LaTeX delimiters, "So"/"Thus"/"Wait"): choices driven by the
teacher's own habits rather than by the problem, which a student can match
only by chance. Digits are deliberately *not* planted: they decide correctness
and serve as the contrast group. `num_styles=1` removes the privileged
information and is the no-rock control.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterator, Sequence

import numpy as np

from rock_jax.data import schema

TASK = "embedded"


@dataclasses.dataclass(frozen=True)
class Style:
  """The slot fillers of one style: line openers, separator, answer markup."""

  first: str
  middle: str
  final: str
  separator: str
  answer_open: str
  answer_close: str


# Slot strings are chosen so that the tokenizer's pre-tokenizer splits exactly
# at slot boundaries (words after a newline, newline runs, punctuation runs
# with a leading space); each slot therefore encodes to the same tokens on its
# own and in context, and no slot token ever occurs in the skeleton. No
# separator is a bare "\n", which the chat template uses between turns, so no
# Rock Token occurs in the student's prompt.
STYLES: dict[str, Style] = {
  "terse": Style("Start", "Then", "So", ".\n", " $", "$"),
  "formal": Style("First", "Next", "Thus", "\n\n", " **", "**"),
  "chatty": Style("Now", "Wait", "Hence", "!\n", " \\boxed{", "}"),
}


@dataclasses.dataclass(frozen=True, kw_only=True)
class TaskConfig:
  """Difficulty of the embedded task.

  Attributes:
    min_digits: fewest digits of an operand.
    max_digits: most digits of an operand.
    num_operands: how many integers are added.
    num_styles: how many styles (taken in `STYLES` order) the teacher may be
      told to use; 1 plants no Rock Tokens.
  """

  min_digits: int = 2
  max_digits: int = 3
  num_operands: int = 2
  num_styles: int = 3

  def __post_init__(self):
    if not 1 <= self.min_digits <= self.max_digits:
      raise ValueError(
        f"min_digits={self.min_digits}, max_digits={self.max_digits}: "
        "expected 1 <= min_digits <= max_digits"
      )
    if self.num_operands < 2:
      raise ValueError(f"num_operands={self.num_operands}: expected >= 2")
    if not 1 <= self.num_styles <= len(STYLES):
      raise ValueError(
        f"num_styles={self.num_styles}: expected 1..{len(STYLES)}"
      )

  @property
  def styles(self) -> tuple[str, ...]:
    return tuple(STYLES)[: self.num_styles]


DIFFICULTIES: dict[str, TaskConfig] = {
  "easy": TaskConfig(min_digits=1, max_digits=2),
  "default": TaskConfig(),
  "hard": TaskConfig(min_digits=3, max_digits=5, num_operands=3),
}


def get_difficulty(name: str) -> TaskConfig:
  """Returns the preset `TaskConfig` called `name`."""
  if name not in DIFFICULTIES:
    raise ValueError(
      f"unknown difficulty {name!r}; available: {sorted(DIFFICULTIES)}"
    )
  return DIFFICULTIES[name]


@dataclasses.dataclass(frozen=True)
class Problem:
  operands: tuple[int, ...]
  style: str

  @property
  def answer(self) -> int:
    return sum(self.operands)


def question(problem: Problem) -> str:
  """The user turn both models see, e.g. `What is 47+85?`."""
  return f"What is {'+'.join(map(str, problem.operands))}?"


def privileged(problem: Problem) -> str:
  """The teacher-only system message carrying the style tag."""
  return f"style: {problem.style}"


def solution_segments(problem: Problem) -> list[tuple[str, bool]]:
  """The solution as `(text, is_slot)` pairs; slots are style-decided."""
  style = STYLES[problem.style]
  width = max(len(str(x)) for x in problem.operands)
  # Zero padding keeps one digit per operand on every line, so the line
  # format never depends on the operands' lengths.
  columns = [str(x).zfill(width)[::-1] for x in problem.operands]
  segments, carry = [], 0
  for i in range(width):
    digits = [int(c[i]) for c in columns]
    terms = "+".join(map(str, digits)) + (f"+{carry}" if carry else "")
    total = sum(digits) + carry
    if i:
      segments.append((style.separator, True))
    segments.append((style.first if i == 0 else style.middle, True))
    segments.append((f", {terms}={total}", False))
    carry = total // 10
  segments += [
    (style.separator, True),
    (style.final, True),
    (" the answer is", False),
    (style.answer_open, True),
    (str(problem.answer), False),
    (style.answer_close, True),
  ]
  return segments


def solution(problem: Problem) -> str:
  """The teacher's worked solution (without the end-of-turn token)."""
  return "".join(text for text, _ in solution_segments(problem))


def _sample_operands(
  rng: np.random.Generator, config: TaskConfig
) -> tuple[int, ...]:
  def one() -> int:
    n = int(rng.integers(config.min_digits, config.max_digits + 1))
    return int(rng.integers(10 ** (n - 1) if n > 1 else 0, 10**n))

  return tuple(one() for _ in range(config.num_operands))


def sample_problems(
  config: TaskConfig,
  num: int,
  seed: int | Sequence[int],
  exclude: frozenset[tuple[int, ...]] = frozenset(),
) -> list[Problem]:
  """Draws `num` problems deterministically from `seed`.

  Args:
    config: difficulty.
    num: number of problems.
    seed: the only source of randomness.
    exclude: operand tuples never returned (keeps train and test disjoint).

  Returns:
    The problems; the style of each is uniform over `config.styles`.
  """
  rng = np.random.default_rng(seed)
  problems, attempts = [], 0
  while len(problems) < num:
    attempts += 1
    if attempts > 100 * num + 1000:
      raise ValueError(
        f"could only draw {len(problems)} of {num} problems not in the "
        f"{len(exclude)} excluded ones for {config}; use fewer problems or "
        "more digits"
      )
    operands = _sample_operands(rng, config)
    style = config.styles[int(rng.integers(config.num_styles))]
    if operands not in exclude:
      problems.append(Problem(operands, style))
  return problems


def to_example(problem: Problem, uid: str) -> schema.Example:
  """The problem in the common example schema."""
  return schema.Example(
    uid=uid,
    task=TASK,
    messages=({"role": "user", "content": question(problem)},),
    privileged=privileged(problem),
    reference=str(problem.answer),
    solution=solution(problem),
  )


def tokenizer_corpus(seed: int = 0) -> Iterator[str]:
  """Task text covering every style, difficulty and prompt word.

  The embedded tokenizer is trained on this fixed corpus, so it is the same
  for every difficulty and dataset size.
  """
  for i, config in enumerate(DIFFICULTIES.values()):
    for problem in sample_problems(
      dataclasses.replace(config, num_styles=len(STYLES)), 300, seed + i
    ):
      # Separate items, so no merge spans a chat-template boundary.
      yield from ("system", "user", "assistant", "\n")
      yield from (privileged(problem), question(problem), solution(problem))


def _common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
  n = 0
  while n < min(len(a), len(b)) and a[n] == b[n]:
    n += 1
  return n


def rock_token_ids(
  tokenizer, styles: Sequence[str] = tuple(STYLES)
) -> list[int]:
  """Ground-truth Rock Token ids: the tokens at which the style decides.

  For each slot, each filler's decision token is its first token that no
  other filler of the slot shares at that point (the fillers `" $"`,
  `" **"`, `" \\boxed{"` are decided at `" $"`, `" **"`, `" \\"`). Later
  tokens of a multi-token filler follow from its decision token, so both
  models predict them alike and they are not rocks. A slot whose filler is
  the same in every style of `styles` decides nothing (for instance the
  separator when only `terse` and `chatty` are in use).

  Args:
    tokenizer: a Hugging Face tokenizer (the embedded one, or any other).
    styles: the styles in use, e.g. `TaskConfig.styles`.

  Returns:
    Sorted unique token ids; empty for a single style.
  """
  ids = set()
  for field in dataclasses.fields(Style):
    fillers = {getattr(STYLES[name], field.name) for name in styles}
    encoded = [
      tokenizer.encode(text, add_special_tokens=False) for text in fillers
    ]
    for tokens in encoded:
      others = [o for o in encoded if o is not tokens]
      decided = max((_common_prefix(tokens, o) for o in others), default=None)
      if decided is not None and decided < len(tokens):
        ids.add(tokens[decided])
  return sorted(ids)


def problem_of(example: schema.Example) -> Problem:
  """Inverts `to_example`: the operands and style of an embedded example."""
  operands = tuple(
    int(x) for x in re.findall(r"\d+", example.messages[-1]["content"])
  )
  style = example.privileged.removeprefix("style: ")
  if style not in STYLES or len(operands) < 2:
    raise ValueError(
      f"example {example.uid!r} is not an embedded-task example "
      f"(question {example.messages[-1]['content']!r}, privileged "
      f"{example.privileged!r})"
    )
  return Problem(operands, style)
