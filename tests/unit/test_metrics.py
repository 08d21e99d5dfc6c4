"""Tests for rock_jax.metrics: reduction, NaN checks, writers, progress."""

import glob
import json
import os
import struct

import jax
import numpy as np
import pytest

from rock_jax import metrics, storage


def read_events(logdir):
  """Parses every TFRecord event file in `logdir`, checking both CRCs."""
  from tensorboardX.crc32c import crc32c
  from tensorboardX.proto import event_pb2

  def masked(data):
    crc = crc32c(data)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF

  events = []
  for path in sorted(glob.glob(os.path.join(logdir, "events.out.tfevents.*"))):
    with open(path, "rb") as f:
      data = f.read()
    pos = 0
    while pos < len(data):
      header = data[pos : pos + 8]
      (length,) = struct.unpack("<Q", header)
      (header_crc,) = struct.unpack("<I", data[pos + 8 : pos + 12])
      assert header_crc == masked(header), path
      body = data[pos + 12 : pos + 12 + length]
      (body_crc,) = struct.unpack(
        "<I", data[pos + 12 + length : pos + 16 + length]
      )
      assert body_crc == masked(body), path
      events.append(event_pb2.Event.FromString(body))
      pos += 16 + length
  return events


def test_accumulate_and_summarize_weight_by_count():
  acc = metrics.accumulate(
    None,
    {"kl/weighted": (np.float32(3.0), np.float32(2.0)), "lr": 1e-3},
  )
  acc = metrics.accumulate(
    acc,
    {"kl/weighted": (np.array(1.0), np.array(2.0)), "lr": np.float32(3e-3)},
  )
  acc = metrics.accumulate(acc, {"kl/empty": (0.0, 0.0)})
  means = metrics.summarize(acc)
  assert means["kl/weighted"] == pytest.approx(4.0 / 4.0)
  assert means["lr"] == pytest.approx(2e-3)
  # Fully masked: the clipped denominator gives 0, not a division error.
  assert means["kl/empty"] == 0.0


def test_accumulate_takes_device_metrics_after_device_get():
  step_metrics = {"loss/total": (jax.numpy.array(6.0), jax.numpy.array(3.0))}
  acc = metrics.accumulate({}, jax.device_get(step_metrics))
  assert metrics.summarize(acc) == {"loss/total": 2.0}


def test_accumulate_rejects_non_scalars_by_name():
  with pytest.raises(TypeError, match=r"'kl/x'.*shape \(3,\)"):
    metrics.accumulate(None, {"kl/x": np.zeros(3)})
  with pytest.raises(TypeError, match=r"'kl/y'.*pair, got 3 items"):
    metrics.accumulate(None, {"kl/y": (1.0, 2.0, 3.0)})


def test_check_finite_raises_with_names_and_window():
  values = {"loss": float("nan"), "grad_norm": float("inf"), "kl": 0.5}
  with pytest.raises(
    FloatingPointError,
    match=r"became nan or inf somewhere within steps \[10, 20\]: "
    r"grad_norm, loss$",
  ):
    metrics.check_finite(values, (10, 20))
  assert metrics.check_finite(values, (10, 20), mode="skip") == [
    "grad_norm",
    "loss",
  ]
  assert metrics.check_finite({"kl": 0.5}, (1, 2)) == []
  with pytest.raises(ValueError, match="mode='warn'"):
    metrics.check_finite(values, (1, 2), mode="warn")


def test_writer_jsonl_and_tensorboard_scalars_and_text(tmp_path):
  writer = metrics.MetricWriter(str(tmp_path), process_index=0)
  writer.write(1, {"kl/weighted": 0.5, "loss": np.float32(2.0)})
  writer.write_text(1, "rock/top", "$ | ** | \\n")
  writer.close()
  # A resumed run appends to the same file.
  writer = metrics.MetricWriter(str(tmp_path), process_index=0)
  writer.write(2, {"kl/weighted": 0.25}, texts={"note": "resumed"})
  writer.close()

  with open(tmp_path / "metrics.jsonl") as f:
    lines = [json.loads(line) for line in f]
  assert lines == [
    {"step": 1, "kl/weighted": 0.5, "loss": 2.0},
    {"step": 1, "rock/top": "$ | ** | \\n"},
    {"step": 2, "kl/weighted": 0.25, "note": "resumed"},
  ]

  scalars, texts = {}, {}
  for event in read_events(tmp_path):
    for value in event.summary.value:
      if value.HasField("tensor"):
        texts[(event.step, value.tag)] = value.tensor.string_val[0].decode()
      else:
        scalars[(event.step, value.tag)] = value.simple_value
  assert scalars == {
    (1, "kl/weighted"): 0.5,
    (1, "loss"): 2.0,
    (2, "kl/weighted"): 0.25,
  }
  # tensorboardX files text under "<tag>/text_summary".
  assert texts == {
    (1, "rock/top/text_summary"): "$ | ** | \\n",
    (2, "note/text_summary"): "resumed",
  }


