"""Spans of two real tokenisations against the tokenizers' own offsets."""

import numpy as np
import pytest
import transformers
from cross_helpers import TEXTS
from tokenizers import Tokenizer, models

from rock_jax.data import alignment, tokenization


@pytest.fixture(scope="module")
def pair(real_tokenizers):
  """(Qwen3, DeepSeek-V3) tokenizers and their byte tables."""
  q = tokenization.load_tokenizer(real_tokenizers["qwen3"])
  d = tokenization.load_tokenizer(real_tokenizers["deepseek_v3"])
  return q, d, alignment.TokenBytes(q), alignment.TokenBytes(d)


def _is_char_boundary(raw: bytes, offset: int) -> bool:
  # A UTF-8 continuation byte is 10xxxxxx.
  return offset == len(raw) or (raw[offset] & 0xC0) != 0x80


def _encode(tokenizer, text):
  e = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
  return e["input_ids"], [end for _, end in e["offset_mapping"]]


@pytest.mark.parametrize("name", sorted(TEXTS))
def test_spans_are_the_shared_character_boundaries(pair, name):
  q, d, q_bytes, d_bytes = pair
  text = TEXTS[name]
  q_ids, q_ends = _encode(q, text)
  d_ids, d_ends = _encode(d, text)
  assert q_ids != d_ids  # two different tokenisations
  spans = alignment.align(q_bytes.pieces(q_ids), d_bytes.pieces(d_ids))
  # The reference: character offsets where both tokenisations end a token,
  # from each tokenizer's own offset mapping. Spans may also end inside a
  # character where both sides cut it at one byte (byte-level pieces).
  shared = sorted(set(q_ends) & set(d_ends))
  raw = text.encode("utf-8")
  whole = [b for b in spans.bounds if _is_char_boundary(raw, b)]
  assert [len(raw[:b].decode("utf-8")) for b in whole] == shared
  for ends, span, ids, table in (
    (q_ends, spans.student, q_ids, q_bytes),
    (d_ends, spans.teacher, d_ids, d_bytes),
  ):
    byte_ends = np.cumsum([len(p) for p in table.pieces(ids)])
    assert set(spans.bounds) <= set(byte_ends)
    assert np.all(np.diff(span) >= 0) and np.all(
      byte_ends <= spans.bounds[span]
    )
    # Merging the spans that end inside a character gives the reference's
    # grouping of the tokens.
    np.testing.assert_array_equal(
      np.searchsorted(whole, spans.bounds[span], side="left"),
      np.searchsorted(shared, ends, side="left"),
    )
  single = spans.one_to_one()
  for k in np.flatnonzero(single):
    (i,) = np.flatnonzero(spans.student == k)
    (j,) = np.flatnonzero(spans.teacher == k)
    assert q.decode([q_ids[i]]) == d.decode([d_ids[j]])


@pytest.mark.parametrize("name", sorted(TEXTS))
def test_token_bytes_spell_the_text(pair, name):
  q, d, q_bytes, d_bytes = pair
  text = TEXTS[name]
  for tokenizer, table in ((q, q_bytes), (d, d_bytes)):
    ids = tokenizer.encode(text, add_special_tokens=False)
    assert b"".join(table.pieces(ids)) == text.encode("utf-8")
    assert table.pieces([tokenizer.eos_token_id]) == [
      tokenizer.eos_token.encode()
    ]


def test_vocab_map_pairs_comparable_tokens_of_equal_strings(pair):
  q, d, q_bytes, d_bytes = pair
  vocab_map = alignment.vocab_map(q_bytes, d_bytes)
  mapped = np.flatnonzero(vocab_map >= 0)
  assert 30_000 < len(mapped) < len(vocab_map)
  d_strings = {p for p in d_bytes.table if p}
  q_strings = {p for p in q_bytes.table if p}
  for i in mapped[:: len(mapped) // 300]:
    piece = q_bytes.table[i]
    assert piece == d_bytes.table[vocab_map[i]]
    # The longer tokens that start with it are the same on both sides.
    longer = {p for p in q_strings | d_strings if p.startswith(piece)}
    assert longer <= q_strings & d_strings
  # DeepSeek-V3 groups digits ("12"), Qwen3 has single digits only: a "1"
  # means "1 then no digit" to one and "the digit 1" to the other.
  one = q.convert_tokens_to_ids("1")
  assert b"12" in d_strings and b"12" not in q_strings and vocab_map[one] < 0
  same = alignment.vocab_map(q_bytes, q_bytes)
  assert all(
    q_bytes.table[same[i]] == q_bytes.table[i]
    for i in range(len(same))
    if q_bytes.table[i]
  )
  assert np.mean(same == np.arange(len(same))) > 0.999


def test_texts_that_differ_do_not_align(pair):
  q, d, q_bytes, d_bytes = pair
  # Qwen3 normalises to NFC; the decomposed é does not come back.
  decomposed = "cafe\u0301"
  q_ids = q.encode(decomposed, add_special_tokens=False)
  d_ids = d.encode(decomposed, add_special_tokens=False)
  assert alignment.align(q_bytes.pieces(q_ids), d_bytes.pieces(d_ids)) is None
  assert alignment.align([], []) is None


def test_a_tokenizer_without_byte_level_decoding_is_refused():
  word = Tokenizer(models.WordLevel({"a": 0, "[UNK]": 1}, unk_token="[UNK]"))
  tokenizer = transformers.PreTrainedTokenizerFast(tokenizer_object=word)
  with pytest.raises(ValueError, match="teacher.tokenizer='w'.*ByteLevel"):
    alignment.TokenBytes(tokenizer, "teacher.tokenizer='w'")
