"""The student optimizer: global-norm clipping, AdamW, warm-up + cosine."""

from __future__ import annotations

import optax


def learning_rate_schedule(
  *, learning_rate: float, total_steps: int, warmup_steps: int, min_lr: float
) -> optax.Schedule:
  """Linear warm-up from 0 to `learning_rate`, then cosine decay to `min_lr`."""
  if total_steps < 1:
    raise ValueError(f"total_steps={total_steps} must be >= 1")
  if not 0 <= warmup_steps <= total_steps:
    raise ValueError(
      f"warmup_steps={warmup_steps} must be in [0, total_steps={total_steps}]"
    )
  if not 0 <= min_lr <= learning_rate:
    raise ValueError(
      f"min_lr={min_lr} must be in [0, learning_rate={learning_rate}]"
    )
  if warmup_steps == total_steps:
    # No steps left to decay over (optax's cosine needs at least one).
    return optax.linear_schedule(0.0, learning_rate, warmup_steps)
  return optax.warmup_cosine_decay_schedule(
    init_value=0.0,
    peak_value=learning_rate,
    warmup_steps=warmup_steps,
    decay_steps=total_steps,
    end_value=min_lr,
  )


def make_optimizer(
  *,
  learning_rate: float,
  total_steps: int,
  warmup_steps: int = 0,
  min_lr: float = 0.0,
  b1: float = 0.9,
  b2: float = 0.98,
  weight_decay: float = 0.0,
  clip_norm: float = 1.0,
) -> optax.GradientTransformation:
  """AdamW behind global-norm clipping (`clip_norm` <= 0 disables clipping).

  Defaults follow the paper's training stack (KDFlow): betas (0.9, 0.98), no
  weight decay, max grad norm 1.0.
  """
  schedule = learning_rate_schedule(
    learning_rate=learning_rate,
    total_steps=total_steps,
    warmup_steps=warmup_steps,
    min_lr=min_lr,
  )
  adamw = optax.adamw(schedule, b1=b1, b2=b2, weight_decay=weight_decay)
  if clip_norm <= 0:
    return adamw
  return optax.chain(optax.clip_by_global_norm(clip_norm), adamw)
