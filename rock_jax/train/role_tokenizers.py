"""Both roles' tokenizers, and whether the teacher's can be compared with
the student's: one vocabulary, or token strings in common across
tokenizers (`teacher.cross_tokenizer`, `rock_jax.data.retokenize`).
"""

from __future__ import annotations

from rock_jax.config import fields
from rock_jax.data import prompts, retokenize, tokenization
from rock_jax.models import hf
from rock_jax.opd.train_step import check_vocab

ROLES = prompts.ROLES


def load(config, role: str, path: str):
  """A role's tokenizer; a failure names the role's fields."""
  c = config[role]
  try:
    return tokenization.load_tokenizer(
      c.tokenizer or path, chat_template=c.chat_template or None
    )
  except ValueError as e:
    raise ValueError(
      f"{role}.tokenizer={c.tokenizer or path!r}, {role}.chat_template="
      f"{c.chat_template!r}: {e}"
    ) from e


def pair(config, tokenizers, paths, given):
  """Checks that teacher and student can be compared: one vocabulary, or
  across tokenizers (`teacher.cross_tokenizer`) token strings in common.
  Returns the run's `Retokenizer` across tokenizers, else None."""
  names = {
    role: f"{role}.tokenizer={config[role].tokenizer or given[role]!r}"
    for role in ROLES
  }
  if config.teacher.cross_tokenizer:
    return retokenize.Retokenizer(
      tokenizers["student"],
      tokenizers["teacher"],
      fields.completion_width(config, "teacher")[1],
      names["student"],
      names["teacher"],
    )
  try:
    tokenization.check_same_vocab(tokenizers["teacher"], tokenizers["student"])
  except ValueError as e:
    raise ValueError(
      f"{names['teacher']} and {names['student']}: {e}; set "
      "teacher.cross_tokenizer=True to distil across tokenizers"
    ) from e
  check_vocab(
    hf.load_config(paths["student"]),
    hf.load_config(paths["teacher"]),
    student_path=given["student"],
    teacher_path=given["teacher"],
  )
  return None
