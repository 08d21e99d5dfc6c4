"""Every kind of bad input fails naming the field or file and the fix.

The tables: tests/bad_input_runs.py (config values, rock lists, work
directories, checkpoints, analyses), tests/bad_input_models.py (model
folders, weights, tokenizers), tests/bad_input_data.py (datasets); the
launch commands: tests/test_bad_inputs_commands.py.
"""

import re

import bad_input_data
import bad_input_models
import bad_input_runs
import pytest

CASES = bad_input_runs.CASES + bad_input_models.CASES + bad_input_data.CASES


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
