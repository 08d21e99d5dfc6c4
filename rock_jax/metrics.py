"""Host-side metrics: (sum, count) accumulation, NaN checks, logs, progress.

The train step returns metrics as `(sum, count)` pairs (token-weighted means)
and plain scalars; the loop pulls them to the host one step late, folds them
into an accumulator with `accumulate`, and at each log step reduces once with
`summarize` (`mean = sum / max(count, 1)`), checks them with `check_finite`
and hands them to a `MetricWriter` (JSONL + TensorBoard, process 0 only).
"""

from __future__ import annotations

import json
import logging
import math
import sys
import time
from typing import Any, Mapping

import jax
import numpy as np
import tqdm

from rock_jax import storage

_MODES = ("raise", "skip")


def _to_float(name: str, value: Any) -> float:
  array = np.asarray(value)
  if array.size != 1:
    raise TypeError(
      f"metric {name!r} must be a scalar or a (sum, count) pair of scalars, "
      f"got shape {array.shape}"
    )
  return float(array.reshape(()))


def accumulate(
  acc: Mapping[str, tuple[float, float]] | None, metrics: Mapping[str, Any]
) -> dict[str, tuple[float, float]]:
  """Adds one step's host metrics to an accumulator.

  Args:
    acc: the previous accumulator (None or {} to start).
    metrics: name -> `(sum, count)` pair or plain scalar (NumPy or Python
      numbers, e.g. after `jax.device_get`). A plain scalar counts as
      `(value, 1)`, so it summarises to its mean over the accumulated steps.

  Returns:
    A new accumulator, name -> `(sum, count)` as Python floats.
  """
  out = dict(acc or {})
  for name, value in metrics.items():
    if isinstance(value, (tuple, list)):
      if len(value) != 2:
        raise TypeError(
          f"metric {name!r} must be a (sum, count) pair, got {len(value)} items"
        )
      s, c = _to_float(name, value[0]), _to_float(name, value[1])
    else:
      s, c = _to_float(name, value), 1.0
    prev_s, prev_c = out.get(name, (0.0, 0.0))
    out[name] = (prev_s + s, prev_c + c)
  return out


def summarize(acc: Mapping[str, tuple[float, float]]) -> dict[str, float]:
  """Means of an accumulator: `sum / max(count, 1)` per metric."""
  # An all-masked metric (count 0) reads as 0, not as a division by zero.
  return {name: s / max(c, 1.0) for name, (s, c) in acc.items()}


def check_finite(
  values: Mapping[str, float],
  step_window: tuple[int, int],
  mode: str = "raise",
) -> list[str]:
  """Finds metrics that are NaN or infinite.

  Args:
    values: name -> float, e.g. `summarize(acc)`.
    step_window: `(first, last)` steps the values were accumulated over; a
      NaN in any step poisons the sum, so only the window is known.
    mode: "raise" raises; "skip" logs a warning and returns the names so the
      caller can drop them.

  Returns:
    The sorted names of non-finite metrics (empty if all are finite).

  Raises:
    FloatingPointError: in "raise" mode, naming the metrics and the window.
  """
  if mode not in _MODES:
    raise ValueError(f"mode={mode!r} is not one of {_MODES}")
  bad = sorted(k for k, v in values.items() if not math.isfinite(v))
  if bad:
    a, b = step_window
    message = (
      f"metrics became nan or inf somewhere within steps [{a}, {b}]: "
      + ", ".join(bad)
    )
    if mode == "raise":
      raise FloatingPointError(message)
    logging.warning("%s (skipped)", message)
  return bad


def _to_builtin(value: Any) -> Any:
  """`json` fallback for NumPy scalars and arrays."""
  if isinstance(value, (np.generic, np.ndarray)):
    return value.tolist()
  raise TypeError(f"{type(value).__name__} is not JSON serialisable: {value!r}")


def write_json(path: str, data: Mapping[str, Any]) -> None:
  """Writes `data` as JSON to a file or URL, all at once.

  A reader (or a crash) never sees a half-written file (`storage.write_text`).
  """
  text = json.dumps(data, indent=2, sort_keys=True, default=_to_builtin)
  storage.write_text(path, text + "\n")


def format_summary(step: int, values: Mapping[str, float]) -> str:
  """One line for humans: `step 120 | kl/weighted 0.0123 | loss 1.5`."""
  parts = [f"step {step}"]
  parts += [f"{k} {v:.4g}" for k, v in sorted(values.items())]
  return " | ".join(parts)


class _ObjectFile:
  """A file kept as an object, which cannot be appended to: the whole
  object is written at each flush that has something new. `data` is what
  the object already holds."""

  def __init__(self, path: str, data: bytes | None = None):
    self._path, self._data = path, bytearray(data or b"")
    self._written = -1 if data is None else len(self._data)

  def write(self, data: bytes) -> None:
    self._data += data

  def flush(self) -> None:
    if len(self._data) != self._written:
      storage.write_bytes(self._path, bytes(self._data))
      self._written = len(self._data)

  def close(self) -> None:
    self.flush()


class _Lines:
  """An append-only text file: a local file in append mode, or an object.

  For a URL the object is rewritten at most every `every_s` seconds and on
  close (a run killed in between loses only those seconds of lines, like
  TensorBoard's own buffered writer).
  """

  def __init__(self, path: str, every_s: float = 30.0):
    self._every_s = every_s
    if not storage.is_url(path):
      self._file = open(path, "a", encoding="utf-8")  # noqa: SIM115
      return
    existing = storage.read_bytes(path) if storage.exists(path) else None
    self._file = _ObjectFile(path, existing)
    self._flushed = time.monotonic()

  def append(self, line: str) -> None:
    if not isinstance(self._file, _ObjectFile):
      self._file.write(line)
      self._file.flush()
      return
    self._file.write(line.encode("utf-8"))
    if time.monotonic() - self._flushed >= self._every_s:
      self._file.flush()
      self._flushed = time.monotonic()

  def close(self) -> None:
    self._file.close()


