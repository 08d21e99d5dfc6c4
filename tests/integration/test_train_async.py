"""Roles on their own devices and rollouts ahead of the update, end to end.

Tiny random Hugging Face models on 8 fake CPU devices: the student trains on
0:4, the teacher scores on 4:6 and the student's rollouts are sampled on
6:8 (`teacher.devices`, `rollout.devices`).
"""

import json
import signal

import numpy as np
import pytest
from process_helpers import (
  free_port,
  launch_two_processes,
  start_and_wait_for_a_checkpoint,
)
from run_helpers import exported, run_capturing_the_loop, tiny_config

from rock_jax import checkpoint, train

APART = dict(teacher__devices="4:6", rollout__devices="6:8")
# One mesh holds 1 row per device, the roles apart 2 (student) and 4
# (teacher). XLA's CPU backend tiles a fused reduction (log-sum-exp,
# RMSNorm, softmax) by the per-device shape, so each row's sums run in
# another order and a log-prob moves by about one float32 ulp of |log p|
# (log V ≈ 6: 5e-7). A KL is a small difference of such log-probs, so its
# error is absolute: 2e-7 on KLs of 0.02 is 1e-5 relative.
KL_ATOL = 1e-6
# Parameters are compared under uniform OPD. With λ = 0 on the guarded set,
# one embedding entry gets a gradient far below the rest (its Adam second
# moment 150x under the median), and Adam's scale-free step turns that
# gradient's reduction-order noise into a visible difference (2.4e-6 on one
# of 10,784 entries after 4 steps). The tracker, which the selection reads,
# is compared either way.
UNIFORM = dict(rock__lam=1.0)
STALE = dict(APART, rollout__staleness=1, train__steps=6)


def _devices(tree) -> set[int]:
  import jax  # noqa: PLC0415

  return {d.id for x in jax.tree.leaves(tree) for d in x.sharding.device_set}


def _logged(workdir, key):
  lines = [json.loads(x) for x in open(workdir / "logs" / "metrics.jsonl")]
  return [x[key] for x in lines if key in x]


@pytest.fixture(scope="module")
def stale(assets, tmp_path_factory):
  """An uninterrupted 6-step run with staleness 1 (the resume reference)."""
  workdir = tmp_path_factory.mktemp("stale")
  mp = pytest.MonkeyPatch()
  try:
    summary, loop = run_capturing_the_loop(
      tiny_config(assets, workdir, **STALE), mp
    )
  finally:
    mp.undo()
  return workdir, summary, loop


def test_lockstep_on_own_devices_equals_one_mesh(assets, tmp_path, monkeypatch):
  one = train.run(
    tiny_config(assets, tmp_path / "one", train__steps=4, **UNIFORM)
  )
  split, loop = run_capturing_the_loop(
    tiny_config(assets, tmp_path / "split", train__steps=4, **APART, **UNIFORM),
    monkeypatch,
  )
  # Each role's arrays live on its own devices only.
  assert _devices(loop.state.params) == {0, 1, 2, 3}
  assert _devices(loop.session.params["teacher"]) == {4, 5}
  assert _devices(loop.pipeline.sampler_params) == {6, 7}
  assert _devices(loop.pipeline.teacher_head) == {0, 1, 2, 3}
  ref, got = exported(tmp_path / "one"), exported(tmp_path / "split")
  for key in ref:
    np.testing.assert_allclose(got[key], ref[key], rtol=1e-5, atol=1e-6)
  # The tracker: the same top ids with the same counts and losses.
  a, b = one["rock_tokens"], split["rock_tokens"]
  assert [r["id"] for r in a] == [r["id"] for r in b]
  assert [r["count"] for r in a] == [r["count"] for r in b]
  np.testing.assert_allclose(
    [r["mean_loss"] for r in b],
    [r["mean_loss"] for r in a],
    rtol=1e-5,
    atol=KL_ATOL,
  )
  np.testing.assert_allclose(
    _logged(tmp_path / "split", "kl/unweighted"),
    _logged(tmp_path / "one", "kl/unweighted"),
    rtol=1e-5,
    atol=KL_ATOL,
  )


