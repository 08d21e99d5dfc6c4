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

import glob
import os
import shutil
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


def prepare(
  name: str,
  data_dir: str | os.PathLike,
  *,
  require_splits: Sequence[str] = (),
  **options,
) -> str:
  """Prepares dataset `name` once (later calls reuse it).

  Run it on one process before the others read: concurrent preparations of
  the same dataset race on the final rename. Every input is checked before
  anything is written, and a preparation that fails anyway removes the
  folders it created, so `data_dir` is left as it was.

  Args:
    name: a key of `BUILDERS`.
    data_dir: root folder of prepared datasets.
    require_splits: splits the caller will open (e.g. train and eval);
      a missing one fails here, before preparing.
    **options: builder options (`get_builder`).

  Returns:
    The dataset's folder, for `open_split`.
  """
  builder = get_builder(name, data_dir, **options)
  if isinstance(require_splits, str):
    require_splits = (require_splits,)
  builder.builder_config.check_splits(require_splits)
  root = os.path.abspath(os.fspath(data_dir))
  # TFDS renames the finished version folder into place, so a failure never
  # leaves one that reads as prepared; it does leave empty parents and
  # `downloads/`, which are removed here.
  new = [
    path
    for path in (
      root,
      os.path.join(root, "downloads"),
      os.path.join(root, builder.name),
      os.fspath(builder.data_path.parent),
    )
    if not os.path.exists(path)
  ]
  try:
    builder.download_and_prepare()
  except BaseException:
    for path in new:
      shutil.rmtree(path, ignore_errors=True)
    raise
  return os.fspath(builder.data_dir)


def _check_prepared(dataset_dir: str) -> None:
  """Raises unless `dataset_dir` holds a prepared dataset."""
  if os.path.isfile(os.path.join(dataset_dir, "dataset_info.json")):
    return
  if not os.path.isdir(dataset_dir):
    problem = "no such folder"
  else:
    problem = "no dataset_info.json in it"
    found = sorted(
      os.path.dirname(p)
      for depth in (1, 2, 3)
      for p in glob.glob(
        os.path.join(
          glob.escape(dataset_dir), *["*"] * depth, "dataset_info.json"
        )
      )
    )
    if found:
      problem += f"; prepared datasets below it: {found[:5]}"
  raise FileNotFoundError(
    f"dataset_dir={dataset_dir!r} is not a prepared dataset ({problem}); "
    "pass the folder builders.prepare(name, data_dir, ...) returned, "
    "<data_dir>/<builder>/<config>/<version>"
  )


def _builder(dataset_dir: str | os.PathLike):
  dataset_dir = os.fspath(dataset_dir)
  _check_prepared(dataset_dir)
  return tfds.builder_from_directory(dataset_dir)


def split_sizes(dataset_dir: str | os.PathLike) -> dict[str, int]:
  """Split name -> number of examples of a prepared dataset, by name."""
  splits = _builder(dataset_dir).info.splits
  return {name: splits[name].num_examples for name in sorted(splits)}


def open_split(dataset_dir: str | os.PathLike, split: str) -> Sequence:
  """Random-access records of a prepared split (no builder code needed)."""
  builder = _builder(dataset_dir)
  if split not in builder.info.splits:
    files = dict((builder.info.metadata or {}).get("files", {}))
    origin = f" (prepared from {sorted(files.values())})" if files else ""
    raise ValueError(
      f"split {split!r} not in {os.fspath(dataset_dir)}{origin}; available: "
      f"{sorted(builder.info.splits)}; use one of those (data.train_split, "
      "data.eval_split)"
      + (
        f", or add {split}.jsonl to the source and prepare again"
        if files
        else ""
      )
    )
  return builder.as_data_source(split)
