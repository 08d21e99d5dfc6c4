"""The training loop end to end, on tiny random Hugging Face models.

The models, their tokenizer (with a ChatML template) and a GSM8K-format data
folder are written to disk and go through exactly the path the real presets
use: `configs/opd_rock.py` with `teacher.path` / `student.path` set.
"""

import json
import os
import re
import shutil
import signal
import threading
import time

import numpy as np
import pytest
import safetensors.numpy
import transformers
from process_helpers import (
  free_port,
  launch_two_processes,
  start_and_wait_for_a_checkpoint,
)
from run_helpers import (
  TINY_STUDENT,
  exported,
  tiny_config,
  write_gsm8k,
)

from rock_jax import rock, storage, train
from rock_jax.rock import snapshots


@pytest.fixture(scope="module")
def finished(assets, tmp_path_factory):
  """One uninterrupted 6-step run: the reference for the resume tests."""
  workdir = tmp_path_factory.mktemp("run")
  summary = train.run(tiny_config(assets, workdir, train__steps=6))
  return workdir, summary


def test_run_writes_summary_logs_and_a_loadable_export(finished, assets):
  workdir, summary = finished
  on_disk = json.loads((workdir / "summary.json").read_text())
  assert on_disk["steps"] == summary["steps"] == 6
  for key in (
    "teacher_accuracy",
    "student_accuracy_before",
    "student_accuracy_after",
    "wall_s",
    "rock_token_share",
    "rock_kl_share",
  ):
    assert 0 <= on_disk[key] <= (1 if "wall" not in key else 1e6), key
  assert on_disk["eval_problems"] == 8
  assert len(on_disk["rock_tokens"]) == 8
  # Refreshed every step: the table is the tracker's ranking at the end, the
  # weighted set its guarded selection then (opd_rock.py's default guards).
  state = snapshots.load(str(workdir / "tracker" / "step_0000006.npz"))
  rock_cfg = json.loads((workdir / "config.json").read_text())["rock"]
  ranking = rock.Selection(
    k=8, max_improvement=rock_cfg["max_improvement"], source=rock_cfg["source"]
  )
  assert [r["id"] for r in on_disk["rock_tokens"]] == [
    i for i in rock.rock_ids(state, ranking).tolist() if i >= 0
  ]
  guard = on_disk["rock_guard"]
  assert guard["answer_ids"] > 0  # GSM8K has reference answers
  assert (guard["min_loss_ratio"], guard["min_score_ratio"]) == (1.0, 0.01)
  weighted = np.asarray(on_disk["weighted_ids"], int)
  assert 0 < len(weighted) <= 8
  mean, score = rock.mean_loss(state), rock.rock_score(state)
  assert (mean[weighted] >= rock.mean_loss_all(state)).all()
  assert (score[weighted] >= 0.01 * score.max()).all()
  row = on_disk["rock_tokens"][0]
  assert set(row) == {"id", "text", "count", "mean_loss", "R"}
  scores = [r["R"] for r in on_disk["rock_tokens"]]
  assert scores == sorted(scores, reverse=True) and scores[-1] > 0
  assert all(
    r["count"] >= 1 and r["mean_loss"] > 0 for r in on_disk["rock_tokens"]
  )
  # No ground truth outside the embedded task.
  assert "detection_precision" not in on_disk

  lines = [json.loads(x) for x in open(workdir / "logs" / "metrics.jsonl")]
  logged = {k for line in lines for k in line}
  for key in (
    "kl/weighted",
    "kl/unweighted",
    "rock/token_share",
    "rock/kl_share",
    "rock/top_tokens",
    "train/grad_norm",
    "train/clipped",
    "rollout/length",
    "perf/tokens_per_s",
    "eval/accuracy",
  ):
    assert key in logged, key
  assert [x["step"] for x in lines if "kl/unweighted" in x] == [2, 4, 6]
  assert any(
    p.name.startswith("events.out") for p in (workdir / "logs").iterdir()
  )

  # The export is a Hugging Face folder transformers loads, tokenizer too.
  export = workdir / "export"
  model = transformers.AutoModelForCausalLM.from_pretrained(export)
  assert model.config.hidden_size == TINY_STUDENT["hidden_size"]
  assert transformers.AutoTokenizer.from_pretrained(export).eos_token_id == 2
  before = safetensors.numpy.load_file(
    os.path.join(assets["student"], "model.safetensors")
  )
  after = exported(workdir)
  assert set(after) == set(before)
  assert any(not np.allclose(after[k], before[k]) for k in after)