def test_writer_is_a_no_op_off_process_zero(tmp_path):
  writer = metrics.MetricWriter(str(tmp_path / "logs"), process_index=1)
  writer.write(1, {"loss": 1.0})
  writer.write_text(1, "t", "x")
  writer.close()
  assert not (tmp_path / "logs").exists()


def test_writer_rejects_clashing_names(tmp_path):
  writer = metrics.MetricWriter(
    str(tmp_path), process_index=0, tensorboard=False
  )
  with pytest.raises(ValueError, match=r"\['a'\]"):
    writer.write(1, {"a": 1.0}, texts={"a": "x"})
  writer.close()


def test_write_json_is_atomic_and_handles_numpy(tmp_path):
  path = tmp_path / "summary.json"
  metrics.write_json(str(path), {"final/kl": np.float32(0.5), "steps": 3})
  metrics.write_json(str(path), {"final/kl": 0.25, "ids": np.arange(2)})
  assert json.loads(path.read_text()) == {"final/kl": 0.25, "ids": [0, 1]}
  assert os.listdir(tmp_path) == ["summary.json"]
  with pytest.raises(TypeError, match="object is not JSON serialisable"):
    metrics.write_json(str(path), {"bad": object()})
  assert json.loads(path.read_text()) == {"final/kl": 0.25, "ids": [0, 1]}
  assert os.listdir(tmp_path) == ["summary.json"]


def test_format_summary():
  line = metrics.format_summary(12, {"loss": 1.23456, "kl/weighted": 0.5})
  assert line == "step 12 | kl/weighted 0.5 | loss 1.235"


def test_progress_bar_runs_without_a_tty(capsys):
  bar = metrics.ProgressBar(10, initial=2, keys=("loss",), process_index=0)
  for step in range(3, 11):
    bar.update(step, {"loss": 1.0 / step, "other": 0.0})
  bar.close()
  off = metrics.ProgressBar(10, process_index=1)
  off.update(5, {"loss": 1.0})
  off.close()
  # pytest's captured stderr is not a TTY: the bars stay silent.
  assert capsys.readouterr().err == ""


def test_progress_bar_keeps_last_values_and_writes_above_it(capsys):
  bar = metrics.ProgressBar(10, keys=("a", "b"), process_index=0)
  bar.update(1, {"a": 1.0, "b": 2.0})
  bar.update(2, {"a": 3.0})
  assert bar._bar.postfix == "a=3, b=2"
  bar.write("step 2: fine")
  bar.close()
  assert "step 2: fine" in capsys.readouterr().out
  quiet = metrics.ProgressBar(10, process_index=1)
  quiet.write("not on process 1")
  quiet.close()
  assert "not on process 1" not in capsys.readouterr().out


def test_writer_in_a_bucket_continues_its_jsonl_and_writes_events(gcs):
  logdir = storage.join(gcs, "logs")
  writer = metrics.MetricWriter(logdir, process_index=0)
  writer.write(1, {"loss": 2.0})
  writer.close()
  writer = metrics.MetricWriter(logdir, process_index=0)  # A resumed run.
  writer.write(2, {"loss": 1.0}, {"note": "hi"})
  writer.close()
  lines = storage.read_text(storage.join(logdir, "metrics.jsonl")).splitlines()
  assert [json.loads(x) for x in lines] == [
    {"step": 1, "loss": 2.0},
    {"step": 2, "loss": 1.0, "note": "hi"},
  ]
  events = storage.glob(logdir, "events.out*")
  assert len(events) == 2 and all(storage.read_bytes(e) for e in events)
