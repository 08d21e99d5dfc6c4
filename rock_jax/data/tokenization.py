"""Tokenizers: Hugging Face loading with chat templates, the embedded task's
tokenizer, the teacher/student vocabulary check, token texts for reports.

Every tokenizer, the embedded one included, is a Hugging Face tokenizer folder
(`tokenizer.json` + chat template) loaded with `AutoTokenizer`, so the tiny
CPU run and a real model share one code path.
"""

from __future__ import annotations

import json
import os

import transformers
from tokenizers import (
  Regex,
  Tokenizer,
  decoders,
  models,
  pre_tokenizers,
  trainers,
)

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


def build_embedded_tokenizer(
  out_dir: str | os.PathLike | None = None,
) -> transformers.PreTrainedTokenizerBase:
  """Trains the embedded task's byte-level BPE tokenizer.

  Deterministic: the corpus is `embedded_task.tokenizer_corpus()`. The byte
  alphabet makes every string encodable and every id sequence decodable.

  Args:
    out_dir: if given, the tokenizer is saved there in Hugging Face format.

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
    vocab_size=EMBEDDED_MAX_VOCAB,
    special_tokens=[PAD, BOS, EOS],
    initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    show_progress=False,
  )
  tok.train_from_iterator(embedded_task.tokenizer_corpus(), trainer)
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
  """Loads a local Hugging Face tokenizer folder, never the hub.

  The chat template is rendered once on `PROBE_MESSAGES`, so a broken one
  fails here, naming where it came from, rather than in the first batch.

  Args:
    path: folder with `tokenizer.json` (a model folder works).
    chat_template: replaces the folder's template: a path to a `.jinja` file
      or the Jinja source itself. Teacher and student take their own, since a
      wrong teacher template silently biases its log-probabilities.

  Returns:
    The tokenizer, with a chat template.
  """
  path = os.fspath(path)
  _check_folder(path)
  try:
    tokenizer = transformers.AutoTokenizer.from_pretrained(
      path, local_files_only=True
    )
  except ImportError:
    raise
  except Exception as e:  # The tokenizers library raises bare Exceptions.
    raise ValueError(
      f"tokenizer files in {path!r} do not load ({type(e).__name__}: {e}); "
      "they are incomplete or corrupt: re-download tokenizer.json and "
      "tokenizer_config.json from the model's release"
    ) from e
  source = _template_source(path)
  if chat_template is not None:
    chat_template = os.fspath(chat_template)
    source = f"chat_template={_short(chat_template)}"
    if os.path.isfile(chat_template):
      source = f"chat_template={chat_template!r}"
      with open(chat_template, encoding="utf-8") as f:
        chat_template = f.read()
    elif "{%" not in chat_template and "{{" not in chat_template:
      raise ValueError(
        f"chat_template={chat_template!r} is neither an existing file nor "
        "Jinja source; pass the path of a .jinja file that exists, or the "
        "template's source"
      )
    tokenizer.chat_template = chat_template
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


def _check_folder(path: str) -> None:
  """Raises unless `path` is a folder with tokenizer files."""
  hint = (
    "point the role's tokenizer= (teacher.tokenizer= / student.tokenizer=) "
    "at a folder that has them, e.g. the original model download, or copy "
    "them into the model folder"
  )
  if not os.path.isdir(path):
    raise FileNotFoundError(f"tokenizer folder {path!r} does not exist; {hint}")
  names = os.listdir(path)
  if not any(n in VOCAB_FILES or n.endswith(".tiktoken") for n in names):
    raise FileNotFoundError(
      f"no tokenizer files (tokenizer.json, tokenizer_config.json, "
      f"tokenizer.model, vocab.json ...) found in {path!r}; {hint}"
    )
  for name in ("tokenizer.json", "tokenizer_config.json"):
    file = os.path.join(path, name)
    if os.path.isfile(file):
      try:
        with open(file, encoding="utf-8") as f:
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


def _template_source(path: str) -> str:
  """Where a folder's chat template lives, for messages."""
  jinja = os.path.join(path, "chat_template.jinja")
  if os.path.isfile(jinja):
    return jinja
  return os.path.join(path, "tokenizer_config.json") + " (chat_template)"


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
