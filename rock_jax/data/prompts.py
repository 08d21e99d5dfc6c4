"""Teacher and student prompts from one example, as text and padded ids.

The student sees `example.messages`. The teacher sees the same turns plus the
example's privileged text as a system message (merged into an existing system
turn), which is how the embedded task's style tag reaches the teacher only,
and how privileged-information distillation works on real data. Each side
renders with its own tokenizer and chat template and `add_generation_prompt`,
so a student completion is scored by the teacher as `teacher prompt ids +
completion ids`: completions pass between the models as ids, never
re-tokenized text (re-tokenizing may not give back the sampled ids).

Prompts are left-padded: every row's last prompt token sits in the same
column, so decoding with a KV cache appends all rows at one position; models
derive positions from the mask. Completions are right-padded after an eos.
Legend: B batch, P prompt length, T completion length.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from rock_jax.data import schema


def student_messages(example: schema.Example) -> list[dict]:
  """The chat turns the student is prompted with."""
  return [dict(m) for m in example.messages]


def teacher_messages(example: schema.Example) -> list[dict]:
  """The student's turns with the privileged text as a system message."""
  messages = student_messages(example)
  if not example.privileged:
    return messages
  if messages[0]["role"] == "system":
    content = f"{example.privileged}\n\n{messages[0]['content']}"
    return [{"role": "system", "content": content}, *messages[1:]]
  return [{"role": "system", "content": example.privileged}, *messages]


def render_prompt(messages: Sequence[Mapping], tokenizer, **template_kwargs):
  """Chat-template text ending with the opened assistant turn.

  Args:
    messages: chat turns.
    tokenizer: a tokenizer with a chat template (`tokenization`).
    **template_kwargs: passed to the template, e.g. `enable_thinking=False`.

  Returns:
    The prompt text.
  """
  return tokenizer.apply_chat_template(
    list(messages),
    tokenize=False,
    add_generation_prompt=True,
    **template_kwargs,
  )


def render_student_prompt(example, tokenizer, **template_kwargs) -> str:
  """The student's prompt text for `example`."""
  return render_prompt(student_messages(example), tokenizer, **template_kwargs)


def render_teacher_prompt(example, tokenizer, **template_kwargs) -> str:
  """The teacher's (privileged) prompt text for `example`."""
  return render_prompt(teacher_messages(example), tokenizer, **template_kwargs)


def encode(text: str, tokenizer) -> list[int]:
  """Ids of rendered text; the template already wrote any BOS token, so the
  tokenizer must not add special tokens again."""
  return tokenizer.encode(text, add_special_tokens=False)


def _pad_id(tokenizer) -> int:
  # Padded positions are masked out, so any id works; many real tokenizers
  # (Llama) define no pad token.
  pad = tokenizer.pad_token_id
  return tokenizer.eos_token_id if pad is None else pad


def _pad(
  rows: Sequence[Sequence[int]], length: int, pad_id: int, left: bool, what
) -> tuple[np.ndarray, np.ndarray]:
  tokens = np.full((len(rows), length), pad_id, np.int32)
  mask = np.zeros((len(rows), length), bool)
  for b, row in enumerate(rows):
    if len(row) > length:
      raise ValueError(
        f"{what(b)} has {len(row)} tokens, more than the length {length}; "
        "raise the length or filter the data"
      )
    cols = slice(length - len(row), length) if left else slice(0, len(row))
    tokens[b, cols] = row
    mask[b, cols] = True
  return tokens, mask


ROLES = ("student", "teacher")
_RENDER = {"student": render_student_prompt, "teacher": render_teacher_prompt}


