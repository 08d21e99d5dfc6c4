"""On-policy distillation's step: batches, the jitted update, its state.

Modules:
  batch        `OPDBatch` (both models' sequences around one completion),
               `TeacherScores`, `batch_from_rollout`
  optim        clipping + AdamW + warm-up/cosine schedule
  train_state  `TrainState`: student parameters, optimizer state, tracker
  train_step   `StepConfig`, teacher scoring, the jitted step
"""

from rock_jax.opd import batch, optim, train_state, train_step
from rock_jax.opd.batch import OPDBatch, TeacherScores, batch_from_rollout
from rock_jax.opd.train_state import TrainState
from rock_jax.opd.train_step import StepConfig, make_train_step

__all__ = [
  "OPDBatch",
  "StepConfig",
  "TeacherScores",
  "TrainState",
  "batch",
  "batch_from_rollout",
  "make_train_step",
  "optim",
  "train_state",
  "train_step",
]
