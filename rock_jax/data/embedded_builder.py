"""TFDS builder of the embedded task, with its tokenizer and Rock Tokens.

The prepared folder holds, besides the `train` and `test` splits, the task's
tokenizer in Hugging Face format (`TOKENIZER_DIR`) and its ground-truth Rock
Tokens (`ROCK_FILE`). The config name spells out every generation parameter,
so each setting gets its own folder.
"""

from __future__ import annotations

import dataclasses
import json
import numbers
import os
import re
from collections.abc import Iterable

import tensorflow_datasets as tfds

from rock_jax import storage
from rock_jax.data import embedded_task, schema, tokenization

TOKENIZER_DIR = "tokenizer"
# `{"token_ids": [...], "tokens": [...], "styles": [...]}`: the embedded
# task's ground-truth Rock Tokens, ids sorted, tokens decoded to text.
ROCK_FILE = "rock.json"
SPLITS = ("train", "test")


@dataclasses.dataclass(eq=False)
class EmbeddedConfig(tfds.core.BuilderConfig):
  task: embedded_task.TaskConfig = embedded_task.TaskConfig()
  train_size: int = 20_000
  test_size: int = 500
  seed: int = 0

  def metadata(self) -> dict:
    task = dataclasses.asdict(self.task)
    if not self.task.num_items:
      # The plain task's metadata as it was before items existed.
      del task["num_items"], task["item_zipf"]
    return {
      "task": task,
      "train_size": self.train_size,
      "test_size": self.test_size,
      "seed": self.seed,
    }

  def check_splits(self, splits: Iterable[str]) -> None:
    """Raises if a split in `splits` is not one of `SPLITS`."""
    if missing := [s for s in splits if s not in SPLITS]:
      raise ValueError(
        f"the embedded dataset has no split(s) {missing}; use {list(SPLITS)} "
        "(data.train_split, data.eval_split)"
      )


def _int_option(name: str, value: object, minimum: int | None = None) -> int:
  """An integer option; a string of digits counts (options from the command
  line are strings)."""
  if isinstance(value, str) and re.fullmatch(r"\s*[+-]?\d+\s*", value):
    value = int(value)
  if (
    isinstance(value, bool)
    or not isinstance(value, numbers.Integral)
    or (minimum is not None and value < minimum)
  ):
    at_least = "" if minimum is None else f" >= {minimum}"
    raise ValueError(
      f"embedded option {name}={value!r}: expected an integer{at_least}"
    )
  return int(value)


def _float_option(name: str, value: object, minimum: float) -> float:
  """A finite number >= `minimum`; a string that parses as one counts."""
  if isinstance(value, str):
    try:
      value = float(value)
    except ValueError:
      pass
  if (
    isinstance(value, bool)
    or not isinstance(value, numbers.Real)
    or not minimum <= value < float("inf")
  ):
    raise ValueError(
      f"embedded option {name}={value!r}: expected a finite number >= {minimum}"
    )
  return float(value)


# `TaskConfig` fields that are numbers rather than integers.
_FLOAT_FIELDS = {"item_zipf": 0.0}


class EmbeddedTask(schema.ExampleBuilder, skip_registration=True):
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
    train_size: int | str = 20_000,
    test_size: int | str = 500,
    seed: int | str = 0,
    **task_overrides,
  ) -> EmbeddedConfig:
    """Config from a difficulty preset, overridable per `TaskConfig` field.

    Integers may come as strings of digits (`inspect --set train_size=64`).
    """
    fields = {f.name for f in dataclasses.fields(embedded_task.TaskConfig)}
    schema.check_option_names(
      task_overrides,
      fields | {"difficulty", "train_size", "test_size", "seed"},
      "embedded task",
      "embedded",
    )
    if difficulty not in embedded_task.DIFFICULTIES:
      raise ValueError(
        f"embedded option difficulty={difficulty!r}: expected one of "
        f"{sorted(embedded_task.DIFFICULTIES)}"
      )
    # Empty splits would only fail deep inside TFDS ("No examples").
    train_size = _int_option("train_size", train_size, 1)
    test_size = _int_option("test_size", test_size, 1)
    seed = _int_option("seed", seed, 0)
    task = dataclasses.replace(
      embedded_task.get_difficulty(difficulty),
      **{
        k: (
          _float_option(k, v, _FLOAT_FIELDS[k])
          if k in _FLOAT_FIELDS
          else _int_option(k, v)
        )
        for k, v in task_overrides.items()
      },
    )
    name = (
      f"d{task.min_digits}-{task.max_digits}_x{task.num_operands}"
      f"_s{task.num_styles}_n{train_size}-{test_size}_seed{seed}"
    )
    if task.num_items:
      # Without items the name is the one prepared folders already have.
      name += f"_i{task.num_items}z{float(task.item_zipf)!r}"
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
    try:
      train = embedded_task.sample_problems(
        config.task,
        config.train_size,
        (config.seed, 0),
        exclude=frozenset(p.operands for p in test),
      )
    except ValueError as e:
      raise ValueError(
        f"embedded options train_size={config.train_size}, test_size="
        f"{config.test_size}: {e}"
      ) from None
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
      os.path.join(directory, TOKENIZER_DIR),
      num_items=self.builder_config.task.num_items,
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


def load_tokenizer(dataset_dir: str):
  """The tokenizer saved with a prepared embedded dataset (folder or URL)."""
  return tokenization.load_tokenizer(storage.join(dataset_dir, TOKENIZER_DIR))


def planted_rocks(dataset_dir: str) -> frozenset[int] | None:
  """The ground-truth Rock Token ids of a prepared dataset (`ROCK_FILE`), or
  None if it has none (datasets other than the embedded task).

  `dataset_dir` may be a `gs://` URL; the file is read through storage.
  """
  path = storage.join(dataset_dir, ROCK_FILE)
  if not storage.isfile(path):
    return None
  return frozenset(json.loads(storage.read_text(path))["token_ids"])
