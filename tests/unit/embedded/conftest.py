"""The embedded task's small dataset and tokenizer, once per test module."""

import os

import data_helpers
import pytest

from rock_jax.data import embedded_builder, tokenization


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
  return data_helpers.prepare_embedded(tmp_path_factory.mktemp("data"))


@pytest.fixture(scope="module")
def tokenizer(dataset):
  return tokenization.load_tokenizer(
    os.path.join(dataset, embedded_builder.TOKENIZER_DIR)
  )
