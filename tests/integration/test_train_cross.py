"""Cross-tokenizer OPD end to end on tiny random models: a teacher whose
tokenizer differs from the student's (`configs/opd_cross.py`)."""

import json
import os
import signal
import threading
import time

import numpy as np
import pytest
from cross_helpers import make_cross_teacher
from run_helpers import exported, tiny_config

from rock_jax import train


@pytest.fixture(scope="module")
def cross_teacher(tmp_path_factory):
  return make_cross_teacher(tmp_path_factory.mktemp("cross_teacher"))


def _config(assets, cross_teacher, workdir, **overrides):
  # The teacher scores on devices 4-7, the student samples one update
  # stale on 2-3 and trains on 0-1 (importance weights on).
  return tiny_config(
    assets,
    workdir,
    "opd_cross.py",
    teacher__path=cross_teacher,
    data__teacher_prompt_len=0,
    mesh="data:2,fsdp:1,tensor:1",
    teacher__devices="4:8",
    teacher__mesh="data:4,fsdp:1,tensor:1",
    rollout__devices="2:4",
    rollout__mesh="data:2,fsdp:1,tensor:1",
    rollout__staleness=1,
    train__steps=8,
    **overrides,
  )


def test_a_teacher_of_another_tokenizer_distils_and_resumes(
  assets, cross_teacher, tmp_path
):
  summary = train.run(_config(assets, cross_teacher, tmp_path / "a"))
  assert summary["steps"] == 8
  lines = [
    json.loads(x) for x in open(tmp_path / "a" / "logs" / "metrics.jsonl")
  ]
  logged = [x for x in lines if "xtok/exact" in x]
  assert len(logged) == 4
  for x in logged:
    assert 0.2 < x["xtok/exact"] < 1.0
    assert x["xtok/unaligned"] == 0 and x["xtok/too_long"] == 0
    # The random student emits a special token now and then: counted.
    assert 0 <= x["xtok/template_tokens"] < 0.05
    assert np.isfinite(x["loss/opd"]) and x["importance/weight"] > 0
  # Preempted once step 2 is saved (its checkpoint holds the next batch,
  # sampled ahead and re-tokenised) and resumed: the same student as
  # without a stop.
  resumed = tmp_path / "b"

  def terminate_after_the_first_checkpoint():
    deadline = time.time() + 240
    while not (resumed / "checkpoints" / "2").exists():
      if time.time() > deadline:
        return
      time.sleep(0.05)
    os.kill(os.getpid(), signal.SIGTERM)

  threading.Thread(target=terminate_after_the_first_checkpoint).start()
  assert train.run(_config(assets, cross_teacher, resumed))["stopped"]
  assert train.run(_config(assets, cross_teacher, resumed))["steps"] == 8
  ref, got = exported(tmp_path / "a"), exported(resumed)
  for key in ref:
    np.testing.assert_allclose(got[key], ref[key], rtol=1e-5, atol=1e-6)
