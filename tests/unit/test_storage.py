"""Paths and `gs://` URLs through `rock_jax.storage`, against a real GCS API
server on loopback (tests/gcs_helpers.py) and local folders alike."""

import os

import pytest

from rock_jax import storage


@pytest.fixture(params=["local", "gs"])
def root(request, tmp_path):
  if request.param == "local":
    return str(tmp_path / "root")
  return request.getfixturevalue("gcs")


def test_write_read_list_glob_and_remove(root):
  storage.write_text(storage.join(root, "a", "x.json"), "{}")
  storage.write_bytes(storage.join(root, "a", "y.bin"), b"\x00\x01")
  storage.write_text(storage.join(root, "b.txt"), "héllo")
  assert storage.read_text(storage.join(root, "b.txt")) == "héllo"
  assert storage.read_bytes(storage.join(root, "a", "y.bin")) == b"\x00\x01"
  assert storage.listdir(root) == ["a", "b.txt"]
  assert storage.isdir(storage.join(root, "a"))
  assert storage.isfile(storage.join(root, "a", "x.json"))
  assert not storage.exists(storage.join(root, "nothing"))
  assert [storage.basename(p) for p in storage.glob(root, "a/*.json")] == [
    "x.json"
  ]
  # A rewrite replaces the whole file; no temporary is left beside it.
  storage.write_text(storage.join(root, "b.txt"), "new")
  assert storage.read_text(storage.join(root, "b.txt")) == "new"
  assert storage.listdir(root) == ["a", "b.txt"]
  storage.rmtree(storage.join(root, "a"))
  assert storage.listdir(root) == ["b.txt"]


def test_staged_folder_publishes_its_files_with_the_marker_last(root):
  with storage.staged_folder(storage.join(root, "model"), last=("z",)) as d:
    for name in ("z", "a", "m"):
      with open(os.path.join(d, name), "w") as f:
        f.write(name)
  assert storage.listdir(storage.join(root, "model")) == ["a", "m", "z"]
  with pytest.raises(RuntimeError):
    with storage.staged_folder(storage.join(root, "failed")) as d:
      open(os.path.join(d, "a"), "w").close()
      raise RuntimeError("interrupted")
  if storage.is_url(root):  # Nothing of a failed stage reaches the bucket.
    assert not storage.exists(storage.join(root, "failed"))


def test_mirror_is_checked_reused_and_renewed_when_objects_change(
  gcs, tmp_path
):
  folder = storage.join(gcs, "model")
  storage.write_text(storage.join(folder, "config.json"), '{"a": 1}')
  storage.write_bytes(storage.join(folder, "sub", "w.bin"), b"w" * 1000)
  local = storage.mirror(folder, tmp_path)
  assert local.startswith(str(tmp_path))
  with open(os.path.join(local, "sub", "w.bin"), "rb") as f:
    assert f.read() == b"w" * 1000
  assert storage.mirror(folder, tmp_path) == local  # Filled once.
  storage.write_text(storage.join(folder, "config.json"), '{"a": 2}')
  renewed = storage.mirror(folder, tmp_path)
  assert renewed != local
  with open(os.path.join(renewed, "config.json")) as f:
    assert f.read() == '{"a": 2}'
  one = storage.mirror(storage.join(folder, "config.json"), tmp_path)
  assert os.path.basename(one) == "config.json" and os.path.isfile(one)
  assert storage.mirror(str(tmp_path), tmp_path) == str(tmp_path)


def test_bad_urls_name_the_url_and_what_was_wrong(gcs, tmp_path):
  missing = r"bucket 'no-such-bucket' does not exist"
  with pytest.raises(
    storage.StorageError, match=r"workdir='gs://no-such-bucket/run'.*" + missing
  ):
    storage.check_writable("gs://no-such-bucket/run", "workdir")
  with pytest.raises(
    storage.StorageError,
    match=r"workdir='gs://read-only/run'.*permission denied to write",
  ):
    storage.check_writable("gs://read-only/run", "workdir")
  storage.check_writable(gcs, "workdir")
  assert not storage.exists(gcs)  # The probe object is removed again.
  absent = storage.join(gcs, "absent")
  with pytest.raises(
    storage.StorageError, match=r"student.path='gs://.*/absent': no such object"
  ):
    storage.check_readable(absent, "student.path")
  with pytest.raises(storage.StorageError, match=missing):
    storage.check_readable("gs://no-such-bucket/m", "student.path")
  with pytest.raises(storage.StorageError, match=missing):
    storage.check_bucket("gs://no-such-bucket/data", "data.data_dir")
  storage.check_bucket(storage.join(gcs, "fresh"), "data.data_dir")
  with pytest.raises(storage.StorageError, match=r"/absent: no such object"):
    storage.mirror(absent, tmp_path)


def test_local_writes_get_the_usual_file_mode(tmp_path):
  path = tmp_path / "a.json"
  storage.write_text(str(path), "{}")
  umask = os.umask(0)
  os.umask(umask)
  assert path.stat().st_mode & 0o777 == 0o666 & ~umask


def test_a_copy_that_does_not_match_its_object_is_not_kept(
  gcs, tmp_path, monkeypatch
):
  folder = storage.join(gcs, "model")
  storage.write_bytes(storage.join(folder, "w.bin"), b"w" * 100)
  # A transfer that corrupted a byte: its CRC32C differs from the object's.
  monkeypatch.setattr(storage, "_checksum", lambda path: "AAAAAA==")
  with pytest.raises(
    storage.StorageError,
    match=r"model/w.bin: the downloaded copy does not match",
  ):
    storage.mirror(folder, tmp_path)
  assert not list((tmp_path / "mirror").rglob("w.bin"))
