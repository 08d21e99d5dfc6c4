"""TFDS builders for every dataset, written as array_record and read by index.

TensorFlow is never needed: `prepare` writes array_record files and
`open_split` reads them back with a TFDS data source (random access, records
of bytes). All builders share `schema.FEATURES`.

A prepared dataset lives in `<data_dir>/<builder>/<config>/<version>/`. The
config name records everything that decides the content: the generation
parameters of the embedded task, and for local JSONL files a fingerprint of
the files' bytes and of the options. Changing a file or an option therefore
prepares a new directory instead of silently reading stale data; changing the
conversion code requires bumping `VERSION`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
from collections.abc import Callable, Iterable, Mapping, Sequence

import tensorflow_datasets as tfds

from rock_jax.data import (
  embedded_task,
  jsonl_formats,
  schema,
  tokenization,
  verifiers,
)

FILE_FORMAT = "array_record"
TOKENIZER_DIR = "tokenizer"
# `{"token_ids": [...], "tokens": [...], "styles": [...]}`: the embedded
# task's ground-truth Rock Tokens, ids sorted, tokens decoded to text.
ROCK_FILE = "rock.json"


class _Builder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """Common schema and metadata; subclasses add configs and splits."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "First release."}
  # TFDS 4.9.10 resolves the default `code_path` (used only to find download
  # checksums) through `importlib_resources`, which it installs only on
  # Python < 3.9; these builders download nothing.
  code_path = None

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
      builder=self,
      description=self.__doc__,
      features=schema.FEATURES,
      metadata=tfds.core.MetadataDict(self.builder_config.metadata()),
    )

  def _generate_examples(self, examples: Iterable[schema.Example]):
    for i, example in enumerate(examples):
      yield i, schema.to_record(example)


@dataclasses.dataclass(eq=False)
class EmbeddedConfig(tfds.core.BuilderConfig):
  task: embedded_task.TaskConfig = embedded_task.TaskConfig()
  train_size: int = 20_000
  test_size: int = 500
  seed: int = 0

  def metadata(self) -> dict:
    return {
      "task": dataclasses.asdict(self.task),
      "train_size": self.train_size,
      "test_size": self.test_size,
      "seed": self.seed,
    }


class EmbeddedTask(_Builder, skip_registration=True):
  """Column addition with planted Rock Tokens (see `embedded_task`).

  Splits `train` and `test` with disjoint operands. The dataset directory
  also holds the task's tokenizer (`tokenizer/`, Hugging Face format) and its
  ground-truth Rock Tokens (`rock.json`).
  """

  name = "rock_embedded"

  @classmethod
  def make_config(
    cls,
    difficulty: str = "default",
    train_size: int = 20_000,
    test_size: int = 500,
    seed: int = 0,
    **task_overrides,
  ) -> EmbeddedConfig:
    """Config from a difficulty preset, overridable per `TaskConfig` field."""
    fields = {f.name for f in dataclasses.fields(embedded_task.TaskConfig)}
    if unknown := set(task_overrides) - fields:
      raise ValueError(
        f"unknown embedded task options {sorted(unknown)}; available: "
        f"{sorted(fields | {'difficulty', 'train_size', 'test_size'})}"
      )
    task = dataclasses.replace(
      embedded_task.get_difficulty(difficulty), **task_overrides
    )
    name = (
      f"d{task.min_digits}-{task.max_digits}_x{task.num_operands}"
      f"_s{task.num_styles}_n{train_size}-{test_size}_seed{seed}"
    )
    return EmbeddedConfig(
      name=name,
      task=task,
      train_size=train_size,
      test_size=test_size,
      seed=seed,
    )

  def _split_generators(self, dl_manager):
    del dl_manager  # Nothing to download.
    config = self.builder_config
    test = embedded_task.sample_problems(
      config.task, config.test_size, (config.seed, 1)
    )
    train = embedded_task.sample_problems(
      config.task,
      config.train_size,
      (config.seed, 0),
      exclude=frozenset(p.operands for p in test),
    )
    # Written into the directory being prepared, so the assets appear
    # atomically with the splits.
    self._write_assets(os.fspath(self.data_dir))
    return {
      split: self._generate_examples(
        [
          embedded_task.to_example(p, f"{split}-{i}")
          for i, p in enumerate(problems)
        ]
      )
      for split, problems in (("train", train), ("test", test))
    }

  def _write_assets(self, directory: str) -> None:
    tokenizer = tokenization.build_embedded_tokenizer(
      os.path.join(directory, TOKENIZER_DIR)
    )
    ids = embedded_task.rock_token_ids(
      tokenizer, self.builder_config.task.styles
    )
    rock = {
      "token_ids": ids,
      "tokens": [tokenizer.decode([i]) for i in ids],
      "styles": list(self.builder_config.task.styles),
    }
    with open(os.path.join(directory, ROCK_FILE), "w") as f:
      json.dump(rock, f, indent=1)


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
  for split in files:
    if not re.fullmatch(r"\w+", split):
      raise ValueError(
        f"{files[split]}: split name {split!r} (the file stem) must be "
        "letters, digits and underscores"
      )
  return files


class _JsonlBuilder(_Builder, skip_registration=True):
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
    convert = type(self).CONVERT
    options = self.builder_config.options
    return {
      split: self._generate_examples(
        convert(record, where, **options)
        for where, record in jsonl_formats.read_jsonl(path)
      )
      for split, path in self.builder_config.files.items()
    }


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


BUILDERS: dict[str, type[_Builder]] = {
  "embedded": EmbeddedTask,
  "gsm8k": Gsm8kJsonl,
  "math": MathJsonl,
  "prompts": PromptsJsonl,
}


def get_builder(name: str, data_dir: str | os.PathLike, **options):
  """The TFDS builder for dataset `name` with `options`, not yet prepared.

  Args:
    name: a key of `BUILDERS`.
    data_dir: root folder of prepared datasets.
    **options: `make_config` arguments of that builder, e.g. `source=` for
      the JSONL builders, `difficulty=`/`train_size=` for the embedded task.

  Returns:
    The builder; `builder.data_dir` is the dataset's own folder.
  """
  if name not in BUILDERS:
    raise ValueError(f"unknown dataset {name!r}; available: {sorted(BUILDERS)}")
  cls = BUILDERS[name]
  return cls(
    data_dir=os.fspath(data_dir),
    config=cls.make_config(**options),
    file_format=FILE_FORMAT,
  )


def prepare(name: str, data_dir: str | os.PathLike, **options) -> str:
  """Prepares dataset `name` once (later calls reuse it).

  Run it on one process before the others read: concurrent preparations of
  the same dataset race on the final rename.

  Returns:
    The dataset's folder, for `open_split`.
  """
  builder = get_builder(name, data_dir, **options)
  builder.download_and_prepare()
  return os.fspath(builder.data_dir)


def split_sizes(dataset_dir: str | os.PathLike) -> dict[str, int]:
  """Split name -> number of examples of a prepared dataset, by name."""
  splits = tfds.builder_from_directory(os.fspath(dataset_dir)).info.splits
  return {name: splits[name].num_examples for name in sorted(splits)}


def open_split(dataset_dir: str | os.PathLike, split: str) -> Sequence:
  """Random-access records of a prepared split (no builder code needed)."""
  builder = tfds.builder_from_directory(os.fspath(dataset_dir))
  if split not in builder.info.splits:
    raise ValueError(
      f"split {split!r} not in {os.fspath(dataset_dir)}; available: "
      f"{sorted(builder.info.splits)}"
    )
  return builder.as_data_source(split)
