"""Answer checkers: pure `score(completion_text, reference) -> bool` functions.

`VERIFIERS` maps an example's `task` field to its checker. Completions are
decoded text without the end-of-turn token.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from decimal import Decimal, InvalidOperation
from fractions import Fraction

# A number with optional sign, thousands commas and decimals. The sign counts
# only when it does not follow a word or a closing bracket ("10-5" is a
# subtraction, not -5); a trailing "." ends a sentence rather than the number.
_NUMBER = re.compile(
  r"(?:(?<![\w)\]])-)?(?<![\d.,])(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?"
)
_THOUSANDS = re.compile(r"^-?\d{1,3}(,\d{3})+(\.\d+)?$")


def _numbers(text: str) -> list[str]:
  text = text.replace("\u2212", "-")  # Unicode minus sign.
  return [m.replace(",", "") for m in _NUMBER.findall(text)]


def _decimal(text: str) -> Decimal | None:
  try:
    return Decimal(text.replace(",", ""))
  except InvalidOperation:
    return None


def last_boxed(text: str) -> str | None:
  """Contents of the last `\\boxed{...}` or `\\fbox{...}`, braces balanced.

  Also accepts the brace-less `\\boxed 5`. None when there is no box or its
  braces never close.
  """
  start = max(text.rfind("\\boxed"), text.rfind("\\fbox"))
  if start < 0:
    return None
  rest = text[start:].removeprefix("\\boxed").removeprefix("\\fbox")
  if rest.startswith(" "):
    return re.split(r"[\s$]", rest.lstrip(), maxsplit=1)[0] or None
  if not rest.startswith("{"):
    return None
  depth = 0
  for i, char in enumerate(rest):
    depth += {"{": 1, "}": -1}.get(char, 0)
    if depth == 0:
      return rest[1:i]
  return None


def score_gsm8k(completion: str, reference: str) -> bool:
  """GSM8K: the final number equals the reference numerically.

  The final number is the one after the last `####`, else the one in the last
  `\\boxed{}`, else the last number in the text; commas, `$` and units around
  it do not matter.
  """
  if "####" in completion:
    found = _numbers(completion.rsplit("####", 1)[1])[:1]
  elif (boxed := last_boxed(completion)) is not None:
    found = _numbers(boxed)[-1:]
  else:
    found = _numbers(completion)[-1:]
  want = _decimal(reference.strip().replace("$", ""))
  return bool(found) and want is not None and _decimal(found[0]) == want


_MATH_REMOVE = (
  "\\!",
  "\\,",
  "\\;",
  "\\:",
  "\\ ",
  "\\left",
  "\\right",
  "^{\\circ}",
  "^\\circ",
  "\\%",
  "%",
  "\\$",
  "$",
  "\\displaystyle",
)
_UNIT = re.compile(r"(?<=.)\\(?:text|mbox|mathrm)\{\s*[A-Za-z][A-Za-z\s]*\}$")


def _fix_fracs(text: str) -> str:
  # `\frac12` and `\frac1{2}` mean `\frac{1}{2}`: brace single-char arguments.
  return re.sub(
    r"\\frac(\{[^{}]*\}|[^{\s])(\{[^{}]*\}|[^{\s])",
    lambda m: (
      "\\frac"
      + "".join(g if g.startswith("{") else "{" + g + "}" for g in m.groups())
    ),
    text,
  )


def normalize_math(answer: str) -> str:
  """Hendrycks-MATH style normalisation of a final answer string."""
  s = answer.strip().replace("\n", "").replace("\\\\", "\\")
  s = s.replace("\\tfrac", "\\frac").replace("\\dfrac", "\\frac")
  for token in _MATH_REMOVE:
    s = s.replace(token, "")
  s = _UNIT.sub("", s.strip())
  if m := re.fullmatch(r"\\(?:text|mbox|mathrm)\{(.*)\}", s):
    s = m.group(1)
  # "x = 5" is the answer 5 when the left side is a bare variable.
  if s.count("=") == 1 and len(s.split("=")[0].strip()) <= 2:
    s = s.split("=")[1]
  s = re.sub(r"\\sqrt(\w)", r"\\sqrt{\1}", s)
  s = _fix_fracs(s.replace(" ", ""))
  if _THOUSANDS.match(s):
    s = s.replace(",", "")
  s = s.rstrip(".")
  if s.startswith("."):
    s = "0" + s
  if re.fullmatch(r"-?\d+/\d+", s):
    num, den = s.split("/")
    s = f"\\frac{{{num}}}{{{den}}}"
  return s


def _value(normalized: str) -> Fraction | None:
  """The exact value of a plain number or integer fraction, else None."""
  if m := re.fullmatch(r"(-?)\\frac\{(-?\d+)\}\{(\d+)\}", normalized):
    if int(m.group(3)) == 0:
      return None
    return (-1 if m.group(1) else 1) * Fraction(
      int(m.group(2)), int(m.group(3))
    )
  if re.fullmatch(r"-?\d+(\.\d+)?", normalized):
    return Fraction(normalized)
  return None


def math_equal(answer: str, reference: str) -> bool:
  """Equal after normalisation, or as exact numbers (`0.5 == \\frac{1}{2}`)."""
  a, b = normalize_math(answer), normalize_math(reference)
  if a == b:
    return True
  va, vb = _value(a), _value(b)
  return va is not None and va == vb


def score_math(completion: str, reference: str) -> bool:
  """MATH: the last `\\boxed{}` answer equals the reference."""
  boxed = last_boxed(completion)
  return boxed is not None and math_equal(boxed, reference)


_EMBEDDED_ANSWER = re.compile(r"answer is\s*(?:\$|\*\*|\\boxed\{)?(\d+)")
# The long-tailed variant's answer: the number, the markup closing it, and
# the word right after (the unit; empty if there is none).
_EMBEDDED_UNIT = re.compile(
  r"answer is\s*(?:\$|\*\*|\\boxed\{)?(\d+)(?:\$|\*\*|\})?\s*([A-Za-z]*)"
)


def score_embedded(completion: str, reference: str) -> bool:
  """Embedded task: the integer after the last `answer is` equals the
  reference exactly, whatever the style's markup around it.

  A reference with a unit (`132 qajoq`, the long-tailed variant) also needs
  that word right after the answer's markup (`... is $132$ qajoq`).
  """
  number, _, unit = reference.strip().partition(" ")
  if not unit:
    found = _EMBEDDED_ANSWER.findall(completion)
    return bool(found) and found[-1] == number
  found = _EMBEDDED_UNIT.findall(completion)
  return bool(found) and found[-1] == (number, unit.strip())


VERIFIERS: dict[str, Callable[[str, str], bool]] = {
  "embedded": score_embedded,
  "gsm8k": score_gsm8k,
  "math": score_math,
}


def get_verifier(task: str) -> Callable[[str, str], bool]:
  """Returns the checker for an example's `task`."""
  if task not in VERIFIERS:
    raise ValueError(f"unknown task {task!r}; available: {sorted(VERIFIERS)}")
  return VERIFIERS[task]
