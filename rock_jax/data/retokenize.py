"""Student completions re-tokenised for a teacher of another tokenizer.

Each completion's text (the student's sampled ids, decoded) is tokenised by
the teacher's tokenizer, after the teacher's own rendered prompt, and closed
with the teacher's end-of-turn token where the student's turn ended: the
prompt/completion boundary stays where it was. The two tokenisations are then
grouped into aligned spans (`alignment.align`), and each student position
learns which span it is in, whether that span is one token on both sides with
the same string (an exact position), and which teacher position scores it.

Host-side NumPy, run once per batch before the batch reaches the devices.
Legend: B batch, N student completion width, M teacher completion width.
"""

from __future__ import annotations

import dataclasses
import re

import numpy as np

from rock_jax.data import alignment


@dataclasses.dataclass(frozen=True)
class CrossBatch:
  """One batch of completions in the teacher's tokens, aligned to the
  student's.

  Attributes:
    teacher_ids_BxM, teacher_mask_BxM: the teacher's completion tokens,
      right-padded.
    loss_mask_BxN: student positions the loss reads: sampled, not a
      template-only token, in a completion that aligned and fits M.
    span_BxN, teacher_span_BxM: each token's span index within its row, -1
      where no loss is taken (padding, template tokens, skipped rows).
    exact_BxN: positions whose span is one token on both sides with the
      same string (their ids map to each other).
    teacher_index_BxN: the teacher completion position of the first token
      of each position's span: the teacher's prediction after the text
      both sides share (the exact counterpart where `exact_BxN`).
    start_BxN: the first student position of each span (a shared prefix
      of the text before it).
    counts: `template_tokens` (student tokens the teacher's template has no
      counterpart for: special tokens other than the end of turn),
      `unaligned` (completions whose text the teacher's tokenizer does not
      spell back: it normalises it, or a byte that is no UTF-8 text has no
      single-byte teacher token), `too_long` (completions
      longer than M teacher tokens) and `tokens` (sampled tokens).
  """

  teacher_ids_BxM: np.ndarray
  teacher_mask_BxM: np.ndarray
  loss_mask_BxN: np.ndarray
  span_BxN: np.ndarray
  teacher_span_BxM: np.ndarray
  exact_BxN: np.ndarray
  teacher_index_BxN: np.ndarray
  start_BxN: np.ndarray
  counts: dict[str, int]


def _special_ids(tokenizer) -> set[int]:
  """Ids a chat template writes (special added tokens, eos, pad, bos)."""
  added = {i for i, t in tokenizer.added_tokens_decoder.items() if t.special}
  return added | set(tokenizer.all_special_ids)


