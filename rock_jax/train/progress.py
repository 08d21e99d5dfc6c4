"""`Progress`: what a run carries beside its train state, checkpointed as
JSON next to it (the data position, the evaluations so far, the control
set, the training time), so a resumed run continues where it stopped."""

from __future__ import annotations

import dataclasses
from typing import Any


@dataclasses.dataclass
class Progress:
  """The run's record; its JSON keys are those of earlier checkpoints.

  Attributes:
    loader: the data loader's position (`loader.Loader.state`).
    teacher_accuracy: greedy accuracy of the teacher, evaluated once.
    student_accuracy_before: the student's, before the first step.
    evals: `[step, accuracy, training seconds]` of every evaluation.
    control_ids: the frequency-matched control set, once drawn.
    train_s: seconds spent in the training loop, over every resume.
  """

  loader: dict[str, Any] | None = None
  teacher_accuracy: float | None = None
  student_accuracy_before: float | None = None
  evals: list[list[float]] = dataclasses.field(default_factory=list)
  control_ids: list[int] | None = None
  train_s: float = 0.0

  def to_json(self) -> dict[str, Any]:
    """The checkpoint's JSON: fields not yet set are left out."""
    out = dataclasses.asdict(self)
    return {k: v for k, v in out.items() if v is not None and v != []}

  @classmethod
  def from_json(cls, data: dict[str, Any] | None) -> Progress:
    """The record of a checkpoint's JSON (empty: a fresh run)."""
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data or {}) - known)
    if unknown:
      raise ValueError(
        f"checkpoint progress has unknown keys {unknown}; expected some of "
        f"{sorted(known)} (a checkpoint of another rock_jax version?)"
      )
    return cls(**(data or {}))
