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

The long-tailed variant (`TaskConfig.num_items > 0`, preset `long_tail`)
adds content that is rare and hard for the student. Each problem names an
*item*, drawn with Zipf probabilities over `num_items` items, and the answer
carries the item's fixed *unit* as skeleton:

  What is 47+85 veja?                    (the user turn)
  style: terse, unit: qajoq              (the teacher's system message)
  ...
  So the answer is $132$ qajoq

The teacher is told the unit and copies it; the student must have memorised
the item-unit pairs, and the rare items' units, each one token, are the ones
it has seen a handful of times. The plain task, with only ~37 token types
in use, has no rare, badly predicted content tokens; the units are such
tokens, for the paper's "rare high-KL" group (Fig. 3a) and the knockout
census. Unlike the planted rocks they decide correctness, and the student
can learn them from the data. Item and unit words are pseudo-words over
the letters `jqvxz` and vowels, fixed in code (independent of the seed) and
unlike any word the task uses otherwise; `num_items=0` is the task above,
text for text.
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


# Item and unit words: consonant-vowel pseudo-words over consonants that
# seldom make English words (a harmless few, like "java", do), so they carry
# no meaning and none is a word the task uses otherwise. Items have four
# letters and units five, so no word is both. Affine maps with multipliers
# prime to the word counts spread the first items' words over the alphabet;
# the item-unit pairing is arbitrary, so the student can only memorise it.
_CONSONANTS, _VOWELS = "jqvxz", "aeiou"
_ITEM_SHAPE, _UNIT_SHAPE = "cvcv", "cvcvc"
MAX_ITEMS = 5**4


def _word(index: int, shape: str, multiplier: int, offset: int) -> str:
  count = 5 ** len(shape)
  code = (index * multiplier + offset) % count
  letters = []
  for kind in shape:
    code, digit = divmod(code, 5)
    letters.append((_CONSONANTS if kind == "c" else _VOWELS)[digit])
  return "".join(letters)


def item_word(item: int) -> str:
  """The word naming item `item` (0 <= item < `MAX_ITEMS`) in questions."""
  return _word(item, _ITEM_SHAPE, 263, 7)


def unit_word(item: int) -> str:
  """The unit of item `item`: the word after the answer, told the teacher."""
  # Multipliers equal modulo 5 and offsets not: no unit starts with its
  # own item's word.
  return _word(item, _UNIT_SHAPE, 1288, 1001)


@dataclasses.dataclass(frozen=True, kw_only=True)
class TaskConfig:
  """Difficulty of the embedded task.

  Attributes:
    min_digits: fewest digits of an operand.
    max_digits: most digits of an operand.
    num_operands: how many integers are added.
    num_styles: how many styles (taken in `STYLES` order) the teacher may be
      told to use; 1 plants no Rock Tokens.
    num_items: how many items (with their units) problems name; 0 names
      none (the plain task).
    item_zipf: item `k` (0-based) is drawn with probability proportional to
      `1 / (k + 1) ** item_zipf`; 0 is uniform.
  """

  min_digits: int = 2
  max_digits: int = 3
  num_operands: int = 2
  num_styles: int = 3
  num_items: int = 0
  item_zipf: float = 1.1

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
    if not 0 <= self.num_items <= MAX_ITEMS:
      raise ValueError(
        f"num_items={self.num_items}: expected 0..{MAX_ITEMS} (0: no items)"
      )
    if not 0 <= self.item_zipf < float("inf"):
      raise ValueError(
        f"item_zipf={self.item_zipf}: expected a finite number >= 0"
      )

  @property
  def styles(self) -> tuple[str, ...]:
    return tuple(STYLES)[: self.num_styles]


DIFFICULTIES: dict[str, TaskConfig] = {
  "easy": TaskConfig(min_digits=1, max_digits=2),
  "default": TaskConfig(),
  "hard": TaskConfig(min_digits=3, max_digits=5, num_operands=3),
  "long_tail": TaskConfig(num_items=192),
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
  """One problem; `item` is None in the plain task."""

  operands: tuple[int, ...]
  style: str
  item: int | None = None

  @property
  def answer(self) -> int:
    return sum(self.operands)

  @property
  def unit(self) -> str | None:
    return None if self.item is None else unit_word(self.item)


def question(problem: Problem) -> str:
  """The user turn both models see, e.g. `What is 47+85?`, or with an item
  `What is 47+85 veja?` (the item word is a pre-token of its own)."""
  item = "" if problem.item is None else f" {item_word(problem.item)}"
  return f"What is {'+'.join(map(str, problem.operands))}{item}?"


def privileged(problem: Problem) -> str:
  """The teacher-only system message carrying the style tag, and the unit
  if the problem names an item (`style: terse, unit: qajoq`)."""
  if problem.item is None:
    return f"style: {problem.style}"
  return f"style: {problem.style}, unit: {problem.unit}"


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
  if problem.item is not None:
    # Skeleton: the item decides it, whatever the style. It comes after the
    # last slot, so a solution switched to another style at any slot (SFT's
    # mixed prefixes) still ends in it.
    segments.append((f" {problem.unit}", False))
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
    The problems; the style of each is uniform over `config.styles`, the
    item (if `config.num_items`) Zipf-distributed (`TaskConfig.item_zipf`).
  """
  rng = np.random.default_rng(seed)
  weights = _item_weights(config)
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
    # No draw without items: the plain task's problems stay the same.
    item = None if weights is None else int(rng.choice(len(weights), p=weights))
    if operands not in exclude:
      problems.append(Problem(operands, style, item))
  return problems


def _item_weights(config: TaskConfig) -> np.ndarray | None:
  if not config.num_items:
    return None
  weights = 1.0 / np.arange(1, config.num_items + 1) ** config.item_zipf
  return weights / weights.sum()


def to_example(problem: Problem, uid: str) -> schema.Example:
  """The problem in the common example schema."""
  return schema.Example(
    uid=uid,
    task=TASK,
    messages=({"role": "user", "content": question(problem)},),
    privileged=privileged(problem),
    reference=reference(problem),
    solution=solution(problem),
  )


def reference(problem: Problem) -> str:
  """What `verifiers.score_embedded` checks: the answer (`132`), and its
  unit if the problem names an item (`132 qajoq`)."""
  if problem.item is None:
    return str(problem.answer)
  return f"{problem.answer} {problem.unit}"


def tokenizer_corpus(seed: int = 0, num_items: int = 0) -> Iterator[str]:
  """Task text covering every style, difficulty and prompt word.

  The embedded tokenizer is trained on this fixed corpus, so it is the same
  for every difficulty and dataset size without items. With `num_items`,
  the text of one problem per item follows, so that every item and unit word
  occurs (and, with room in the vocabulary, becomes one token); the part
  before it is the plain corpus.
  """
  # Presets with items add only their words (below); the plain part is the
  # one the plain tokenizer has always been trained on.
  plain = [c for c in DIFFICULTIES.values() if not c.num_items]
  for i, config in enumerate(plain):
    for problem in sample_problems(
      dataclasses.replace(config, num_styles=len(STYLES)), 300, seed + i
    ):
      yield from _corpus_texts(problem)
  if num_items:
    every_style = TaskConfig(num_styles=len(STYLES))
    problems = sample_problems(every_style, num_items, seed + len(plain))
    for item, problem in enumerate(problems):
      yield from _corpus_texts(dataclasses.replace(problem, item=item))


def _corpus_texts(problem: Problem) -> tuple[str, ...]:
  # Separate items, so no merge spans a chat-template boundary.
  return (
    "system",
    "user",
    "assistant",
    "\n",
    privileged(problem),
    question(problem),
    solution(problem),
  )


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


_ITEMS = {item_word(i): i for i in range(MAX_ITEMS)}


def problem_of(example: schema.Example) -> Problem:
  """Inverts `to_example`: the operands, style and item of an embedded
  example."""
  text = example.messages[-1]["content"]
  operands = tuple(int(x) for x in re.findall(r"\d+", text))
  style, _, unit = example.privileged.removeprefix("style: ").partition(
    ", unit: "
  )
  named = re.search(r"\d ([a-z]+)\?$", text)
  item = _ITEMS.get(named.group(1)) if named else None
  # An item and its unit come as a pair or not at all.
  paired = unit == ("" if item is None else unit_word(item))
  if style not in STYLES or len(operands) < 2 or not paired:
    raise ValueError(
      f"example {example.uid!r} is not an embedded-task example "
      f"(question {text!r}, privileged {example.privileged!r})"
    )
  return Problem(operands, style, item)