def test_the_next_rollout_is_dispatched_before_the_update_is_awaited(stale):
  workdir, summary, loop = stale
  assert summary["steps"] == 6
  events = loop.pipeline.events
  for t in range(5):
    rollout = events.index(("rollout", t + 1))
    assert rollout < events.index(("update", t)), events
    assert rollout < events.index(("wait", t)), events
  # Stale samples are reweighted: the weights are logged, below the cap.
  weights = _logged(workdir, "importance/weight")
  assert weights and all(0 < w <= 2.0 for w in weights)


def test_a_stopped_stale_run_resumes_equal_to_an_uninterrupted_one(
  stale, assets, tmp_path, monkeypatch
):
  # A stop request after update 3 (off the checkpoint schedule): the forced
  # save holds step 4's batch, sampled ahead with older weights.
  reference, _, _ = stale
  monkeypatch.setattr(
    checkpoint.Checkpointer, "should_stop", lambda self, step: step == 3
  )
  stopped = train.run(tiny_config(assets, tmp_path, **STALE))
  assert stopped == {"steps": 3, "stopped": True}
  monkeypatch.undo()
  summary = train.run(tiny_config(assets, tmp_path, **STALE))
  assert summary["steps"] == 6
  ref, got = exported(reference), exported(tmp_path)
  for key in ref:
    np.testing.assert_allclose(got[key], ref[key], rtol=1e-5, atol=1e-6)


@pytest.mark.slow  # the stopped run above resumes from its batches in flight
def test_a_killed_stale_run_resumes_equal_to_an_uninterrupted_one(
  stale, assets, tmp_path
):
  reference, _, _ = stale
  overrides = {k.replace("__", "."): v for k, v in STALE.items()}
  proc, saved = start_and_wait_for_a_checkpoint(
    assets, 6, tmp_path, **overrides
  )
  proc.send_signal(signal.SIGKILL)
  _, err = proc.communicate(timeout=60)
  assert saved, err.decode()[-3000:]
  assert not (tmp_path / "summary.json").exists(), "finished before the kill"
  summary = train.run(tiny_config(assets, tmp_path, **STALE))
  assert summary["steps"] == 6
  ref, got = exported(reference), exported(tmp_path)
  for key in ref:
    np.testing.assert_allclose(got[key], ref[key], rtol=1e-5, atol=1e-6)


@pytest.mark.slow  # two processes; test_placement covers the staged moves
def test_two_processes_with_roles_apart_equal_one_process(
  stale, assets, tmp_path
):
  # Each process's local devices 0:2 train, 2:3 score, 3:4 sample: every
  # role spans both hosts, and arrays cross meshes through the hosts.
  reference, summary, _ = stale
  procs = launch_two_processes(
    assets,
    tmp_path,
    free_port(),
    **{
      "teacher.devices": "2:3",
      "rollout.devices": "3:4",
      "rollout.staleness": 1,
    },
  )
  outputs = [proc.communicate(timeout=600) for proc in procs]
  for proc, (_, err) in zip(procs, outputs, strict=True):
    assert proc.returncode == 0, err.decode()[-4000:]
  log = outputs[0][0].decode()
  assert "teacher mesh" in log and "[2]" in log, log
  ref, got = exported(reference), exported(tmp_path)
  for key in ref:
    np.testing.assert_allclose(got[key], ref[key], rtol=1e-5, atol=1e-6)
  mine = json.loads((tmp_path / "summary.json").read_text())["rock_tokens"]
  theirs = summary["rock_tokens"]
  assert [(r["id"], r["count"]) for r in mine] == [
    (r["id"], r["count"]) for r in theirs
  ]
