"""TFDS builders of local JSONL files: GSM8K, MATH-500 and any prompts.

A source is a `.jsonl` file or a folder of them; each file is one split named
by its stem (`train.jsonl` -> `train`). The config name carries a fingerprint
of the files' bytes and of the options (not of their location), so a changed
file or option is prepared into a new folder instead of reading stale data.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
from collections.abc import Callable, Mapping

import tensorflow_datasets as tfds

from rock_jax.data import jsonl_formats, schema, verifiers


@dataclasses.dataclass(eq=False)
class JsonlConfig(tfds.core.BuilderConfig):
  files: Mapping[str, str] = dataclasses.field(default_factory=dict)
  options: Mapping[str, str] = dataclasses.field(default_factory=dict)
  fingerprint: str = ""

  def metadata(self) -> dict:
    return {
      "files": dict(self.files),
      "options": dict(self.options),
      "fingerprint": self.fingerprint,
    }


def _jsonl_files(source: str) -> dict[str, str]:
  """Split name -> path: the file itself, or every `*.jsonl` in a folder."""
  if os.path.isdir(source):
    names = sorted(n for n in os.listdir(source) if n.endswith(".jsonl"))
    paths = [os.path.join(source, n) for n in names]
  elif source.endswith(".jsonl") and os.path.isfile(source):
    paths = [source]
  else:
    raise ValueError(
      f"source={source!r}: expected a .jsonl file or a folder of them"
    )
  if not paths:
    raise ValueError(f"source={source!r}: folder holds no .jsonl file")
  files = {
    os.path.basename(p)[: -len(".jsonl")]: os.path.abspath(p) for p in paths
  }
  for split, path in files.items():
    with open(path, encoding="utf-8") as f:
      if not any(line.strip() for line in f):
        # TFDS would fail later with a bare "No examples were yielded".
        raise ValueError(f"{path}: the {split!r} split has no records")
    if not re.fullmatch(r"\w+", split):
      raise ValueError(
        f"{files[split]}: split name {split!r} (the file stem) must be "
        "letters, digits and underscores"
      )
  return files


class _JsonlBuilder(schema.ExampleBuilder, skip_registration=True):
  """One split per local JSONL file, converted by `CONVERT`."""

  CONVERT: Callable[..., schema.Example]
  OPTIONS: Mapping[str, str]  # Option name -> default.

  @classmethod
  def make_config(cls, source: str, **options: str) -> JsonlConfig:
    """Config for `source` (a .jsonl file or a folder of them)."""
    if unknown := set(options) - set(cls.OPTIONS):
      raise ValueError(
        f"unknown {cls.name} options {sorted(unknown)}; available: "
        f"{sorted(cls.OPTIONS)}"
      )
    options = {**cls.OPTIONS, **options}
    cls._check_options(options)
    files = _jsonl_files(os.fspath(source))
    digest = hashlib.sha256(json.dumps(options, sort_keys=True).encode())
    for split, path in sorted(files.items()):
      digest.update(split.encode())
      with open(path, "rb") as f:
        digest.update(hashlib.sha256(f.read()).digest())
    stem = os.path.basename(os.path.normpath(source)).removesuffix(".jsonl")
    fingerprint = digest.hexdigest()[:12]
    slug = re.sub(r"[^a-z0-9]+", "_", stem.lower()).strip("_") or "data"
    return JsonlConfig(
      name=f"{slug}_{fingerprint}",
      files=files,
      options=options,
      fingerprint=fingerprint,
    )

  @classmethod
  def _check_options(cls, options: Mapping[str, str]) -> None:
    del options  # Only the prompts builder has options to cross-check.

  def _split_generators(self, dl_manager):
    del dl_manager  # Local files only.
    return {
      split: self._generate_examples(self._examples(path))
      for split, path in self.builder_config.files.items()
    }

  def _examples(self, path: str):
    convert, options = type(self).CONVERT, self.builder_config.options
    for where, record in jsonl_formats.read_jsonl(path):
      yield convert(record, where, **options)


class Gsm8kJsonl(_JsonlBuilder, skip_registration=True):
  """GSM8K-format JSONL (`question`, `answer` ending in `#### N`)."""

  name = "rock_gsm8k"
  CONVERT = staticmethod(jsonl_formats.gsm8k_example)
  OPTIONS = {"instruction": ""}


class MathJsonl(_JsonlBuilder, skip_registration=True):
  """MATH / MATH-500-format JSONL (`problem`, `answer` or boxed `solution`)."""

  name = "rock_math"
  CONVERT = staticmethod(jsonl_formats.math_example)
  OPTIONS = {"instruction": ""}


class PromptsJsonl(_JsonlBuilder, skip_registration=True):
  """Any JSONL of prompts: a string or chat-message field, optional extras."""

  name = "rock_prompts"
  CONVERT = staticmethod(jsonl_formats.prompt_example)
  OPTIONS = {
    "field": "prompt",
    "task": "",
    "reference_field": "",
    "privileged_field": "",
    "solution_field": "",
  }

  @classmethod
  def _check_options(cls, options: Mapping[str, str]) -> None:
    task, reference = options["task"], options["reference_field"]
    if task and task not in verifiers.VERIFIERS:
      raise ValueError(
        f"task={task!r}: expected '' or one of {sorted(verifiers.VERIFIERS)}"
      )
    if bool(task) != bool(reference):
      raise ValueError(
        f"task={task!r}, reference_field={reference!r}: set both (answers "
        "are graded) or neither"
      )