def test_rerun_of_a_finished_run_trains_no_further(finished, assets):
  workdir, summary = finished
  before = exported(workdir)
  logged = (workdir / "logs" / "metrics.jsonl").read_text().count("kl/")
  again = train.run(tiny_config(assets, workdir, train__steps=6))
  assert again["steps"] == 6
  for key in ("teacher_accuracy", "student_accuracy_before"):
    assert again[key] == summary[key]
  assert (workdir / "logs" / "metrics.jsonl").read_text().count("kl/") == logged
  after = exported(workdir)
  for key in before:
    np.testing.assert_array_equal(after[key], before[key])


@pytest.mark.slow  # the two-process test kills and re-runs as well
def test_kill_minus_nine_then_rerun_matches_uninterrupted(
  finished, assets, tmp_path
):
  reference, _ = finished
  proc, saved = start_and_wait_for_a_checkpoint(assets, 6, tmp_path)
  proc.send_signal(signal.SIGKILL)
  _, err = proc.communicate(timeout=60)
  assert saved, err.decode()[-3000:]
  assert not (tmp_path / "summary.json").exists(), "finished before the kill"
  summary = train.run(tiny_config(assets, tmp_path, train__steps=6))
  assert summary["steps"] == 6
  ref, got = exported(reference), exported(tmp_path)
  for key in ref:
    np.testing.assert_allclose(got[key], ref[key], rtol=1e-5, atol=1e-6)


def test_sigterm_saves_and_exits_cleanly(assets, tmp_path):
  # A preemption's SIGTERM, sent to this process once step 2 is saved.
  first = tmp_path / "checkpoints" / "2"

  def terminate_after_the_first_checkpoint():
    deadline = time.time() + 240
    while not first.exists() and time.time() < deadline:
      time.sleep(0.05)
    os.kill(os.getpid(), signal.SIGTERM)

  threading.Thread(target=terminate_after_the_first_checkpoint).start()
  summary = train.run(tiny_config(assets, tmp_path, train__steps=400))
  assert summary["stopped"]
  steps = sorted(int(p.name) for p in (tmp_path / "checkpoints").iterdir())
  assert 2 < steps[-1] == summary["steps"] < 400  # saved where it stopped
  assert not (tmp_path / "summary.json").exists()


def test_kd_stage_with_a_moe_teacher_and_a_control_set(assets, tmp_path):
  # Stage 1 (the teacher samples, forward KL + CE) with the MoE teacher,
  # then Stage 2 with the frequency-matched control and a static list.
  config = tiny_config(
    assets,
    tmp_path / "kd",
    name="kd_offpolicy.py",
    train__steps=2,
    teacher__path=assets["moe_teacher"],
  )
  assert config.stage == "kd" and config.loss.kd_ratio == 0.5
  summary = train.run(config)
  assert summary["steps"] == 2
  config = tiny_config(
    assets,
    tmp_path / "control",
    train__steps=3,
    teacher__path=assets["moe_teacher"],
    student__path=summary["export"],
    rock__control="frequency_matched",
    rock__refresh_every=0,
  )
  summary = train.run(config)
  assert summary["steps"] == 3
  assert len(summary["control_ids"]) == config.rock.k
  assert summary["weighted_ids"] == summary["control_ids"]
  log = [json.loads(x) for x in open(tmp_path / "control/logs/metrics.jsonl")]
  sizes = [x["rock/set_size"] for x in log if "rock/set_size" in x]
  assert sizes[-1] == config.rock.k  # the control set is what is weighted


