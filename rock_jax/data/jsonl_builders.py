"""TFDS builders of JSONL files: GSM8K, MATH-500 and any prompts.

A source is a `.jsonl` file or a folder of them, local or `gs://`; each file
is one split named by its stem (`train.jsonl` -> `train`). The config name
carries a fingerprint of the files' bytes and of the options (not of their
location), so a changed file or option is prepared into a new folder instead
of reading stale data, and a bucket's copy of the files gives the same one.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
from collections.abc import Callable, Iterable, Mapping

import tensorflow_datasets as tfds

from rock_jax import storage
from rock_jax.data import jsonl_formats, schema, verifiers


@dataclasses.dataclass(eq=False)
class JsonlConfig(tfds.core.BuilderConfig):
  files: Mapping[str, str] = dataclasses.field(default_factory=dict)
  options: Mapping[str, str] = dataclasses.field(default_factory=dict)
  fingerprint: str = ""
  # The `source=` option as given, for messages (not stored: moving the
  # files must not change the dataset).
  source: str = ""

  def metadata(self) -> dict:
    return {
      "files": dict(self.files),
      "options": dict(self.options),
      "fingerprint": self.fingerprint,
    }

  def check_splits(self, splits: Iterable[str]) -> None:
    """Raises naming the missing `<split>.jsonl` files, if any."""
    if not (missing := [s for s in splits if s not in self.files]):
      return
    found = sorted(storage.basename(p) for p in self.files.values())
    wanted = " and ".join(f"{s}.jsonl" for s in missing)
    if storage.isdir(self.source):
      fix = f"add {wanted} to that folder"
    else:
      fix = f"point source= at a folder holding {wanted}"
    raise ValueError(
      f"source={self.source!r} has no {wanted} for the split(s) {missing} "
      f"(found: {found}); {fix}, or use the splits {sorted(self.files)} "
      "(data.train_split, data.eval_split)"
    )


def _source_hint(dataset: str) -> str:
  return (
    f"data.name={dataset!r} needs the option source=<a .jsonl file, or a "
    "folder of <split>.jsonl files such as train.jsonl and test.jsonl>: "
    "data.options=source=/path in a config, --set source=/path with inspect"
  )


def _jsonl_files(source: str) -> dict[str, str]:
  """Split name -> path (or URL): the file itself, or every `*.jsonl` in a
  folder."""
  if storage.isdir(source):
    names = storage.listdir(source)
    paths = [
      storage.join(source, n)
      for n in names
      if n.endswith(".jsonl") and storage.isfile(storage.join(source, n))
    ]
    if not paths:
      raise ValueError(
        f"source={source!r}: folder holds no .jsonl file (found: "
        f"{names[:10]}); put one <split>.jsonl per split there, e.g. "
        "train.jsonl and test.jsonl"
      )
  elif not storage.exists(source):
    raise ValueError(
      f"source={source!r}: no such file or folder; expected a .jsonl file or "
      "a folder of them (e.g. with train.jsonl and test.jsonl)"
    )
  elif not source.endswith(".jsonl"):
    raise ValueError(
      f"source={source!r}: expected a .jsonl file or a folder of them; "
      "convert it to JSON Lines (one object per line) named <split>.jsonl"
    )
  else:
    paths = [source]
  files = {
    storage.basename(p)[: -len(".jsonl")]: storage.absolute(p) for p in paths
  }
  for split, path in files.items():
    if not re.fullmatch(r"\w+", split):
      fixed = re.sub(r"\W+", "_", split).strip("_") or "train"
      raise ValueError(
        f"{path}: split name {split!r} (the file stem) must be letters, "
        f"digits and underscores; rename the file, e.g. to {fixed}.jsonl"
      )
  return files


class _JsonlBuilder(schema.ExampleBuilder, skip_registration=True):
  """One split per JSONL file, converted by `CONVERT`."""

  DATASET: str  # Its `builders.BUILDERS` name, for messages.
  CONVERT: Callable[..., schema.Example]
  OPTIONS: Mapping[str, str]  # Option name -> default.

  @classmethod
  def make_config(
    cls, source: str | os.PathLike | None = None, **options: str
  ) -> JsonlConfig:
    """Config for `source` (a .jsonl file or a folder of them).

    Every record is converted once here, so a bad line or an empty file
    fails before anything is written.
    """
    schema.check_option_names(
      options, {"source", *cls.OPTIONS}, cls.name, cls.DATASET
    )
    if source is None or not os.fspath(source):
      raise ValueError(_source_hint(cls.DATASET))
    source = os.fspath(source)
    options = {**cls.OPTIONS, **options}
    cls._check_options(options)
    files = _jsonl_files(source)
    cls._check_records(files, options)
    digest = hashlib.sha256(json.dumps(options, sort_keys=True).encode())
    for split, path in sorted(files.items()):
      digest.update(split.encode())
      with open(storage.mirror(path), "rb") as f:
        digest.update(hashlib.sha256(f.read()).digest())
    stem = storage.basename(os.path.normpath(source)).removesuffix(".jsonl")
    fingerprint = digest.hexdigest()[:12]
    slug = re.sub(r"[^a-z0-9]+", "_", stem.lower()).strip("_") or "data"
    return JsonlConfig(
      name=f"{slug}_{fingerprint}",
      files=files,
      options=options,
      fingerprint=fingerprint,
      source=source,
    )

  @classmethod
  def _check_options(cls, options: Mapping[str, str]) -> None:
    for key, value in options.items():
      if not isinstance(value, str):
        raise ValueError(
          f"{cls.DATASET} option {key}={value!r}: expected a string"
        )

  @classmethod
  def _check_records(
    cls, files: Mapping[str, str], options: Mapping[str, str]
  ) -> None:
    for split, path in files.items():
      if not sum(1 for _ in cls._convert(path, options)):
        # TFDS would fail later with a bare "No examples were yielded".
        raise ValueError(
          f"{path}: the {split!r} split has no records (the file is empty); "
          "write one JSON object per line, or remove the file"
        )

  @classmethod
  def _convert(cls, path: str, options: Mapping[str, str]):
    for where, record in jsonl_formats.read_jsonl(path):
      yield cls.CONVERT(record, where, **options)

  def _split_generators(self, dl_manager):
    del dl_manager  # Files named by the source, nothing to download.
    options = self.builder_config.options
    return {
      split: self._generate_examples(self._convert(path, options))
      for split, path in self.builder_config.files.items()
    }


class Gsm8kJsonl(_JsonlBuilder, skip_registration=True):
  """GSM8K-format JSONL (`question`, `answer` ending in `#### N`)."""

  name = "rock_gsm8k"
  DATASET = "gsm8k"
  CONVERT = staticmethod(jsonl_formats.gsm8k_example)
  OPTIONS = {"instruction": ""}


class MathJsonl(_JsonlBuilder, skip_registration=True):
  """MATH / MATH-500-format JSONL (`problem`, `answer` or boxed `solution`)."""

  name = "rock_math"
  DATASET = "math"
  CONVERT = staticmethod(jsonl_formats.math_example)
  OPTIONS = {"instruction": ""}


class PromptsJsonl(_JsonlBuilder, skip_registration=True):
  """Any JSONL of prompts: a string or chat-message field, optional extras."""

  name = "rock_prompts"
  DATASET = "prompts"
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
    super()._check_options(options)
    if not options["field"]:
      raise ValueError(
        "field='': expected the name of the field holding each prompt "
        "(default 'prompt')"
      )
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
