"""Local JSONL files in public formats, converted to `schema.Example`.

- GSM8K (github.com/openai/grade-school-math): `question`, and `answer` whose
  last line is `#### <number>`; `<<48/2=24>>` calculator annotations are
  dropped from the solution.
- MATH / MATH-500: `problem`, `answer` (or only a `solution` with a
  `\\boxed{}` answer, as in the original MATH release), optional `unique_id`.
- Prompts: one configurable field holding either a string (one user turn) or
  a chat-message list, with optional reference, privileged and solution
  fields.

Errors name the file, the line and the field.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator, Mapping

from rock_jax.data import schema, verifiers


def read_jsonl(path: str | os.PathLike) -> Iterator[tuple[str, dict]]:
  """Yields `(where, record)` with `where` = `path:line` for messages."""
  with open(path, encoding="utf-8") as f:
    for line_no, line in enumerate(f, start=1):
      if not line.strip():
        continue
      where = f"{os.fspath(path)}:{line_no}"
      try:
        record = json.loads(line)
      except json.JSONDecodeError as e:
        raise ValueError(f"{where}: not valid JSON ({e})") from None
      if not isinstance(record, dict):
        raise ValueError(f"{where}: expected a JSON object, got {record!r}")
      yield where, record


def _text(record: Mapping, field: str, where: str) -> str:
  value = record.get(field)
  if not isinstance(value, str):
    raise ValueError(
      f"{where}: field {field!r} is {value!r}; expected a string "
      f"(fields present: {sorted(record)})"
    )
  return value


def _uid(where: str) -> str:
  # `file:line` without the directory, so moving the data keeps the ids.
  return os.path.basename(where)


def _user_turn(question: str, instruction: str) -> tuple[dict, ...]:
  content = f"{question}\n{instruction}" if instruction else question
  return ({"role": "user", "content": content},)


def gsm8k_example(
  record: Mapping, where: str, instruction: str = ""
) -> schema.Example:
  """A GSM8K record as an `Example` (task `gsm8k`)."""
  answer = _text(record, "answer", where)
  if "####" not in answer:
    raise ValueError(f"{where}: field 'answer' has no '#### <number>' line")
  worked, final = answer.rsplit("####", 1)
  return schema.Example(
    uid=_uid(where),
    task="gsm8k",
    messages=_user_turn(_text(record, "question", where), instruction),
    reference=final.strip().replace(",", ""),
    solution=re.sub(r"<<[^<>]*>>", "", worked).strip(),
  )


def math_example(
  record: Mapping, where: str, instruction: str = ""
) -> schema.Example:
  """A MATH / MATH-500 record as an `Example` (task `math`)."""
  solution = record.get("solution", "")
  if "answer" in record:
    reference = _text(record, "answer", where)
  elif (reference := verifiers.last_boxed(str(solution))) is None:
    raise ValueError(
      f"{where}: no 'answer' field and no \\boxed{{}} in 'solution'"
    )
  return schema.Example(
    uid=str(record.get("unique_id", _uid(where))),
    task="math",
    messages=_user_turn(_text(record, "problem", where), instruction),
    reference=reference,
    solution=str(solution),
  )


def prompt_example(
  record: Mapping,
  where: str,
  *,
  field: str = "prompt",
  task: str = "",
  reference_field: str = "",
  privileged_field: str = "",
  solution_field: str = "",
) -> schema.Example:
  """A record of any prompts file as an `Example`.

  Args:
    record: the JSON object.
    where: `file:line`, for error messages.
    field: holds a string (one user turn) or a list of chat messages.
    task: verifier name for `reference_field`, or "" without references.
    reference_field: field with the reference answer ("" for none).
    privileged_field: field shown to the teacher only ("" for none).
    solution_field: field with a worked solution ("" for none).

  Returns:
    The example.
  """
  value = record.get(field)
  if isinstance(value, str):
    messages = _user_turn(value, "")
  else:
    messages = schema.check_messages(value, f"{where}: field {field!r}")
  optional = {
    name: _text(record, key, where) if key else ""
    for name, key in (
      ("reference", reference_field),
      ("privileged", privileged_field),
      ("solution", solution_field),
    )
  }
  return schema.Example(
    uid=_uid(where), task=task, messages=messages, **optional
  )