class Retokenizer:
  """Re-tokenises student completions for the teacher (`CrossBatch`).

  Args:
    student, teacher: the two tokenizers (byte-level BPE, with eos).
    width: M, the teacher completion width in its own tokens.
    student_what, teacher_what: where each tokenizer came from, for errors.

  Raises:
    ValueError: a tokenizer is not byte-level BPE, or no student token has
      a teacher token of the same string (the exact positions would never
      occur: the tokenizers are probably swapped or wrong).
  """

  def __init__(
    self,
    student,
    teacher,
    width: int,
    student_what: str = "student tokenizer",
    teacher_what: str = "teacher tokenizer",
  ):
    if width < 1:
      raise ValueError(f"width={width}: expected at least 1 teacher token")
    self.student, self.teacher = student, teacher
    self.width = width
    self.student_bytes = alignment.TokenBytes(student, student_what)
    self.teacher_bytes = alignment.TokenBytes(teacher, teacher_what)
    self.vocab_map_V = alignment.vocab_map(
      self.student_bytes, self.teacher_bytes
    )
    self.special = _special_ids(student)
    # Template tokens (eos, im_start...) may share a string by convention;
    # the exact positions need text tokens in common.
    text_ids = np.setdiff1d(
      np.arange(len(self.vocab_map_V)), sorted(self.special)
    )
    shared = int(np.sum(self.vocab_map_V[text_ids] >= 0))
    if shared == 0:
      raise ValueError(
        f"{teacher_what} and {student_what} share no token string "
        f"(0 of {len(text_ids)} student text tokens map to a teacher id); "
        "expected byte-level vocabularies with common tokens: check that "
        "teacher.tokenizer and student.tokenizer name the right folders"
      )
    # The comparable ids' groups (-1) and the first-byte groups of the rest
    # (`alignment.first_byte_groups`), student and teacher vocabularies.
    self.student_groups_V = alignment.first_byte_groups(
      self.student_bytes, self.vocab_map_V >= 0
    )
    comparable_t = np.zeros(len(self.teacher_bytes.table), bool)
    comparable_t[self.vocab_map_V[self.vocab_map_V >= 0]] = True
    self.teacher_groups_V = alignment.first_byte_groups(
      self.teacher_bytes, comparable_t
    )
    # Bytes that are no UTF-8 text (a character cut off) reach the teacher
    # as its single-byte tokens: the teacher's text is the student's bytes.
    self.byte_ids: dict[int, int] = {}
    for i, piece in enumerate(self.teacher_bytes.table):
      if len(piece) == 1:
        self.byte_ids.setdefault(piece[0], i)
    self.teacher_pad = (
      teacher.eos_token_id
      if teacher.pad_token_id is None
      else teacher.pad_token_id
    )

  def __call__(self, completion_BxN, mask_BxN) -> CrossBatch:
    """Aligns a batch of student completions (host arrays) to the teacher's
    tokens; never raises on a completion, it counts and skips it."""
    completion_BxN = np.asarray(completion_BxN)
    mask_BxN = np.asarray(mask_BxN, bool)
    batch, n = completion_BxN.shape
    out = _empty(batch, n, self.width, self.teacher_pad)
    counts = dict(template_tokens=0, unaligned=0, too_long=0, tokens=0)
    rows = [
      self._row_text(completion_BxN[b], mask_BxN[b]) for b in range(batch)
    ]
    for b, (body, end, teacher_ids, template) in enumerate(
      self._teacher_ids(rows)
    ):
      counts["tokens"] += int(mask_BxN[b].sum())
      counts["template_tokens"] += template
      if teacher_ids is None:
        counts["unaligned"] += 1
        continue
      reason = self._fill(out, b, completion_BxN[b], body, end, teacher_ids)
      if reason:
        counts[reason] += 1
    return CrossBatch(**out, counts=counts)

  def _row_text(self, ids_N, mask_N):
    """`(body positions, end-of-turn position or None, pieces, template
    count)` of one completion: its text as UTF-8 runs (str) and the bytes
    between them that are no text (bytes)."""
    positions = np.flatnonzero(mask_N)
    end = None
    if (
      len(positions) and int(ids_N[positions[-1]]) == self.student.eos_token_id
    ):
      end, positions = positions[-1], positions[:-1]
    keep = np.array(
      [int(ids_N[p]) not in self.special for p in positions], bool
    )
    body = positions[keep] if len(positions) else positions
    raw = b"".join(self.student_bytes.pieces(ids_N[body]))
    text = raw.decode("utf-8", "surrogateescape")
    pieces = [
      p.encode("utf-8", "surrogateescape") if _NOT_TEXT.match(p) else p
      for p in _NOT_TEXT_RUNS.split(text)
      if p
    ]
    return body, end, pieces, int(np.sum(~keep))

  def _teacher_ids(self, rows):
    """Each row with its teacher ids (None if a byte has no teacher token):
    the text runs of all rows tokenised at once."""
    texts = [p for row in rows for p in row[2] if isinstance(p, str)]
    encoded = iter(
      self.teacher(texts, add_special_tokens=False, split_special_tokens=True)[
        "input_ids"
      ]
    )
    for body, end, pieces, template in rows:
      ids = []
      for piece in pieces:
        if isinstance(piece, str):
          ids += next(encoded)
        else:
          ids += [self.byte_ids.get(b, -1) for b in piece]
      yield body, end, None if -1 in ids else ids, template

  def _fill(self, out, b, ids_N, body, end, teacher_ids) -> str:
    """Writes row b of `out`; returns why it was skipped ('' if kept)."""
    teacher_ids = list(teacher_ids)
    if len(body):
      spans = alignment.align(
        self.student_bytes.pieces(ids_N[body]),
        self.teacher_bytes.pieces(teacher_ids),
      )
      if spans is None:
        return "unaligned"
      student_span, teacher_span = spans.student, spans.teacher
      count = spans.count
      single = spans.one_to_one()
    else:
      student_span = teacher_span = np.zeros(0, np.int64)
      count, single = 0, np.zeros(0, bool)
    if end is not None:
      # The two ends of turn form the last span, whatever their strings.
      body = np.append(body, end)
      teacher_ids.append(self.teacher.eos_token_id)
      student_span = np.append(student_span, count)
      teacher_span = np.append(teacher_span, count)
      single = np.append(single, True)
      count += 1
    if len(teacher_ids) > self.width:
      return "too_long"
    if not len(body):
      return ""
    m = len(teacher_ids)
    out["teacher_ids_BxM"][b, :m] = teacher_ids
    out["teacher_mask_BxM"][b, :m] = True
    out["teacher_span_BxM"][b, :m] = teacher_span
    # Spans are numbered in order, so a span's first token is where the
    # running span index first reaches it.
    first = np.searchsorted(teacher_span, np.arange(count), side="left")
    student_ids = ids_N[body]
    out["loss_mask_BxN"][b, body] = True
    out["span_BxN"][b, body] = student_span
    out["teacher_index_BxN"][b, body] = first[student_span]
    out["start_BxN"][b, body] = np.diff(student_span, prepend=-1) > 0
    same = (
      self.vocab_map_V[student_ids]
      == np.asarray(teacher_ids)[first[student_span]]
    )
    out["exact_BxN"][b, body] = single[student_span] & same
    return ""


# Bytes that are no UTF-8 (decoded as lone surrogates by surrogateescape).
_NOT_TEXT = re.compile("[\udc80-\udcff]")
_NOT_TEXT_RUNS = re.compile("([\udc80-\udcff]+)")


def _empty(batch: int, n: int, m: int, pad: int) -> dict[str, np.ndarray]:
  return dict(
    teacher_ids_BxM=np.full((batch, m), pad, np.int32),
    teacher_mask_BxM=np.zeros((batch, m), bool),
    loss_mask_BxN=np.zeros((batch, n), bool),
    span_BxN=np.full((batch, n), -1, np.int32),
    teacher_span_BxM=np.full((batch, m), -1, np.int32),
    exact_BxN=np.zeros((batch, n), bool),
    teacher_index_BxN=np.zeros((batch, n), np.int32),
    start_BxN=np.zeros((batch, n), bool),
  )
