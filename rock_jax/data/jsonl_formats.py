"""JSONL files in public formats, converted to `schema.Example`.

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
from decimal import Decimal, InvalidOperation

from rock_jax import storage
from rock_jax.data import schema, verifiers


def read_jsonl(path: str | os.PathLike) -> Iterator[tuple[str, dict]]:
  """Yields `(where, record)` with `where` = `path:line` for messages.

  A `gs://` path is read from its checked local mirror (`storage.mirror`),
  but `where` names the URL.
  """
  # Bytes, decoded line by line, so an encoding error can name its line;
  # `utf-8-sig` drops the byte-order mark some editors write.
  with open(storage.mirror(os.fspath(path)), "rb") as f:
    for line_no, raw in enumerate(f, start=1):
      where = f"{os.fspath(path)}:{line_no}"
      try:
        line = raw.decode("utf-8-sig")
      except UnicodeDecodeError as e:
        raise ValueError(
          f"{where}: not UTF-8 text ({e}); save the file as UTF-8"
        ) from None
      if not line.strip():
        continue
      try:
        record = json.loads(line)
      except json.JSONDecodeError as e:
        raise ValueError(
          f"{where}: not valid JSON ({e}); each line must be one JSON object"
        ) from None
      if not isinstance(record, dict):
        raise ValueError(
          f"{where}: expected a JSON object, got {_show(record)}; each line "
          "must be one JSON object"
        )
      yield where, record


def _show(value: object, limit: int = 80) -> str:
  """`repr(value)`, shortened: a message must stay readable."""
  text = repr(value)
  return text if len(text) <= limit else f"{text[: limit - 3]}..."


def _text(record: Mapping, field: str, where: str, hint: str) -> str:
  value = record.get(field)
  if not isinstance(value, str):
    raise ValueError(
      f"{where}: field {field!r} is {_show(value)}; expected a string "
      f"(fields present: {sorted(record)}); {hint}"
    )
  return value


def _uid(where: str) -> str:
  # `file:line` without the directory, so moving the data keeps the ids.
  return os.path.basename(where)


def _user_turn(question: str, instruction: str) -> tuple[dict, ...]:
  content = f"{question}\n{instruction}" if instruction else question
  return ({"role": "user", "content": content},)


_GSM8K_HINT = (
  'a GSM8K line is {"question": "...", "answer": "<worked solution>\\n'
  '#### <number>"}'
)
_MATH_HINT = (
  "a MATH line has 'problem' and 'answer' strings (or, instead of 'answer', "
  "a 'solution' with \\boxed{<answer>})"
)


def _final_number(answer: str, where: str) -> str:
  """The GSM8K reference: the text after the last `####`, a number."""
  if "####" not in answer:
    raise ValueError(
      f"{where}: field 'answer' has no '#### <number>' line (it ends "
      f"{_show(answer[-40:])}); {_GSM8K_HINT}"
    )
  final = answer.rsplit("####", 1)[1].strip().replace(",", "")
  try:
    Decimal(final.replace("$", ""))
  except InvalidOperation:
    # The gsm8k verifier compares numbers, so no completion could match.
    raise ValueError(
      f"{where}: field 'answer' ends in '#### {final}'; expected a number "
      f"after '####' (e.g. '#### 42'); {_GSM8K_HINT}"
    ) from None
  return final


def gsm8k_example(
  record: Mapping, where: str, instruction: str = ""
) -> schema.Example:
  """A GSM8K record as an `Example` (task `gsm8k`)."""
  answer = _text(record, "answer", where, _GSM8K_HINT)
  final = _final_number(answer, where)
  worked = answer.rsplit("####", 1)[0]
  return schema.Example(
    uid=_uid(where),
    task="gsm8k",
    messages=_user_turn(
      _text(record, "question", where, _GSM8K_HINT), instruction
    ),
    reference=final,
    solution=re.sub(r"<<[^<>]*>>", "", worked).strip(),
  )


def math_example(
  record: Mapping, where: str, instruction: str = ""
) -> schema.Example:
  """A MATH / MATH-500 record as an `Example` (task `math`)."""
  solution = record.get("solution", "")
  if "answer" in record:
    reference = _text(record, "answer", where, _MATH_HINT)
  elif (reference := verifiers.last_boxed(str(solution))) is None:
    raise ValueError(
      f"{where}: no 'answer' field and no \\boxed{{}} in 'solution' (fields "
      f"present: {sorted(record)}); {_MATH_HINT}"
    )
  return schema.Example(
    uid=str(record.get("unique_id", _uid(where))),
    task="math",
    messages=_user_turn(
      _text(record, "problem", where, _MATH_HINT), instruction
    ),
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
  elif isinstance(value, list):
    messages = schema.check_messages(value, f"{where}: field {field!r}")
  else:
    raise ValueError(
      f"{where}: field {field!r}: expected a list of chat messages or a "
      f"string, got {_show(value)} (fields present: {sorted(record)}); set "
      "the option field= to the field holding each prompt"
    )
  optional = {
    name: _text(record, key, where, f"set {option}= to the right field, or ''")
    if key
    else ""
    for name, option, key in (
      ("reference", "reference_field", reference_field),
      ("privileged", "privileged_field", privileged_field),
      ("solution", "solution_field", solution_field),
    )
  }
  return schema.Example(
    uid=_uid(where), task=task, messages=messages, **optional
  )
