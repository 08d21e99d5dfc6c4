"""Tokenizers: Hugging Face loading with chat templates, the embedded task's
tokenizer, the teacher/student vocabulary check, token texts for reports.

Every tokenizer, the embedded one included, is a Hugging Face tokenizer folder
(`tokenizer.json` + chat template) loaded with `AutoTokenizer`, so the tiny
CPU run and a real model share one code path.
"""

from __future__ import annotations

import json
import os
import re

import transformers
from tokenizers import (
  Regex,
  Tokenizer,
  decoders,
  models,
  pre_tokenizers,
  trainers,
)

from rock_jax import storage
from rock_jax.data import embedded_task

PAD, BOS, EOS = "<|endoftext|>", "<|im_start|>", "<|im_end|>"

# ChatML, as used by Qwen models: one `<|im_start|>role\n...<|im_end|>\n` block
# per message, and an open assistant block for generation.
CHATML_TEMPLATE = (
  "{% for message in messages %}"
  "{{ '<|im_start|>' + message['role'] + '\n' + message['content']"
  " + '<|im_end|>' + '\n' }}"
  "{% endfor %}"
  "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

# Qwen2's pre-tokenizer pattern: every digit is its own piece, newline runs are
# pieces of their own, and a word keeps at most one leading non-letter.
QWEN2_PATTERN = (
  r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
  r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)

# An upper bound: training stops early once every word of the task corpus is
# a single token (about 340 ids), which keeps the embedding table tiny.
EMBEDDED_MAX_VOCAB = 512
# Room for the long-tailed variant's words on top: each merge joins two
# pieces of at least one word, and an item (" " + 4 letters) and its unit
# (" " + 5 letters) take at most 4 + 5 merges to become one token each.
MERGES_PER_ITEM = 9


def build_embedded_tokenizer(
  out_dir: str | os.PathLike | None = None,
  num_items: int = 0,
  vocab_size: int = 0,
) -> transformers.PreTrainedTokenizerBase:
  """Trains the embedded task's byte-level BPE tokenizer.

  Deterministic: the corpus is `embedded_task.tokenizer_corpus()`. The byte
  alphabet makes every string encodable and every id sequence decodable.

  Args:
    out_dir: if given, the tokenizer is saved there in Hugging Face format.
    num_items: the task's `TaskConfig.num_items`. 0 gives the plain task's
      tokenizer; more adds the items' and units' words to the corpus and
      room for them to the vocabulary, so each is one token. The task's
      other words stay single tokens, under other ids than in the plain
      tokenizer.

  Returns:
    The tokenizer with the ChatML template; pad `<|endoftext|>`, end of turn
    (eos) `<|im_end|>`.
  """
  tok = Tokenizer(models.BPE())
  tok.pre_tokenizer = pre_tokenizers.Sequence(
    [
      pre_tokenizers.Split(Regex(QWEN2_PATTERN), behavior="isolated"),
      pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ]
  )
  tok.decoder = decoders.ByteLevel()
  trainer = trainers.BpeTrainer(
    vocab_size=vocab_size or EMBEDDED_MAX_VOCAB + MERGES_PER_ITEM * num_items,
    special_tokens=[PAD, BOS, EOS],
    initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    show_progress=False,
  )
  tok.train_from_iterator(
    embedded_task.tokenizer_corpus(num_items=num_items), trainer
  )
  tokenizer = transformers.PreTrainedTokenizerFast(
    tokenizer_object=tok,
    pad_token=PAD,
    eos_token=EOS,
    chat_template=CHATML_TEMPLATE,
  )
  if out_dir is not None:
    tokenizer.save_pretrained(os.fspath(out_dir))
  return tokenizer


# Files that hold a vocabulary; without one, `AutoTokenizer` may still build
# an empty tokenizer from `config.json` alone.
VOCAB_FILES = (
  "tokenizer.json",
  "tokenizer.model",
  "vocab.json",
  "vocab.txt",
  "spiece.model",
  "tekken.json",
)

# The conversation a chat template must render when loaded.
PROBE_MESSAGES = [{"role": "user", "content": "1+1?"}]


def load_tokenizer(
  path: str | os.PathLike, chat_template: str | None = None
) -> transformers.PreTrainedTokenizerBase:
  """Loads a Hugging Face tokenizer folder (local or `gs://`), never the hub.

  A URL is read through its checked local mirror (`storage.mirror`, shared
  with a model loaded from the same folder); messages name the URL. The chat
  template is rendered once on `PROBE_MESSAGES`, so a broken one fails here,
  naming where it came from, rather than in the first batch.

  Args:
    path: folder with `tokenizer.json` (a model folder works).
    chat_template: replaces the folder's template: a path or `gs://` URL of a
      `.jinja` file, or the Jinja source itself. Teacher and student take
      their own, since a wrong teacher template silently biases their
      log-probabilities.

  Returns:
    The tokenizer, with a chat template.
  """
  path = os.fspath(path)
  local = _local_folder(path)
  try:
    tokenizer = transformers.AutoTokenizer.from_pretrained(
      local, local_files_only=True
    )
  except ImportError:
    raise
  except Exception as e:  # The tokenizers library raises bare Exceptions.
    raise ValueError(
      f"tokenizer files in {path!r} do not load ({type(e).__name__}: {e}); "
      "they are incomplete or corrupt: re-download tokenizer.json and "
      "tokenizer_config.json from the model's release"
    ) from e
  source = _template_source(path, local)
  if chat_template is not None:
    source, tokenizer.chat_template = _read_template(os.fspath(chat_template))
  if not tokenizer.chat_template:
    raise ValueError(
      f"tokenizer at {path!r} has no chat template; pass "
      "chat_template= (a .jinja file or Jinja source)"
    )
  if tokenizer.eos_token_id is None:
    raise ValueError(
      f"tokenizer at {path!r} has no eos token; set eos_token in its "
      "tokenizer_config.json to the end-of-turn token (e.g. '<|im_end|>')"
    )
  _probe_template(tokenizer, source)
  return tokenizer


def _is_template_url(text: str) -> bool:
  # Jinja source may quote a URL; a template URL is one word and nothing else.
  return re.fullmatch(r"[a-z][a-z0-9+.-]*://\S+", text) is not None


def _read_template(template: str) -> tuple[str, str]:
  """`(where it came from, Jinja source)` of a `chat_template=` value: a
  local or `gs://` file, or the source itself."""
  if _is_template_url(template):
    if not storage.isfile(template):
      raise ValueError(
        f"chat_template={template!r}: no such object; pass the URL of a "
        ".jinja file that exists, or the template's source"
      )
    return f"chat_template={template!r}", storage.read_text(template)
  if os.path.isfile(template):
    with open(template, encoding="utf-8") as f:
      return f"chat_template={template!r}", f.read()
  if "{%" not in template and "{{" not in template:
    raise ValueError(
      f"chat_template={template!r} is neither an existing file nor "
      "Jinja source; pass the path of a .jinja file that exists, or the "
      "template's source"
    )
  return f"chat_template={_short(template)}", template


def _local_folder(path: str) -> str:
  """`path` checked to hold tokenizer files; a URL's local mirror."""
  if storage.is_url(path) and not storage.isdir(path):
    raise FileNotFoundError(
      f"tokenizer folder {path!r} does not exist; {_FOLDER_HINT}"
    )
  local = storage.mirror(path)
  _check_folder(path, local)
  return local


_FOLDER_HINT = (
  "point the role's tokenizer= (teacher.tokenizer= / student.tokenizer=) "
  "at a folder that has them, e.g. the original model download, or copy "
  "them into the model folder"
)


def _check_folder(path: str, local: str) -> None:
  """Raises, naming `path`, unless its copy `local` has tokenizer files."""
  if not os.path.isdir(local):
    raise FileNotFoundError(
      f"tokenizer folder {path!r} does not exist; {_FOLDER_HINT}"
    )
  names = os.listdir(local)
  if not any(n in VOCAB_FILES or n.endswith(".tiktoken") for n in names):
    raise FileNotFoundError(
      f"no tokenizer files (tokenizer.json, tokenizer_config.json, "
      f"tokenizer.model, vocab.json ...) found in {path!r}; {_FOLDER_HINT}"
    )
  for name in ("tokenizer.json", "tokenizer_config.json"):
    file = storage.join(path, name)
    if os.path.isfile(os.path.join(local, name)):
      try:
        with open(os.path.join(local, name), encoding="utf-8") as f:
          json.load(f)
      except json.JSONDecodeError as e:
        raise ValueError(
          f"{file} is not valid JSON: {e.msg} (line {e.lineno}, column "
          f"{e.colno}); it is truncated or corrupt: re-download it from the "
          "model's release"
        ) from e
      except UnicodeDecodeError as e:
        raise ValueError(
          f"{file} is not UTF-8 text (byte {e.start}); it is corrupt: "
          "re-download it from the model's release"
        ) from e


def _short(text: str, limit: int = 60) -> str:
  """`text` quoted, cut to `limit` characters (Jinja source can be long)."""
  return repr(text if len(text) <= limit else text[:limit] + "...")


def _template_source(path: str, local: str) -> str:
  """Where a folder's chat template lives (named under `path`, read from
  its copy `local`), for messages."""
  if os.path.isfile(os.path.join(local, "chat_template.jinja")):
    return storage.join(path, "chat_template.jinja")
  return storage.join(path, "tokenizer_config.json") + " (chat_template)"


def _probe_template(tokenizer, source: str) -> None:
  """Raises ValueError naming `source` if the template cannot render
  `PROBE_MESSAGES` or drops their content."""
  try:
    text = tokenizer.apply_chat_template(
      PROBE_MESSAGES, tokenize=False, add_generation_prompt=True
    )
  except Exception as e:  # Jinja raises many kinds; all mean a bad template.
    line = getattr(e, "lineno", None)
    where = f" (template line {line})" if line else ""
    raise ValueError(
      f"chat template from {source} fails on a plain user message "
      f"{PROBE_MESSAGES}{where}: {type(e).__name__}: {e}; fix the template "
      "or pass chat_template= (a .jinja file or Jinja source) that renders it"
    ) from e
  if PROBE_MESSAGES[0]["content"] not in text:
    raise ValueError(
      f"chat template from {source} drops the message content: "
      f"{PROBE_MESSAGES} renders as {text!r}; the template must output "
      "message['content'] (fix it or pass chat_template=)"
    )


def check_same_vocab(
  teacher: transformers.PreTrainedTokenizerBase,
  student: transformers.PreTrainedTokenizerBase,
  max_listed: int = 5,
) -> None:
  """Raises ValueError unless teacher and student map ids to tokens alike.

  OPD compares the two models' distributions id by id, so one shifted id
  silently compares unrelated tokens. The end-of-turn id must agree as well:
  the student stops on it and the teacher scores it.

  Args:
    teacher: the teacher's tokenizer.
    student: the student's tokenizer.
    max_listed: how many differing ids the message names.
  """
  t = {i: tok for tok, i in teacher.get_vocab().items()}
  s = {i: tok for tok, i in student.get_vocab().items()}
  diff = [i for i in sorted(t.keys() | s.keys()) if t.get(i) != s.get(i)]
  if diff:
    listed = "; ".join(
      f"id {i}: teacher {t.get(i)!r} vs student {s.get(i)!r}"
      for i in diff[:max_listed]
    )
    raise ValueError(
      f"teacher and student vocabularies differ at {len(diff)} ids "
      f"(sizes {len(t)} vs {len(s)}); first: {listed}"
    )
  if teacher.eos_token_id != student.eos_token_id:
    raise ValueError(
      f"eos ids differ: teacher {teacher.eos_token_id} "
      f"({teacher.eos_token!r}) vs student {student.eos_token_id} "
      f"({student.eos_token!r})"
    )


def token_text(tokenizer, token_id: int) -> str:
  """One token as text; its raw vocabulary entry if it is a partial UTF-8
  sequence (one byte of a multi-byte character decodes to U+FFFD)."""
  text = tokenizer.decode([int(token_id)])
  if "\ufffd" in text:
    return tokenizer.convert_ids_to_tokens(int(token_id))
  return text
