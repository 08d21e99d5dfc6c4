"""The launch commands end a bad start with the message naming the input
as their last line and a non-zero status, and leave the work directory (and
everything else in the folder they ran in) as they found it."""

import os
import re
import subprocess
import sys

import pytest
from run_helpers import ROOT, tiny_overrides


def _train(tmp_path, assets, **settings):
  overrides = dict(tiny_overrides(assets), **settings)
  return [
    sys.executable,
    str(ROOT / "launch" / "train.py"),
    f"--config={ROOT / 'configs' / 'opd_rock.py'}",
    f"--workdir={tmp_path / 'run'}",
  ] + [f"--config.{k}={v}" for k, v in overrides.items()]


def _rock_list_beyond_vocab(tmp_path, assets):
  path = tmp_path / "rock.json"
  path.write_text("[3, 1000000]")
  # Read only after both models are loaded: the start-up that fails there
  # must not leave a work directory behind.
  return _train(tmp_path, assets, **{"rock.static_list": path}), (
    r"rock.json: entry 1 is 1000000, outside \[0, \d+\)"
  )


def _answer_guard_without_references(tmp_path, assets):
  # Prompts without reference answers: nothing for rock.protect=answers to
  # read, found once the data is prepared, before any step.
  prompts = ROOT / "tests" / "fixtures" / "prompts" / "plain.jsonl"
  settings = {
    "data.name": "prompts",
    "data.options": f"source={prompts}",
    "data.train_split": "plain",
    "data.eval_split": "plain",
    "rock.protect": "answers",
  }
  return _train(tmp_path, assets, **settings), (
    r"rock.protect='answers': the first 2048 training records of "
    r"data.name='prompts' have no reference answer.*rock.protect='auto'"
  )


def _analysis_without_run(tmp_path, assets):
  return [
    sys.executable,
    str(ROOT / "launch" / "analyze.py"),
    f"--config={ROOT / 'configs' / 'analyze_rock.py'}",
    f"--config.workdir={tmp_path / 'run'}",
  ], r"analysis.student='': no model at"


@pytest.mark.parametrize(
  "command",
  [
    _rock_list_beyond_vocab,
    _answer_guard_without_references,
    _analysis_without_run,
  ],
  ids=lambda f: f.__name__.strip("_"),
)
def test_commands_end_with_the_message(command, tmp_path, assets):
  argv, message = command(tmp_path, assets)
  before = sorted(os.listdir(tmp_path))
  out = subprocess.run(argv, capture_output=True, text=True, cwd=tmp_path)
  assert out.returncode != 0
  last = [line for line in out.stderr.splitlines() if line.strip()][-1]
  assert re.search(message, last), out.stderr[-2000:]
  assert sorted(os.listdir(tmp_path)) == before
