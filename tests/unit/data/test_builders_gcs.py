"""Datasets with `gs://` data_dir and sources, against the loopback GCS API
server (tests/gcs_helpers.py): the same records as from local files, reuse
without re-upload, and no half-uploaded dataset taken as prepared."""

import os

import fsspec
import pytest
from data_helpers import FIXTURES

from rock_jax import storage
from rock_jax.data import builders, schema


@pytest.fixture(autouse=True)
def mirror_cache(tmp_path, monkeypatch):
  # Mirrors of bucket objects go to the test's folder, not ~/.cache.
  monkeypatch.setenv("ROCK_JAX_CACHE", str(tmp_path / "cache"))


def _records(dataset_dir, split):
  source = builders.open_split(dataset_dir, split)
  return [schema.from_record(source[i]) for i in range(len(source))]


def _generations(url):
  """`{object name: generation}` below a URL."""
  fs, root = fsspec.core.url_to_fs(url)
  return {
    name: info["generation"]
    for name, info in fs.find(root, detail=True).items()
  }


@pytest.fixture
def bucket_source(gcs):
  """The gsm8k fixture files, copied to `<gcs>/src/gsm8k`."""
  url = storage.join(gcs, "src", "gsm8k")
  storage.upload(FIXTURES / "gsm8k", url)
  return url


def test_bucket_dataset_holds_the_records_of_the_local_one(
  gcs, bucket_source, tmp_path
):
  dataset = builders.prepare(
    "gsm8k", storage.join(gcs, "data"), source=bucket_source
  )
  local = builders.prepare(
    "gsm8k", tmp_path / "data", source=FIXTURES / "gsm8k"
  )
  # Same builder, config (fingerprint) and version: the same relative place.
  relative = os.path.relpath(local, tmp_path / "data").split(os.sep)
  assert dataset == storage.join(gcs, "data", *relative)
  assert storage.isfile(storage.join(dataset, "dataset_info.json"))
  assert builders.split_sizes(dataset) == builders.split_sizes(local)
  for split in ("train", "test"):
    assert _records(dataset, split) == _records(local, split)
  with pytest.raises(ValueError, match=r"split 'dev' not in gs://.*/data/"):
    builders.open_split(dataset, "dev")


def test_bucket_dataset_is_reused_and_half_uploads_are_not(
  gcs, bucket_source, monkeypatch
):
  data_dir = storage.join(gcs, "data")
  dataset = builders.prepare("gsm8k", data_dir, source=bucket_source)
  before = _generations(dataset)

  def fail(*args):
    raise AssertionError("prepared a dataset the bucket already holds")

  with monkeypatch.context() as patch:
    patch.setattr(builders, "_prepare_locally", fail)
    assert builders.prepare("gsm8k", data_dir, source=bucket_source) == dataset
  assert _generations(dataset) == before  # Nothing was uploaded again.

  # An upload cut short before its last object: not a dataset.
  storage.remove(storage.join(dataset, "dataset_info.json"))
  storage.write_text(storage.join(dataset, "stale.txt"), "from a failed run")
  with pytest.raises(
    FileNotFoundError,
    match=rf"dataset_dir='{dataset}' is not a prepared dataset \(no "
    r"dataset_info.json in it\)",
  ):
    builders.open_split(dataset, "train")
  assert builders.prepare("gsm8k", data_dir, source=bucket_source) == dataset
  assert "stale.txt" not in storage.listdir(dataset)
  assert len(builders.open_split(dataset, "train")) == 7


def test_bad_bucket_sources_and_dataset_dirs_name_the_url(gcs):
  data_dir = storage.join(gcs, "data")
  missing = storage.join(gcs, "nope")
  with pytest.raises(
    ValueError, match=rf"source='{missing}': no such file or folder"
  ):
    builders.prepare("gsm8k", data_dir, source=missing)
  storage.write_text(storage.join(gcs, "text", "readme.txt"), "no data")
  with pytest.raises(
    ValueError,
    match=r"source='gs://.*/text': folder holds no .jsonl file \(found: "
    r"\['readme.txt'\]\)",
  ):
    builders.prepare("gsm8k", data_dir, source=storage.join(gcs, "text"))
  storage.write_text(
    storage.join(gcs, "bad", "train.jsonl"), '{"question": "q"}\n'
  )
  with pytest.raises(
    ValueError, match=r"gs://.*/bad/train.jsonl:1: field 'answer' is None"
  ):
    builders.prepare("gsm8k", data_dir, source=storage.join(gcs, "bad"))
  with pytest.raises(
    ValueError,
    match=r"source='gs://.*/bad' has no test.jsonl .*add test.jsonl to that",
  ):
    builders.prepare(
      "prompts",
      data_dir,
      source=storage.join(gcs, "bad"),
      field="question",
      require_splits=("test",),
    )
  assert not storage.exists(data_dir)  # Nothing was written.
  with pytest.raises(
    storage.StorageError,
    match=r"data_dir='gs://read-only/data': permission denied to write",
  ):
    builders.prepare("gsm8k", "gs://read-only/data", source=FIXTURES / "gsm8k")
  with pytest.raises(
    FileNotFoundError, match=rf"dataset_dir='{missing}' .*no such folder"
  ):
    builders.split_sizes(missing)
