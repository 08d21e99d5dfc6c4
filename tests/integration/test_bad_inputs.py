"""Every kind of bad input fails naming the field or file and the fix.

The tables: tests/bad_input_runs.py (config values, rock lists, work
directories, checkpoints, analyses), tests/bad_input_models.py (model
folders, weights, tokenizers), tests/bad_input_data.py (datasets),
tests/bad_input_cross.py (a teacher of another tokenizer); the
launch commands: tests/test_bad_inputs_commands.py.
"""

import re

import bad_input_cross
import bad_input_data
import bad_input_models
import bad_input_runs
import pytest

CASES = (
  bad_input_runs.CASES
  + bad_input_models.CASES
  + bad_input_data.CASES
  + bad_input_cross.CASES
)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_bad_input_is_named(case, tmp_path, assets):
  fail = case.build(tmp_path, assets)
  with pytest.raises(case.error) as info:
    fail()
  assert re.search(case.match, str(info.value)), str(info.value)


def test_table_is_broad():
  assert len(CASES) >= 30
  assert len({c.id for c in CASES}) == len(CASES)


def test_failed_prepare_leaves_nothing(tmp_path, assets):
  bad_input_data.check_failed_prepare_leaves_nothing(tmp_path, assets)


def _gs_cases(gcs):
  """`(overrides, message)`: bad gs:// inputs to a run."""
  absent = f"{gcs}/absent-model"
  return [
    (
      {"workdir": "gs://no-such-bucket/run"},
      r"workdir='gs://no-such-bucket/run'.*bucket 'no-such-bucket' does not",
    ),
    (
      {"workdir": "gs://read-only/run"},
      r"workdir='gs://read-only/run'.*permission denied to write",
    ),
    (
      {"teacher.path": absent},
      rf"teacher.path='{absent}/config.json': no such object",
    ),
    (
      {"student.path": "gs://no-such-bucket/student"},
      r"student.path='gs://no-such-bucket/student/config.json'.*bucket "
      r"'no-such-bucket' does not exist",
    ),
    (
      {"data.data_dir": "gs://no-such-bucket/data"},
      r"data.data_dir='gs://no-such-bucket/data'.*bucket 'no-such-bucket'",
    ),
  ]


@pytest.mark.parametrize("index", range(5))
def test_bad_gs_inputs_fail_before_training_naming_the_url(
  index, assets, gcs, tmp_path
):
  from run_helpers import set_fields, tiny_config  # noqa: PLC0415

  from rock_jax import storage, train  # noqa: PLC0415

  overrides, match = _gs_cases(gcs)[index]
  config = tiny_config(assets, tmp_path / "run")
  set_fields(config, overrides)
  with pytest.raises(storage.StorageError, match=match):
    train.run(config)
  assert not (tmp_path / "run").exists()
