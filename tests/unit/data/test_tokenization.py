"""Tokenizers: the embedded one, loading with chat templates, vocab check."""

import json
import os

import pytest

from rock_jax import storage
from rock_jax.data import embedded_task, tokenization


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
  path = tmp_path_factory.mktemp("tok")
  tokenization.build_embedded_tokenizer(path)
  return str(path)


def test_embedded_tokenizer_is_small_and_deterministic(saved):
  tok = tokenization.load_tokenizer(saved)
  assert 300 <= len(tok) <= 400
  assert tok.get_vocab() == tokenization.build_embedded_tokenizer().get_vocab()
  assert tok.convert_ids_to_tokens([0, 1, 2]) == [
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
  ]
  assert (tok.pad_token_id, tok.eos_token_id) == (0, 2)
  assert sorted(os.listdir(saved)) == [
    "chat_template.jinja",
    "tokenizer.json",
    "tokenizer_config.json",
  ]


def test_digits_and_task_words_are_single_tokens(saved):
  tok = tokenization.load_tokenizer(saved)
  ids = tok.encode("12345+67890", add_special_tokens=False)
  assert tok.convert_ids_to_tokens(ids) == list("12345+67890")
  for word in ("What", " is", " the", " answer", "Wait", "Hence", "\n\n"):
    assert len(tok.encode(word, add_special_tokens=False)) == 1, word


@pytest.mark.parametrize(
  "text",
  ["What is 47+85?", "naïve café ∑ 🙂\n\n\tx", "", "<|im_end|> inside"],
)
def test_round_trip(saved, text):
  tok = tokenization.load_tokenizer(saved)
  ids = tok.encode(text, add_special_tokens=False)
  assert tok.decode(ids) == text


def test_chat_template_renders_chatml(saved):
  tok = tokenization.load_tokenizer(saved)
  messages = [
    {"role": "system", "content": "style: formal"},
    {"role": "user", "content": "What is 1+2?"},
  ]
  text = tok.apply_chat_template(
    messages, tokenize=False, add_generation_prompt=True
  )
  assert text == (
    "<|im_start|>system\nstyle: formal<|im_end|>\n"
    "<|im_start|>user\nWhat is 1+2?<|im_end|>\n<|im_start|>assistant\n"
  )
  ids = tok.apply_chat_template(messages, add_generation_prompt=True)
  assert ids["input_ids"] == tok.encode(text, add_special_tokens=False)


def test_template_override_from_file_and_source(saved, tmp_path):
  source = "{% for m in messages %}[{{ m['content'] }}]{% endfor %}"
  path = tmp_path / "t.jinja"
  path.write_text(source)
  msgs = [{"role": "user", "content": "hi"}]
  for template in (str(path), source):
    tok = tokenization.load_tokenizer(saved, chat_template=template)
    assert tok.apply_chat_template(msgs, tokenize=False) == "[hi]"
  with pytest.raises(ValueError, match="neither an existing file nor Jinja"):
    tokenization.load_tokenizer(saved, chat_template="missing.jinja")


def test_missing_template_is_an_error(saved, tmp_path):
  for name in ("tokenizer.json", "tokenizer_config.json"):
    (tmp_path / name).write_bytes(open(os.path.join(saved, name), "rb").read())
  config = json.loads((tmp_path / "tokenizer_config.json").read_text())
  config.pop("chat_template", None)
  (tmp_path / "tokenizer_config.json").write_text(json.dumps(config))
  with pytest.raises(ValueError, match="has no chat template; pass"):
    tokenization.load_tokenizer(tmp_path)


def test_vocab_check(saved):
  teacher = tokenization.load_tokenizer(saved)
  tokenization.check_same_vocab(teacher, tokenization.load_tokenizer(saved))
  student = tokenization.load_tokenizer(saved)
  student.add_tokens(["<extra>"])
  new_id = student.convert_tokens_to_ids("<extra>")
  with pytest.raises(
    ValueError,
    match=rf"differ at 1 ids .*id {new_id}: teacher None vs student "
    r"'<extra>'",
  ):
    tokenization.check_same_vocab(teacher, student)
  other_eos = tokenization.load_tokenizer(saved)
  other_eos.eos_token = "<|endoftext|>"
  with pytest.raises(ValueError, match=r"eos ids differ: teacher 2"):
    tokenization.check_same_vocab(teacher, other_eos)


