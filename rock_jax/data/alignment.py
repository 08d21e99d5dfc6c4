"""Two tokenisations of one text: token bytes, aligned spans, vocabulary maps.

A span ends where both tokenisations end a token at the same offset of the
text; between two such offsets each side holds one or more tokens of the
same text. Offsets are counted in UTF-8 bytes: byte-level BPE may end a token
inside a multi-byte character (emoji, rare CJK), and where both sides do so
at the same byte, the pieces before it are the same bytes on both sides.

Legend: N student tokens, M teacher tokens, K spans, V vocabulary.
"""

from __future__ import annotations

import bisect
import dataclasses
import functools

import numpy as np
from tokenizers import decoders


@functools.cache
def _unicode_to_byte() -> dict[str, int]:
  """The inverse of byte-level BPE's byte -> printable character table (the
  GPT-2 scheme every ByteLevel decoder uses)."""
  printable = (
    list(range(ord("!"), ord("~") + 1))
    + list(range(ord("¡"), ord("¬") + 1))
    + list(range(ord("®"), ord("ÿ") + 1))
  )
  chars, extra = {}, 0
  for b in range(256):
    if b in printable:
      chars[chr(b)] = b
    else:
      chars[chr(256 + extra)] = b
      extra += 1
  return chars


class TokenBytes:
  """The UTF-8 bytes each id of a byte-level BPE tokenizer stands for (Qwen,
  DeepSeek, Llama 3, GPT-2 and the embedded task's), one table built from
  the vocabulary: alignment then costs no decoding.
  """

  def __init__(self, tokenizer, what: str = "tokenizer"):
    decoder = tokenizer.backend_tokenizer.decoder
    if not isinstance(decoder, decoders.ByteLevel):
      raise ValueError(
        f"{what}: its decoder is {type(decoder).__name__}; cross-tokenizer "
        "alignment reads token bytes from byte-level BPE vocabularies "
        "(decoder ByteLevel: Qwen, DeepSeek, Llama 3, GPT-2 families)"
      )
    self.table: list[bytes] = _byte_level_table(tokenizer)

  def pieces(self, ids) -> list[bytes]:
    """Each token's bytes, in order; their concatenation is the text."""
    return [self.table[int(i)] for i in ids]


def _byte_level_table(tokenizer) -> list[bytes]:
  """Bytes of every id of a byte-level BPE tokenizer (added tokens as their
  literal text; ids without a token as b"")."""
  to_byte = _unicode_to_byte()
  size = max(len(tokenizer), max(tokenizer.get_vocab().values()) + 1)
  tokens = tokenizer.convert_ids_to_tokens(list(range(size)))
  added = {i: t.content for i, t in tokenizer.added_tokens_decoder.items()}
  table = []
  for i, token in enumerate(tokens):
    if i in added:
      table.append(added[i].encode("utf-8"))
    elif token is None:
      table.append(b"")
    else:
      table.append(bytes(to_byte[c] for c in token))
  return table


@dataclasses.dataclass(frozen=True)
class Spans:
  """How two tokenisations of one text group into aligned spans.

  Attributes:
    student, teacher: int [N] and [M], per token the index of its span
      (0 .. K - 1).
    bounds: int [K], each span's end offset in bytes of the text.
  """

  student: np.ndarray
  teacher: np.ndarray
  bounds: np.ndarray

  @property
  def count(self) -> int:
    return len(self.bounds)

  def one_to_one(self) -> np.ndarray:
    """bool [K]: spans of exactly one token on each side."""
    s = np.bincount(self.student, minlength=self.count)
    t = np.bincount(self.teacher, minlength=self.count)
    return (s == 1) & (t == 1)


def _ends(pieces: list[bytes]) -> np.ndarray:
  return np.cumsum([len(p) for p in pieces], dtype=np.int64)


def align(student: list[bytes], teacher: list[bytes]) -> Spans | None:
  """Groups two tokenisations of one text into spans of shared boundaries.

  Args:
    student, teacher: each token's bytes (`TokenBytes.pieces`).

  Returns:
    The `Spans`, or None when the two do not spell the same text (the
    teacher's tokenizer normalised it, or a side is empty).
  """
  text = b"".join(student)
  if not text or text != b"".join(teacher):
    return None
  s_ends, t_ends = _ends(student), _ends(teacher)
  bounds = np.intersect1d(s_ends, t_ends)
  return Spans(
    student=np.searchsorted(bounds, s_ends, side="left"),
    teacher=np.searchsorted(bounds, t_ends, side="left"),
    bounds=bounds,
  )


def _after(prefix: bytes) -> bytes | None:
  """The least byte string above every string that starts with `prefix`
  (None: there is none)."""
  stripped = prefix.rstrip(b"\xff")
  if not stripped:
    return None
  return stripped[:-1] + bytes([stripped[-1] + 1])


def _extensions(ordered: list[bytes], prefix: bytes) -> int:
  """How many strings of a sorted list start with `prefix` (itself too)."""
  end = _after(prefix)
  hi = len(ordered) if end is None else bisect.bisect_left(ordered, end)
  return hi - bisect.bisect_left(ordered, prefix)


def vocab_map(student: TokenBytes, teacher: TokenBytes) -> np.ndarray:
  """int32 [V_student]: the teacher id of the same bytes for each student
  token the two vocabularies can compare, -1 elsewhere.

  A next-token probability is that of the text going on with the token's
  string and not with a longer token of the vocabulary. A string is
  comparable when both vocabularies hold it and the same longer strings
  that start with it: then it stands for the same continuation of the text
  on both sides. A teacher "N" is not comparable with a student "N" if only
  the student has "Now": the teacher's "N" also covers "Now...". Among
  teacher ids of equal bytes the lowest wins.
  """
  s_set = {p for p in student.table if p}
  t_set = {p for p in teacher.table if p}
  shared = s_set & t_set
  lists = [sorted(s_set), sorted(t_set), sorted(shared)]
  comparable = {
    p
    for p in shared
    if len({_extensions(ordered, p) for ordered in lists}) == 1
  }
  by_bytes: dict[bytes, int] = {}
  for i, piece in enumerate(teacher.table):
    if piece in comparable:
      by_bytes.setdefault(piece, i)
  return np.array([by_bytes.get(p, -1) for p in student.table], np.int32)


def first_byte_groups(tokens: TokenBytes, comparable_V) -> np.ndarray:
  """int32 [V]: -1 for comparable ids, else the first byte of the id's
  string (256 for ids without bytes: `losses.GROUPS` in all).

  Both models' next-token distributions give the probability that the text
  goes on with a comparable token, or else with a given byte: one partition
  of the continuations on both sides, so the divergence between the two
  coarsened distributions is exact.
  """
  groups = np.array([p[0] if p else 256 for p in tokens.table], np.int32)
  return np.where(np.asarray(comparable_V, bool), -1, groups).astype(np.int32)