def test_bad_inputs_fail_before_training_with_clear_errors(assets, tmp_path):
  config = tiny_config(
    assets, tmp_path / "a", student__path=assets["wide_student"]
  )
  with pytest.raises(ValueError, match=r"teacher vocab_size=337 .* != student"):
    train.run(config)
  config = tiny_config(assets, tmp_path / "b", data__student_prompt_len=32)
  with pytest.raises(
    ValueError,
    match=r"the longest student prompt has (\d+) tokens: raise "
    r"data.student_prompt_len \(now 32\) to at least \1, set it to 0",
  ):
    train.run(config)
  empty = tmp_path / "empty"
  write_gsm8k(empty, {"train": 0, "test": 8})
  config = tiny_config(assets, tmp_path / "c", data__options=f"source={empty}")
  with pytest.raises(ValueError, match=r"train.jsonl: the .train. split has"):
    train.run(config)
  config = tiny_config(assets, tmp_path / "d", teacher__path=str(tmp_path))
  with pytest.raises(FileNotFoundError, match=r"teacher.path=.*no config.json"):
    train.run(config)
  # A model with its own vocabulary and no dataset: the data would still be
  # the embedded task; nothing is prepared before the error.
  other = tmp_path / "other_teacher"
  shutil.copytree(assets["teacher"], other)
  tokenizer = transformers.AutoTokenizer.from_pretrained(other)
  tokenizer.add_tokens(["<extra>"])
  tokenizer.save_pretrained(other)
  config = tiny_config(
    assets,
    tmp_path / "e",
    teacher__path=str(other),
    data__name="embedded",
    data__options="",
    embedded__cache_dir=str(tmp_path / "cache"),
  )
  with pytest.raises(
    ValueError,
    match=r"teacher.path='.*other_teacher' with data.name='embedded': the "
    r"data is still the embedded task \(the default\), but the teacher's "
    r"vocabulary \(338 ids\) is not the task's \(337\); set data.name",
  ):
    train.run(config)
  assert not (tmp_path / "cache").exists()
  assert not (tmp_path / "a" / "checkpoints").exists()


def test_any_prompt_width_and_completions_at_every_evaluation(
  assets, tmp_path, capsys
):
  # The student's width is measured from the data (0), the teacher's is not
  # a bucket (50 accepts prompts up to 50 tokens, padded to 64). With
  # eval_every equal to steps, completions are still logged before the
  # first step and at the end.
  config = tiny_config(
    assets,
    tmp_path,
    train__steps=2,
    train__eval_every=2,
    data__student_prompt_len=0,
    data__teacher_prompt_len=50,
  )
  assert train.run(config)["steps"] == 2
  assert re.search(
    r"data.student_prompt_len=0: measured 64 \(the longest student prompt, "
    r"'[^']+' of split '\w+', has 47 tokens; arrays are 64 wide\)",
    capsys.readouterr().out,
  )
  lines = [json.loads(x) for x in open(tmp_path / "logs" / "metrics.jsonl")]
  samples = {x["step"]: x["eval/samples"] for x in lines if "eval/samples" in x}
  assert sorted(samples) == [0, 2]
  for text in samples.values():
    graded = re.findall(r"^(OK|WRONG): '.*' -> '.*'$", text, re.M)
    assert len(graded) == config.train.log_samples
  assert [x["step"] for x in lines if "eval/teacher_samples" in x] == [0]
  events = b"".join(
    p.read_bytes()
    for p in (tmp_path / "logs").iterdir()
    if p.name.startswith("events.out")
  )
  assert events.count(b"eval/samples") == 2
  config.data.teacher_prompt_len = 40
  with pytest.raises(
    ValueError, match=r"the longest teacher prompt has 47 tokens: raise"
  ):
    train.run(config)


# A few OPD steps of the embedded task's data with the tiny models.
EMBEDDED = {
  "data.name": "embedded",
  "data.options": "",
  "data.student_prompt_len": 32,
  "data.teacher_prompt_len": 32,
  "embedded.train_size": 64,
  "embedded.test_size": 16,
}


@pytest.fixture(scope="module")
def embedded_run(assets, tmp_path_factory):
  """Six steps on the embedded task's data with the tiny models' folders
  (e.g. a Stage-1 export as the student)."""
  workdir = tmp_path_factory.mktemp("embedded")
  overrides = {k.replace(".", "__"): v for k, v in EMBEDDED.items()}
  summary = train.run(tiny_config(assets, workdir, train__steps=6, **overrides))
  return workdir, summary


def test_own_model_folders_on_the_embedded_task_report_detection(
  embedded_run,
):
  # The planted ground truth is still known, so the summary scores the
  # detection.
  _, summary = embedded_run
  assert 0 <= summary["detection_precision"] <= 1
  assert 0 <= summary["detection_recall"] <= 1
  assert summary["eval_problems"] == 8


