"""The embedded default's self-trained teacher and student."""

import dataclasses
import os

import data_helpers
import jax
import numpy as np
import pytest

from rock_jax import models, storage
from rock_jax.data import (
  builders,
  embedded_builder,
  embedded_models,
  embedded_task,
  prompts,
  tokenization,
)
from rock_jax.models import hf

STYLES = tuple(embedded_task.STYLES)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
  return data_helpers.prepare_embedded(tmp_path_factory.mktemp("data"))


@pytest.fixture(scope="module")
def tokenizer(dataset):
  return tokenization.load_tokenizer(
    os.path.join(dataset, embedded_builder.TOKENIZER_DIR)
  )


def _example(style="formal"):
  problem = embedded_task.Problem((47, 85), style)
  return embedded_task.to_example(problem, "x"), problem


def test_clean_solution_is_trained_everywhere(tokenizer):
  example, problem = _example()
  ids, trained = embedded_models._solution_ids(
    example, tokenizer, STYLES, np.random.default_rng(0), 0.0
  )
  solution = prompts.encode(embedded_task.solution(problem), tokenizer)
  assert ids == solution + [tokenizer.eos_token_id]
  assert all(trained)


def test_mixed_prefix_switches_to_the_tag_and_trains_only_after(tokenizer):
  example, problem = _example("formal")
  rocks = set(embedded_task.rock_token_ids(tokenizer, STYLES))
  formal_ids = {
    tokenizer.encode(getattr(embedded_task.STYLES["formal"], f))[0]
    for f in ("first", "middle", "final", "separator", "answer_open")
  }
  for seed in range(20):
    ids, trained = embedded_models._solution_ids(
      example, tokenizer, STYLES, np.random.default_rng(seed), 1.0
    )
    start = trained.index(True)
    assert start > 0 and all(trained[start:])  # one switch, then trained
    assert ids[start] in rocks  # the switch is at a slot
    # Every style decision from the switch on is the tagged style's.
    decided = [i for i in ids[start:] if i in rocks]
    assert set(decided) <= formal_ids | {tokenizer.encode("**")[0]}
    text = tokenizer.decode(ids, skip_special_tokens=True)
    assert text.endswith("132**")  # the switch may be at the last slot


def test_prepare_trains_once_then_reuses(tmp_path, dataset, monkeypatch):
  spec = embedded_models.SFTSpec(
    hidden_size=64, layers=2, steps=2, batch_size=8
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

  monkeypatch.setattr(embedded_models, "train_sft", fail)
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
    cfg = embedded_models.model_config(spec, tokenizer)
    return cfg, models.init(cfg, jax.random.key(0))

  monkeypatch.setattr(embedded_models, "train_sft", fake_train)
  spec = embedded_models.SFTSpec(hidden_size=16, layers=1, heads=2, steps=1)
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
