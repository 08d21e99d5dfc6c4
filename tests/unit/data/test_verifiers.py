"""Answer checkers on the edge cases that break naive string matching."""

import pytest

from rock_jax.data import verifiers

GSM8K = [
  ("The total is 1,234.", "1234", True),
  ("The total is 1234 dollars", "1,234", True),
  ("So she has -5 apples left.", "-5", True),
  ("So she has \u22125 apples left.", "-5", True),
  ("It costs $5.00.", "5", True),
  ("5 apples", "5", True),
  ("The answer is 7.5", "7.5", True),
  ("10-5 = 5", "5", True),
  ("The result: 10-5", "-5", False),
  ("Step 1: 3 + 4 = 7\n#### 72\nCheck: 99", "72", True),
  ("We get \\boxed{1,000} after 3 steps", "1000", True),
  ("It is 25% of 12, so 3", "3", True),
  ("There are 8 boxes.", "9", False),
  ("no number at all", "3", False),
  ("1,23 is not a number with thousands", "123", False),
]

MATH = [
  ("so \\boxed{\\frac{1}{2}}", "\\frac{1}{2}", True),
  ("\\boxed{ 0.5 }", "\\frac{1}{2}", True),
  ("\\boxed{.5}", "0.5", True),
  ("\\boxed{\\dfrac{1}{2}}", "\\frac12", True),
  ("\\boxed{\\tfrac{3}{4}}", "3/4", True),
  ("\\fbox{3}", "3", True),
  ("first \\boxed{1}, finally \\boxed{2}", "2", True),
  ("first \\boxed{1}, finally \\boxed{2}", "1", False),
  ("\\boxed{\\frac{\\sqrt{3}}{2}}", "\\frac{\\sqrt3}{2}", True),
  ("\\boxed{\\left( 3, \\frac{\\pi}{2} \\right)}", "(3,\\frac{\\pi}{2})", True),
  ("\\boxed{120^\\circ}", "120", True),
  ("\\boxed{120^{\\circ}}", "120^\\circ", True),
  ("\\boxed{28\\text{ cm}}", "28", True),
  ("\\boxed{\\sqrt3}", "\\sqrt{3}", True),
  ("\\boxed{\\text{(B)}}", "\\text{(B)}", True),
  ("\\boxed{x = 5}", "5", True),
  ("\\boxed{10\\%}", "10", True),
  ("\\boxed{1,\\!000}", "1000", True),
  ("\\boxed{-\\frac{1}{2}}", "-0.5", True),
  ("\\boxed 5$.", "5", True),
  ("\\boxed{\\frac{1}{3}}", "\\frac{1}{2}", False),
  ("\\boxed{\\frac{1}{2}", "\\frac{1}{2}", False),
  ("The answer is 5", "5", False),
]

EMBEDDED = [
  ("Start, 7+5=12\nSo the answer is $12$", "12", True),
  ("First, 7+5=12\n\nThus the answer is **12**", "12", True),
  ("Now, 7+5=12\nHence the answer is \\boxed{12}", "12", True),
  ("the answer is 12", "12", True),
  ("the answer is 13, no, the answer is 12", "12", True),
  ("the answer is 12, no, the answer is 13", "12", False),
  ("the answer is 1,2", "12", False),
  ("7+5=12", "12", False),
]


# The long-tailed variant: the unit after the answer's markup counts too.
EMBEDDED_UNITS = [
  ("So the answer is $132$ qajoq", "132 qajoq", True),
  ("Thus the answer is **132** qajoq", "132 qajoq", True),
  ("Hence the answer is \\boxed{132} qajoq", "132 qajoq", True),
  ("the answer is 132 qajoq.", "132 qajoq", True),
  (
    "the answer is $13$ qajoq, no, the answer is $132$ qajoq",
    "132 qajoq",
    True,
  ),
  ("So the answer is $132$ ziqox", "132 qajoq", False),
  ("So the answer is $132$", "132 qajoq", False),
  ("So the answer is $132$ qajoqa", "132 qajoq", False),
  ("So the answer is $133$ qajoq", "132 qajoq", False),
  ("the answer is $132$ qajoq, no, the answer is $132$", "132 qajoq", False),
  ("qajoq: 7+5=12", "132 qajoq", False),
  # A reference without a unit checks the number only, as before.
  ("So the answer is $132$ qajoq", "132", True),
]


@pytest.mark.parametrize("completion,reference,expected", GSM8K)
def test_gsm8k(completion, reference, expected):
  assert verifiers.score_gsm8k(completion, reference) is expected


@pytest.mark.parametrize("completion,reference,expected", MATH)
def test_math(completion, reference, expected):
  assert verifiers.score_math(completion, reference) is expected


@pytest.mark.parametrize("completion,reference,expected", EMBEDDED)
def test_embedded(completion, reference, expected):
  assert verifiers.score_embedded(completion, reference) is expected


@pytest.mark.parametrize("completion,reference,expected", EMBEDDED_UNITS)
def test_embedded_with_units(completion, reference, expected):
  assert verifiers.score_embedded(completion, reference) is expected


def test_last_boxed_keeps_nested_braces():
  text = "a \\boxed{x} b \\boxed{\\frac{a^{2}}{\\sqrt{b}}} c"
  assert verifiers.last_boxed(text) == "\\frac{a^{2}}{\\sqrt{b}}"
  assert verifiers.last_boxed("no box") is None


def test_get_verifier():
  assert verifiers.get_verifier("math") is verifiers.score_math
  with pytest.raises(ValueError, match=r"unknown task 'mmlu'.*'embedded'"):
    verifiers.get_verifier("mmlu")