def test_two_processes_all_on_gs_killed_and_rerun_equal_one_of_eight(
  finished, assets, gcs, tmp_path, monkeypatch
):
  # Two JAX processes (gloo collectives) and no shared disk: the work
  # directory, data directory, both models and the JSONL source are in a
  # bucket (a GCS API server on loopback). Process 0 prepares the data
  # there, the other reads it; each reads only its half of every batch and
  # writes its own checkpoint shards. Killed together with SIGKILL after the
  # first checkpoint, then re-run, they end with the parameters and tracker
  # of the uninterrupted 1 x 8 run on local disk.
  reference, summary = finished
  monkeypatch.setenv("ROCK_JAX_CACHE", str(tmp_path / "host_cache"))
  for name in ("teacher", "student", "gsm8k"):
    storage.upload(assets[name], storage.join(gcs, name))
  in_bucket = {
    "teacher.path": storage.join(gcs, "teacher"),
    "student.path": storage.join(gcs, "student"),
    "data.options": f"source={storage.join(gcs, 'gsm8k')}",
    "data.data_dir": storage.join(gcs, "data"),
  }
  workdir = storage.join(gcs, "run")
  procs = launch_two_processes(assets, workdir, free_port(), **in_bucket)
  # Cloud Storage has no rename: orbax marks a finished step last.
  first = storage.join(workdir, "checkpoints", "2", "commit_success.txt")
  deadline = time.time() + 300
  while not storage.exists(first) and time.time() < deadline:
    assert all(p.poll() is None for p in procs), procs[0].stderr.read()[-3000:]
    time.sleep(0.1)
  for proc in procs:
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=60)
  assert not storage.exists(storage.join(workdir, "summary.json"))
  assert storage.glob(gcs, "data/*/*/*/dataset_info.json")

  procs = launch_two_processes(assets, workdir, free_port(), **in_bucket)
  outputs = [proc.communicate(timeout=600) for proc in procs]
  for proc, (_, err) in zip(procs, outputs, strict=True):
    assert proc.returncode == 0, err.decode()[-4000:]
  assert "over 8 cpu devices, 2 processes" in outputs[0][0].decode()
  assert "resumed from step" in outputs[0][0].decode()
  on_disk = json.loads(storage.read_text(storage.join(workdir, "summary.json")))
  for key in ("student_accuracy_before", "student_accuracy_after"):
    assert on_disk[key] == summary[key]
  # The tracker's per-token statistics cover both processes' tokens.
  mine, theirs = on_disk["rock_tokens"], summary["rock_tokens"]
  assert [(r["id"], r["count"]) for r in mine] == [
    (r["id"], r["count"]) for r in theirs
  ]
  np.testing.assert_allclose(
    [r["R"] for r in mine], [r["R"] for r in theirs], rtol=1e-5
  )
  export = storage.join(workdir, "export")
  got = safetensors.numpy.load(
    storage.read_bytes(storage.join(export, "model.safetensors"))
  )
  ref = exported(reference)
  for key in ref:
    np.testing.assert_allclose(got[key], ref[key], rtol=1e-5, atol=1e-6)
  # Copied down, the bucket's export loads with transformers.
  local = tmp_path / "export"
  shutil.copytree(storage.mirror(export, tmp_path / "down"), local)
  model = transformers.AutoModelForCausalLM.from_pretrained(local)
  assert model.config.hidden_size == TINY_STUDENT["hidden_size"]
  assert transformers.AutoTokenizer.from_pretrained(local).eos_token_id == 2
  logged = storage.read_text(storage.join(workdir, "logs", "metrics.jsonl"))
  assert '"kl/unweighted"' in logged
  for pattern in ("config.json", "logs/events.out*", "tracker/step_*.npz"):
    assert storage.glob(workdir, pattern), pattern


def test_nonfinite_loss_stops_or_is_skipped(assets, tmp_path):
  # A teacher with a NaN weight makes every loss and gradient NaN.
  broken = tmp_path / "broken_teacher"
  shutil.copytree(assets["teacher"], broken)
  weights = safetensors.numpy.load_file(broken / "model.safetensors")
  weights["model.norm.weight"][:] = np.nan
  safetensors.numpy.save_file(
    weights, broken / "model.safetensors", metadata={"format": "pt"}
  )
  config = tiny_config(assets, tmp_path / "raise", teacher__path=str(broken))
  with pytest.raises(FloatingPointError, match=r"within steps \[1, 2\]"):
    train.run(config)
  config = tiny_config(
    assets,
    tmp_path / "skip",
    teacher__path=str(broken),
    train__nonfinite="skip",
  )
  assert train.run(config)["steps"] == 4
  before = safetensors.numpy.load_file(
    os.path.join(assets["student"], "model.safetensors")
  )
  after = exported(tmp_path / "skip")
  for key in before:  # every update was dropped
    np.testing.assert_array_equal(after[key], before[key])
