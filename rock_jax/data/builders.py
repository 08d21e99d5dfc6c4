"""Datasets by name: prepare once as array_record, then read by index.

TensorFlow is never needed: `prepare` runs a TFDS builder that writes
array_record files, and `open_split` reads them back with a TFDS data source
(random access; `Text` fields come back as bytes, see `schema.from_record`).
A prepared dataset lives in `<data_dir>/<builder>/<config>/<version>/`; the
config name records everything that decides the content (see
`embedded_builder` and `jsonl_builders`). Changing the generation or
conversion code requires bumping the builder's `VERSION`. `data_dir` and
dataset folders may be `gs://` URLs: preparation is staged locally and
uploaded, reading goes through a checked local mirror.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Sequence

import tensorflow_datasets as tfds

from rock_jax import storage
from rock_jax.data import embedded_builder, jsonl_builders, schema

FILE_FORMAT = "array_record"
# Written last by TFDS (and uploaded last): its presence marks a finished
# dataset.
INFO_FILE = "dataset_info.json"

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
  the same dataset race on the final rename (or upload). Every input is
  checked before anything is written, and a preparation that fails anyway
  removes the folders it created, so `data_dir` is left as it was.

  A `gs://` data_dir is prepared in a local temporary folder (TFDS writes
  array_record files only locally without TensorFlow) and uploaded with
  `dataset_info.json` last, so a half-uploaded dataset never reads as
  prepared; one already in the bucket is reused.

  Args:
    name: a key of `BUILDERS`.
    data_dir: root folder (or `gs://` URL) of prepared datasets.
    require_splits: splits the caller will open (e.g. train and eval);
      a missing one fails here, before preparing.
    **options: builder options (`get_builder`).

  Returns:
    The dataset's folder (a URL under a URL data_dir), for `open_split`.
  """
  if isinstance(require_splits, str):
    require_splits = (require_splits,)
  if storage.is_url(data_dir):
    return _prepare_in_bucket(
      name, storage.absolute(data_dir), require_splits, options
    )
  builder = get_builder(name, data_dir, **options)
  builder.builder_config.check_splits(require_splits)
  return _prepare_locally(builder, os.fspath(data_dir))


def _prepare_locally(builder, data_dir: str) -> str:
  """Runs `builder` into local `data_dir`; removes what it made on failure."""
  root = os.path.abspath(data_dir)
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


def _prepare_in_bucket(
  name: str, url: str, require_splits: Sequence[str], options: dict
) -> str:
  """`prepare` for a URL data_dir: staged locally, then uploaded."""
  with tempfile.TemporaryDirectory(prefix="rock_jax-data-") as staging:
    builder = get_builder(name, staging, **options)
    builder.builder_config.check_splits(require_splits)
    # `<builder>/<config>/<version>`, the same place under the URL.
    relative = os.path.relpath(os.fspath(builder.data_dir), staging)
    dataset_url = storage.join(url, *relative.split(os.sep))
    if storage.isfile(storage.join(dataset_url, INFO_FILE)):
      return dataset_url
    # Before the minutes of preparation: a bucket that refuses writes.
    storage.check_writable(url, "data_dir")
    local = _prepare_locally(builder, staging)
    # What a failed earlier upload left (no INFO_FILE) is replaced whole.
    storage.rmtree(dataset_url)
    storage.upload(local, dataset_url, last=(INFO_FILE,))
  return dataset_url


def _check_prepared(dataset_dir: str) -> None:
  """Raises unless `dataset_dir` (a folder or URL) holds a prepared dataset."""
  if storage.isfile(storage.join(dataset_dir, INFO_FILE)):
    return
  if not storage.isdir(dataset_dir):
    problem = "no such folder"
  else:
    problem = f"no {INFO_FILE} in it"
    found = sorted(
      storage.dirname(p)
      for depth in (1, 2, 3)
      for p in storage.glob(dataset_dir, "/".join(["*"] * depth + [INFO_FILE]))
    )
    if found:
      problem += f"; prepared datasets below it: {found[:5]}"
  raise FileNotFoundError(
    f"dataset_dir={dataset_dir!r} is not a prepared dataset ({problem}); "
    "pass the folder builders.prepare(name, data_dir, ...) returned, "
    "<data_dir>/<builder>/<config>/<version>"
  )


def local_copy(dataset_dir: str | os.PathLike) -> str:
  """A prepared dataset's local folder: itself, or a URL's checked mirror.

  ArrayRecord (and the tokenizer) read local files only; the mirror is
  filled once per machine and renewed when the bucket's objects change.
  """
  dataset_dir = os.fspath(dataset_dir)
  _check_prepared(dataset_dir)
  return storage.mirror(dataset_dir)


def _builder(dataset_dir: str | os.PathLike):
  return tfds.builder_from_directory(local_copy(dataset_dir))


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
