"""The progress record a checkpoint holds beside the train state."""

import pytest

from rock_jax.train.progress import Progress

# The JSON earlier checkpoints stored (the trainer's former `meta` dict).
STORED = {
  "loader": {"epoch": 1, "position": 96, "seed": 0},
  "teacher_accuracy": 0.9921875,
  "student_accuracy_before": 0.27734375,
  "evals": [[0, 0.27734375, 0.0], [50, 0.5, 12.5]],
  "control_ids": [3, 17, 40],
  "train_s": 30.25,
}


def test_a_stored_record_round_trips_unchanged():
  progress = Progress.from_json(STORED)
  assert progress.evals[1] == [50, 0.5, 12.5]
  assert progress.control_ids == [3, 17, 40]
  assert progress.to_json() == STORED


def test_a_fresh_run_stores_only_what_is_set():
  assert Progress.from_json(None) == Progress()
  assert Progress().to_json() == {"train_s": 0.0}
  progress = Progress(loader={"position": 8})
  assert progress.to_json() == {"loader": {"position": 8}, "train_s": 0.0}


def test_unknown_keys_are_named():
  with pytest.raises(ValueError, match=r"unknown keys \['lr'\]"):
    Progress.from_json({**STORED, "lr": 1e-3})
