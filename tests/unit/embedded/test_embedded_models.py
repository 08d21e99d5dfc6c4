"""The embedded default's self-trained teacher and student."""

import dataclasses
import os

import data_helpers
import jax
import pytest
import safetensors.numpy

from rock_jax import models, storage
from rock_jax.data import builders
from rock_jax.embedded import models as embedded_models
from rock_jax.embedded import sft as embedded_sft
from rock_jax.models import hf


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
  return data_helpers.prepare_embedded(tmp_path_factory.mktemp("data"))


def test_prepare_trains_once_then_reuses(tmp_path, dataset, monkeypatch):
  # Kept at its first measurement (step 2): any accuracy is in the band.
  spec = embedded_sft.SFTSpec(
    hidden_size=64,
    layers=2,
    steps=4,
    batch_size=8,
    eval_every=2,
    eval_examples=16,
  )
  specs = dict(teacher=spec, student=spec)
  teacher, student = embedded_models.prepare(dataset, str(tmp_path), **specs)
  for path in (teacher, student):
    cfg, _ = hf.load(path)
    assert cfg.hidden_size == 64 and cfg.num_layers == 2
    assert os.path.isfile(os.path.join(path, "tokenizer.json"))
  assert builders.split_sizes(dataset) == {"test": 16, "train": 64}

  def fail(*args, **kwargs):
    raise AssertionError("retrained a cached model")

  # A second preparation on this machine gives the same bits.
  again = embedded_models.prepare(dataset, str(tmp_path / "again"), **specs)
  for first, second in zip((teacher, student), again, strict=True):
    files = [os.path.join(d, "model.safetensors") for d in (first, second)]
    weights = [safetensors.numpy.load_file(f) for f in files]
    assert weights[0].keys() == weights[1].keys()
    for name, array in weights[0].items():
      assert array.tobytes() == weights[1][name].tobytes(), name
    assert embedded_models.training_record(
      first
    ) == embedded_models.training_record(second)

  monkeypatch.setattr(embedded_sft, "train_sft", fail)
  assert embedded_models.prepare(dataset, str(tmp_path), **specs) == (
    teacher,
    student,
  )
  # Another setting is another folder.
  specs["student"] = dataclasses.replace(spec, steps=3)
  monkeypatch.undo()
  assert embedded_models.prepare(dataset, str(tmp_path), **specs)[1] != student


def test_prepare_publishes_to_a_bucket_and_reuses_it(
  dataset, gcs, tmp_path, monkeypatch
):
  monkeypatch.setenv("ROCK_JAX_CACHE", str(tmp_path / "mirrors"))
  # The publish path under test, not SFT: "training" is a tiny init.
  trained = []

  def fake_train(spec, dataset_dir, tokenizer, role, styles):
    trained.append(role)
    cfg = embedded_sft.model_config(spec, tokenizer)
    return cfg, models.init(cfg, jax.random.key(0)), {"step": 1}

  monkeypatch.setattr(embedded_sft, "train_sft", fake_train)
  spec = embedded_sft.SFTSpec(hidden_size=16, layers=1, heads=2, steps=1)
  specs = dict(teacher=spec, student=dataclasses.replace(spec, seed=1))
  bucket_dataset = storage.join(gcs, "data")
  storage.upload(dataset, bucket_dataset)  # Its tokenizer read from there.
  cache = storage.join(gcs, "cache")
  teacher, student = embedded_models.prepare(bucket_dataset, cache, **specs)
  assert teacher.startswith(f"{cache}/models/teacher-")
  assert student.startswith(f"{cache}/models/student-")
  cfg, _ = hf.load(storage.mirror(teacher))
  assert (cfg.hidden_size, cfg.num_layers) == (16, 1)
  assert "tokenizer.json" in storage.listdir(student)
  assert embedded_models.training_record(student) == {"step": 1}
  assert trained == ["teacher", "student"]
  # Published folders are reused; one without config.json (an upload cut
  # short) is not.
  storage.remove(storage.join(student, "config.json"))
  assert embedded_models.prepare(bucket_dataset, cache, **specs) == (
    teacher,
    student,
  )
  assert trained == ["teacher", "student", "student"]
  assert storage.isfile(storage.join(student, "config.json"))