def test_tokenizer_and_template_from_a_bucket(
  saved, gcs, tmp_path, monkeypatch
):
  monkeypatch.setenv("ROCK_JAX_CACHE", str(tmp_path / "cache"))
  url = storage.join(gcs, "tok")
  storage.upload(saved, url)
  tok = tokenization.load_tokenizer(url)
  assert tok.get_vocab() == tokenization.load_tokenizer(saved).get_vocab()
  template = storage.join(gcs, "t.jinja")
  storage.write_text(
    template, "{% for m in messages %}<{{ m['content'] }}>{% endfor %}"
  )
  msgs = [{"role": "user", "content": "hi"}]
  tok = tokenization.load_tokenizer(url, chat_template=template)
  assert tok.apply_chat_template(msgs, tokenize=False) == "<hi>"
  # A URL quoted inside Jinja source is source, not a file to read.
  source = "{% for m in messages %}see gs://b/x {{ m['content'] }}{% endfor %}"
  tok = tokenization.load_tokenizer(url, chat_template=source)
  assert tok.apply_chat_template(msgs, tokenize=False) == "see gs://b/x hi"
  absent = storage.join(gcs, "absent")
  with pytest.raises(FileNotFoundError, match=rf"folder '{absent}' does not"):
    tokenization.load_tokenizer(absent)
  with pytest.raises(ValueError, match=rf"chat_template='{absent}': no such"):
    tokenization.load_tokenizer(url, chat_template=absent)
  storage.write_text(storage.join(gcs, "broken", "tokenizer.json"), "{")
  with pytest.raises(
    ValueError, match=rf"{gcs}/broken/tokenizer.json is not valid JSON"
  ):
    tokenization.load_tokenizer(storage.join(gcs, "broken"))


def test_long_tail_tokenizer_makes_each_item_and_unit_one_token(saved):
  num_items = embedded_task.get_difficulty("long_tail").num_items
  tok = tokenization.build_embedded_tokenizer(num_items=num_items)
  plain = tokenization.load_tokenizer(saved)
  assert (
    len(plain)
    < len(tok)
    <= (
      tokenization.EMBEDDED_MAX_VOCAB + tokenization.MERGES_PER_ITEM * num_items
    )
  )
  assert (
    tok.get_vocab()
    == tokenization.build_embedded_tokenizer(num_items=num_items).get_vocab()
  )
  # Same specials; the task's words are single tokens here too (their ids
  # differ: the merges are learned in another order).
  assert (tok.pad_token_id, tok.eos_token_id) == (0, 2)
  for word in ("What", " is", " answer", "Hence", "\n\n", " unit", ":"):
    assert len(tok.encode(word, add_special_tokens=False)) == 1, word
  words = [
    f" {word(i)}"
    for i in range(num_items)
    for word in (embedded_task.item_word, embedded_task.unit_word)
  ]
  ids = [tok.encode(w, add_special_tokens=False) for w in words]
  assert all(len(i) == 1 for i in ids)
  assert len({i[0] for i in ids}) == len(words)
  # Words after the answer markup or before "?" stay single tokens.
  unit = embedded_task.unit_word(num_items - 1)
  for text in (f"$132${words[-1]}", f"**132**{words[-1]}", f"}}{words[-1]}"):
    assert (
      tok.convert_ids_to_tokens(tok.encode(text, add_special_tokens=False))[-1]
      == f"\u0120{unit}"
    )
  item = embedded_task.item_word(num_items - 1)
  assert tok.convert_ids_to_tokens(
    tok.encode(f"47+85 {item}?", add_special_tokens=False)
  )[-2:] == [f"\u0120{item}", "?"]
  # Fewer items, fewer words: each preset trains its own tokenizer.
  few = tokenization.build_embedded_tokenizer(num_items=3)
  assert len(plain) < len(few) < len(tok)
