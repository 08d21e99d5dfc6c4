"""Datasets by name: prepare once as array_record, then read by index.

TensorFlow is never needed: `prepare` runs a TFDS builder that writes
array_record files, and `open_split` reads them back with a TFDS data source
(random access; `Text` fields come back as bytes, see `schema.from_record`).
A prepared dataset lives in `<data_dir>/<builder>/<config>/<version>/`; the
config name records everything that decides the content (see
`embedded_builder` and `jsonl_builders`). Changing the generation or
conversion code requires bumping the builder's `VERSION`.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import tensorflow_datasets as tfds

from rock_jax.data import embedded_builder, jsonl_builders, schema

FILE_FORMAT = "array_record"

BUILDERS: dict[str, type[schema.ExampleBuilder]] = {
  "embedded": embedded_builder.EmbeddedTask,
  "gsm8k": jsonl_builders.Gsm8kJsonl,
  "math": jsonl_builders.MathJsonl,
  "prompts": jsonl_builders.PromptsJsonl,
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