class _EventObjects:
  """tensorboardX's writer factory for URLs, through `storage` (its own
  gs:// writer uploads again from `__del__`, at interpreter exit)."""

  def open(self, path: str) -> _ObjectFile:
    return _ObjectFile(path)

  def directory_check(self, path: str) -> None:
    del path  # Object stores need no folders.


class MetricWriter:
  """Appends scalars and text to `metrics.jsonl` and TensorBoard events.

  Only process 0 writes; elsewhere every method is a no-op and no file is
  created. A local JSONL file is opened in append mode and flushed per write
  (a `gs://` one is rewritten every 30 s and on close), so a resumed run
  continues it (steps after the last checkpoint may appear twice; the later
  line wins). TensorBoard events go to a new event file per writer in the
  same directory (or prefix), which TensorBoard merges.
  """

  def __init__(
    self,
    logdir: str,
    *,
    process_index: int | None = None,
    tensorboard: bool = True,
  ):
    """Opens the writers.

    Args:
      logdir: directory for `metrics.jsonl` and the event files.
      process_index: this process's index; defaults to
        `jax.process_index()`.
      tensorboard: also write TensorBoard event files (via tensorboardX,
        without TensorFlow).
    """
    if process_index is None:
      process_index = jax.process_index()
    self.active = process_index == 0
    self._jsonl = None
    self._tb = None
    if not self.active:
      return
    storage.makedirs(logdir)
    self._jsonl = _Lines(storage.join(logdir, "metrics.jsonl"))
    if tensorboard:
      # Imported here: tensorboardX imports torch when it is installed, which
      # processes other than 0 and users without TensorBoard need not pay.
      import tensorboardX
      from tensorboardX import record_writer

      if storage.is_url(logdir):
        scheme = logdir.partition("://")[0]
        record_writer.register_writer_factory(scheme, _EventObjects())

      # Event files are named by the second they were opened in; the suffix
      # stops a quick restart from truncating the previous writer's file.
      self._tb = tensorboardX.SummaryWriter(
        logdir, flush_secs=30, filename_suffix=f".{time.time_ns()}"
      )

  def write(
    self,
    step: int,
    scalars: Mapping[str, float] | None = None,
    texts: Mapping[str, str] | None = None,
  ) -> None:
    """Writes one step's scalars and text summaries as one JSONL object."""
    if not self.active:
      return
    scalars = {k: float(v) for k, v in (scalars or {}).items()}
    texts = dict(texts or {})
    overlap = scalars.keys() & texts.keys()
    if overlap or "step" in scalars or "step" in texts:
      raise ValueError(
        f"metric names must be unique and not 'step': {sorted(overlap)}"
      )
    record = {"step": int(step), **scalars, **texts}
    self._jsonl.append(json.dumps(record) + "\n")
    if self._tb is not None:
      for tag, value in scalars.items():
        self._tb.add_scalar(tag, value, step)
      # tensorboardX's writer flushes every flush_secs and on close: a flush
      # per write would fsync at every log (30 ms of host time per step at
      # log_every=1 on a 2-core CPU machine's disk).
      for tag, text in texts.items():
        self._tb.add_text(tag, text, step)

  def write_text(self, step: int, tag: str, text: str) -> None:
    """Writes one text summary (e.g. the decoded top Rock Tokens)."""
    self.write(step, texts={tag: text})

  def close(self) -> None:
    """Flushes and closes the files."""
    if self._jsonl is not None:
      self._jsonl.close()
      self._jsonl = None
    if self._tb is not None:
      self._tb.close()
      self._tb = None


class ProgressBar:
  """A tqdm bar with ETA and a few live metrics, on process 0 only.

  Hidden when stderr is not a terminal (CI logs stay clean) and on other
  processes.
  """

  def __init__(
    self,
    total: int,
    *,
    initial: int = 0,
    keys: tuple[str, ...] = (),
    process_index: int | None = None,
  ):
    """Creates the bar.

    Args:
      total: the last step.
      initial: the step training (re)starts from.
      keys: metric names shown beside the bar, in this order.
      process_index: defaults to `jax.process_index()`.
    """
    if process_index is None:
      process_index = jax.process_index()
    self.keys = tuple(keys)
    self._shown: dict[str, str] = {}
    self.active = process_index == 0
    # disable=None: tqdm turns itself off when stderr is not a TTY.
    self._bar = tqdm.tqdm(
      total=total,
      initial=initial,
      unit="step",
      dynamic_ncols=True,
      disable=None if process_index == 0 else True,
    )

  def update(self, step: int, values: Mapping[str, float] | None = None):
    """Moves the bar to `step` and shows the chosen metrics from `values`;
    a key absent from `values` keeps its last shown value."""
    if values:
      self._shown.update(
        {k: f"{values[k]:.4g}" for k in self.keys if k in values}
      )
      self._bar.set_postfix(
        {k: self._shown[k] for k in self.keys if k in self._shown},
        refresh=False,
      )
    self._bar.update(step - self._bar.n)

  def write(self, message: str) -> None:
    """Prints a line above the bar (process 0 only), without breaking it."""
    if self.active:
      tqdm.tqdm.write(message)
      sys.stdout.flush()

  def close(self) -> None:
    self._bar.close()
