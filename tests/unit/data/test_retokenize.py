"""Completions of a Qwen3 student re-tokenised for a DeepSeek-V3 teacher."""

import numpy as np
import pytest
import transformers
from cross_helpers import TEXTS
from tokenizers import Tokenizer, decoders, models

from rock_jax.data import alignment, retokenize, tokenization

N, M = 48, 64


@pytest.fixture(scope="module")
def pair(real_tokenizers):
  q = tokenization.load_tokenizer(real_tokenizers["qwen3"])
  d = tokenization.load_tokenizer(real_tokenizers["deepseek_v3"])
  return q, d


def _batch(tokenizer, rows):
  """Right-padded completions (pad id = eos, as with Llama-style pads)."""
  ids = np.full((len(rows), N), tokenizer.eos_token_id, np.int32)
  mask = np.zeros((len(rows), N), bool)
  for b, row in enumerate(rows):
    ids[b, : len(row)], mask[b, : len(row)] = row, True
  return ids, mask


def test_completions_take_the_teachers_tokens_and_spans(pair):
  q, d = pair
  texts = [TEXTS[k] for k in sorted(TEXTS)]
  rows = [q.encode(t, add_special_tokens=False) for t in texts]
  rows = [r + [q.eos_token_id] if b % 2 else r for b, r in enumerate(rows)]
  retok = retokenize.Retokenizer(q, d, M)
  out = retok(*_batch(q, rows))
  assert out.counts == dict(
    template_tokens=0, unaligned=0, too_long=0, tokens=sum(map(len, rows))
  )
  q_bytes, d_bytes = alignment.TokenBytes(q), alignment.TokenBytes(d)
  for b, (text, row) in enumerate(zip(texts, rows, strict=True)):
    expected = d.encode(text, add_special_tokens=False)
    ended = bool(b % 2)
    body = row[:-1] if ended else row
    teacher = out.teacher_ids_BxM[b][out.teacher_mask_BxM[b]].tolist()
    assert teacher == expected + ([d.eos_token_id] if ended else [])
    spans = alignment.align(q_bytes.pieces(body), d_bytes.pieces(expected))
    n, m = len(body), len(expected)
    np.testing.assert_array_equal(out.span_BxN[b, :n], spans.student)
    np.testing.assert_array_equal(out.teacher_span_BxM[b, :m], spans.teacher)
    assert out.loss_mask_BxN[b].sum() == len(row)
    for t in range(n):
      j, k = out.teacher_index_BxN[b, t], out.span_BxN[b, t]
      # The scoring teacher position opens the position's span: the
      # teacher's prediction after the text both sides share.
      assert out.teacher_span_BxM[b, j] == out.span_BxN[b, t]
      assert j == 0 or out.teacher_span_BxM[b, j - 1] != out.span_BxN[b, t]
      assert out.start_BxN[b, t] == (t == 0 or spans.student[t - 1] != k)
      # Exact: one token on both sides, the same comparable string.
      comparable = retok.vocab_map_V[body[t]] >= 0
      assert out.exact_BxN[b, t] == (
        spans.one_to_one()[spans.student[t]]
        and q.decode([body[t]]) == d.decode([expected[j]])
        and comparable
      )
    if ended:  # the ends of turn pair up; their strings differ: no exact
      assert out.span_BxN[b, n] == spans.count
      assert out.teacher_index_BxN[b, n] == m and not out.exact_BxN[b, n]
  assert 0 < out.exact_BxN.sum() < out.loss_mask_BxN.sum()


def test_one_tokenizer_on_both_sides_gives_its_own_ids_exactly(pair):
  q, _ = pair
  rows = [
    q.encode(t, add_special_tokens=False) + [q.eos_token_id]
    for t in TEXTS.values()
  ]
  ids, mask = _batch(q, rows)
  out = retokenize.Retokenizer(q, q, N)(ids, mask)
  np.testing.assert_array_equal(out.teacher_ids_BxM[mask], ids[mask])
  np.testing.assert_array_equal(out.exact_BxN, mask)
  np.testing.assert_array_equal(
    out.teacher_index_BxN[mask], np.nonzero(mask)[1]
  )


def test_bad_completions_are_counted_and_skipped(pair):
  q, d = pair
  good = q.encode("fine 123", add_special_tokens=False)
  template = [*good[:2], q.convert_tokens_to_ids("<|im_start|>"), *good[2:]]
  table = alignment.TokenBytes(q).table
  half = next(i for i, b in enumerate(table) if b and not _utf8(b))
  cut = [*good, half, *good]  # a character cut off: bytes, no text
  long = q.encode(" x" * N, add_special_tokens=False)[:N]
  rows = [good, template, cut, long, []]
  out = retokenize.Retokenizer(q, d, N - 8)(*_batch(q, rows))
  assert out.counts == dict(
    template_tokens=1, unaligned=0, too_long=1, tokens=sum(map(len, rows))
  )
  kept = out.loss_mask_BxN.sum(axis=1)
  np.testing.assert_array_equal(kept, [len(good), len(good), len(cut), 0, 0])
  assert out.span_BxN[1, 2] == -1 and not out.teacher_mask_BxM[3:].any()
  # The cut bytes reach the teacher as its single-byte tokens.
  teacher = out.teacher_ids_BxM[2][out.teacher_mask_BxM[2]]
  d_bytes = alignment.TokenBytes(d)
  assert b"".join(d_bytes.pieces(teacher)) == b"".join(
    alignment.TokenBytes(q).pieces(cut)
  )
  # Qwen3's tokenizer normalises to NFC: a decomposed é from a DeepSeek
  # student does not come back.
  decomposed = d.encode("cafe\u0301", add_special_tokens=False)
  out = retokenize.Retokenizer(d, q, N)(*_batch(d, [decomposed, [1]]))
  assert out.counts["unaligned"] == 1 and not out.loss_mask_BxN[0].any()
  # A completion of just the end of turn: one span, different strings.
  assert out.loss_mask_BxN[1, 0] and not out.exact_BxN[1, 0]
  assert out.teacher_ids_BxM[1, 0] == q.eos_token_id


def _utf8(raw: bytes) -> bool:
  try:
    raw.decode("utf-8")
  except UnicodeDecodeError:
    return False
  return True


def _byte_level(vocab):
  tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
  tok.decoder = decoders.ByteLevel()
  return transformers.PreTrainedTokenizerFast(
    tokenizer_object=tok, eos_token=next(iter(vocab))
  )


def test_vocabularies_without_a_shared_token_are_refused():
  # Only the end-of-turn token's string is common: no text token is.
  student = _byte_level({"<|im_end|>": 0, "ab": 1, "cd": 2})
  teacher = _byte_level({"<|im_end|>": 0, "xy": 1})
  with pytest.raises(
    ValueError,
    match=r"teacher.tokenizer='t' and .*share no token string "
    r"\(0 of 2 student text",
  ):
    retokenize.Retokenizer(
      student, teacher, M, "student.tokenizer='s'", "teacher.tokenizer='t'"
    )