@dataclasses.dataclass(frozen=True)
class PromptFormat:
  """How one role's prompts are written, rendered and padded.

  Attributes:
    role: "student" or "teacher" (whose turns: the teacher's carry the
      privileged text).
    tokenizer: the role's tokenizer and chat template.
    width: the longest prompt accepted, in tokens (a longer one is an
      error).
    template_kwargs: extra chat-template variables, e.g.
      `{"enable_thinking": False}`.
    padded_width: P, the arrays' left-padded width, at least `width`
      (0: `width`). A run pads to the width's bucket, so widths in one
      bucket share compiled programs.
  """

  role: str
  tokenizer: Any
  width: int
  template_kwargs: Mapping[str, Any] = dataclasses.field(default_factory=dict)
  padded_width: int = 0

  def __post_init__(self):
    if self.role not in ROLES:
      raise ValueError(f"role={self.role!r}: expected one of {ROLES}")
    if self.padded_width and self.padded_width < self.width:
      raise ValueError(
        f"padded_width={self.padded_width}: expected 0 or at least the "
        f"width {self.width}"
      )

  @property
  def array_width(self) -> int:
    """P, the width of the padded arrays."""
    return self.padded_width or self.width

  def text(self, example: schema.Example) -> str:
    """The prompt text of `example`, ending with the opened answer turn."""
    return _RENDER[self.role](example, self.tokenizer, **self.template_kwargs)

  def ids(self, example: schema.Example) -> list[int]:
    """The prompt's token ids, unpadded."""
    return encode(self.text(example), self.tokenizer)

  def pad(self, examples: Sequence[schema.Example]):
    """Left-padded `(tokens_BxP, mask_BxP)`, int32 and bool,
    P = `array_width`; a prompt over `width` is an error."""
    rows = [self.ids(e) for e in examples]
    for b, row in enumerate(rows):
      if len(row) > self.width:
        raise ValueError(
          f"{self.role} prompt of example {examples[b].uid!r} has "
          f"{len(row)} tokens, more than the width {self.width}; raise the "
          "width or filter the data"
        )
    return _pad(
      rows,
      self.array_width,
      _pad_id(self.tokenizer),
      left=True,
      what=lambda b: f"{self.role} prompt of example {examples[b].uid!r}",
    )


@dataclasses.dataclass(frozen=True)
class PromptBatch:
  """Both roles' left-padded prompts for a list of examples."""

  student_tokens_BxP: np.ndarray
  student_mask_BxP: np.ndarray
  teacher_tokens_BxP: np.ndarray
  teacher_mask_BxP: np.ndarray
  examples: tuple[schema.Example, ...]

  def of(self, role: str) -> tuple[np.ndarray, np.ndarray]:
    """One role's `(tokens_BxP, mask_BxP)`."""
    if role not in ROLES:
      raise ValueError(f"role={role!r}: expected one of {ROLES}")
    return getattr(self, f"{role}_tokens_BxP"), getattr(
      self, f"{role}_mask_BxP"
    )

  @property
  def references(self) -> list[str]:
    return [e.reference for e in self.examples]

  @property
  def tasks(self) -> list[str]:
    return [e.task for e in self.examples]


def make_prompt_batch(
  examples: Sequence[schema.Example],
  *,
  student: PromptFormat,
  teacher: PromptFormat,
) -> PromptBatch:
  """Renders and left-pads both roles' prompts to their fixed widths.

  Fixed widths keep array shapes, hence jitted functions, constant.

  Args:
    examples: the local batch (from `loader.Loader`).
    student, teacher: each role's `PromptFormat`.

  Returns:
    int32 tokens and bool masks, B = len(examples).
  """
  if (student.role, teacher.role) != ROLES:
    raise ValueError(
      f"formats of roles {student.role!r}, {teacher.role!r} passed as "
      "student, teacher"
    )
  examples = tuple(examples)
  return PromptBatch(*student.pad(examples), *teacher.pad(examples), examples)


def encode_completions(
  texts: Sequence[str], tokenizer, length: int
) -> tuple[np.ndarray, np.ndarray]:
  """Right-padded completion ids, each ending with the eos token.

  Used for teacher-forced targets such as the reference `solution`s on which
  the embedded task's teacher is trained.

  Returns:
    `(tokens_BxT, mask_BxT)`, int32 and bool; the eos is inside the mask.
  """
  rows = [encode(t, tokenizer) + [tokenizer.eos_token_id] for t in texts]
  return _pad(
    rows,
    length,
    _pad_id(tokenizer),
    left=False,
    what=lambda b: f"completion {b} ({texts[b][:40]!r}...)",
  )
