"""One on-policy distillation step: teacher scoring, weighted KL, AdamW.

Legend: B batch, S student sequence (prompt P_s + completion N), U teacher
sequence (prompt P_t + the same completion), N completion length, D / E
student / teacher hidden, V vocab.

Prompts are left-padded to fixed widths and the completion follows them, so in
both sequences the completion is the last N columns, and hidden state column
P - 1 + t predicts completion token t. Teacher and student may see different
prompts (privileged information goes to the teacher only).
"""

from __future__ import annotations

import dataclasses
import functools

import flax.struct
import jax
import jax.numpy as jnp
import optax

from rock_jax import losses, models, rock
from rock_jax import sharding as shd
from rock_jax.models.config import ModelConfig
from rock_jax.train_state import TrainState


@flax.struct.dataclass
class OPDBatch:
  """Student rollouts, re-rendered for the teacher."""

  student_tokens_BxS: jax.Array
  student_mask_BxS: jax.Array
  teacher_tokens_BxU: jax.Array
  teacher_mask_BxU: jax.Array
  completion_mask_BxN: jax.Array

  @property
  def completion_BxN(self) -> jax.Array:
    return self.student_tokens_BxS[:, -self.completion_mask_BxN.shape[1] :]


@dataclasses.dataclass(frozen=True, kw_only=True)
class StepConfig:
  """Static settings of the step (hashable: part of the compiled program).

  Attributes:
    student, teacher: model configs (same vocabulary).
    kind, beta, temperature, kd_ratio, chunk_size: the per-token loss, as in
      `losses.chunked_token_divergence` (kd_ratio < 1 mixes in cross-entropy
      on the completion, Stage-1 KD).
    normalize: the `losses.reduce` normaliser.
    lam: weight of rock tokens (1 = uniform OPD, 0 = Rock-Freeze).
    align: "emitted" (weight keyed on the predicted token) or "context".
    rock_k, rock_min_count, rock_exclude_most_frequent, rock_max_improvement:
      `rock.rock_ids` (k, min_count, exclude_most_frequent, max_improvement).
    rock_source: "ema" or "total" statistics for the selection.
    warmup_steps, refresh_every: `rock.maybe_refresh` schedule.
  """

  student: ModelConfig
  teacher: ModelConfig
  kind: str = "reverse_kl"
  beta: float = 0.5
  temperature: float = 1.0
  kd_ratio: float = 1.0
  chunk_size: int = losses.DEFAULT_CHUNK_SIZE
  normalize: str = "tokens"
  lam: float = 1.0
  align: str = "emitted"
  rock_k: int = 100
  rock_min_count: int = 1
  rock_exclude_most_frequent: int = 0
  rock_max_improvement: float | None = None
  rock_source: str = "ema"
  warmup_steps: int = 0
  refresh_every: int = 0

  def __post_init__(self):
    if self.student.vocab_size != self.teacher.vocab_size:
      raise ValueError(
        f"student vocab_size={self.student.vocab_size} != teacher "
        f"vocab_size={self.teacher.vocab_size}: OPD compares full "
        "next-token distributions, so both must share one vocabulary"
      )
    if not 0 <= self.lam <= 1:
      raise ValueError(f"lam={self.lam} must be in [0, 1]")


@functools.partial(jax.jit, static_argnames=("width",))
def batch_from_rollout(
  tokens_BxL, completion_mask_BxL, s_tok, s_mask, t_tok, t_mask, *, width
) -> OPDBatch:
  """Both models' sequences around a sampled completion (the last `width`
  columns of a rollout), each after its own left-padded prompt."""
  completion = tokens_BxL[:, -width:]
  mask = completion_mask_BxL[:, -width:]
  return OPDBatch(
    student_tokens_BxS=jnp.concatenate([s_tok, completion], axis=1),
    student_mask_BxS=jnp.concatenate([s_mask, mask], axis=1),
    teacher_tokens_BxU=jnp.concatenate([t_tok, completion], axis=1),
    teacher_mask_BxU=jnp.concatenate([t_mask, mask], axis=1),
    completion_mask_BxN=mask,
  )


def completion_hidden(cfg, params, tokens, mask, n, sharder=None):
  """Final hidden states at the N positions that predict the completion."""
  hidden = models.hidden_states(
    cfg, params, tokens, attention_mask_BxL=mask, sharder=sharder
  )
  prompt_len = tokens.shape[1] - n
  return hidden[:, prompt_len - 1 : prompt_len - 1 + n]


def teacher_side(cfg: StepConfig, teacher_params, batch: OPDBatch, sharder):
  """The frozen teacher's completion hidden states and LM head."""
  n = batch.completion_mask_BxN.shape[1]
  hidden = completion_hidden(
    cfg.teacher,
    teacher_params,
    batch.teacher_tokens_BxU,
    batch.teacher_mask_BxU,
    n,
    sharder,
  )
  return jax.lax.stop_gradient(hidden), models.lm_head(
    cfg.teacher, teacher_params
  )


def per_token_loss(cfg: StepConfig, params, teacher, batch: OPDBatch, sharder):
  """The student's float32 per-token loss [B, N] against `teacher_side`."""
  n = batch.completion_mask_BxN.shape[1]
  hidden = completion_hidden(
    cfg.student,
    params,
    batch.student_tokens_BxS,
    batch.student_mask_BxS,
    n,
    sharder,
  )
  return losses.chunked_token_divergence(
    hidden,
    models.lm_head(cfg.student, params),
    *teacher,
    kind=cfg.kind,
    beta=cfg.beta,
    temperature=cfg.temperature,
    sampled_ids_BxT=batch.completion_BxN,
    kd_ratio=cfg.kd_ratio,
    chunk_size=cfg.chunk_size,
  )


def train_step(
  state: TrainState,
  teacher_params,
  batch: OPDBatch,
  fixed_rock_mask_V: jax.Array | None,
  *,
  cfg: StepConfig,
  optimizer: optax.GradientTransformation,
  student_sharder: shd.Sharder | None = None,
  teacher_sharder: shd.Sharder | None = None,
):
  """One OPD update; pure, so it can be jitted with the state donated.

  Args:
    state: the student's `TrainState`.
    teacher_params: frozen teacher parameters (never differentiated).
    batch: an `OPDBatch` of rollouts.
    fixed_rock_mask_V: bool [V] static rock set (e.g. a `rock.json` or a
      frequency-matched control), or None to select from the tracker.
    cfg, optimizer, student_sharder, teacher_sharder: static settings.

  Returns:
    `(new_state, metrics)`: metrics are (sum, count) float32 pairs.
  """
  mask_BxN = batch.completion_mask_BxN
  emitted_BxN = batch.completion_BxN
  teacher = teacher_side(cfg, teacher_params, batch, teacher_sharder)
  weights_BxN = rock.token_weights(
    state.rock, emitted_BxN, mask_BxN, lam=cfg.lam, align=cfg.align
  )

  def loss_fn(params):
    per_token_BxN = per_token_loss(cfg, params, teacher, batch, student_sharder)
    loss, metrics = losses.reduce(
      per_token_BxN, mask_BxN, weights_BxN, cfg.normalize
    )
    return loss, (per_token_BxN, metrics)

  grad_fn = jax.value_and_grad(loss_fn, has_aux=True)
  (_, (per_token_BxN, metrics)), grads = grad_fn(state.params)
  updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
  params = optax.apply_updates(state.params, updates)

  per_token_BxN = jax.lax.stop_gradient(per_token_BxN)
  tracker = rock.update(state.rock, emitted_BxN, per_token_BxN, mask_BxN)
  tracker = rock.maybe_refresh(
    tracker,
    warmup_steps=cfg.warmup_steps,
    refresh_every=0 if fixed_rock_mask_V is not None else cfg.refresh_every,
    fixed_mask_V=fixed_rock_mask_V,
    k=cfg.rock_k,
    min_count=cfg.rock_min_count,
    exclude_most_frequent=cfg.rock_exclude_most_frequent,
    max_improvement=cfg.rock_max_improvement,
    source=cfg.rock_source,
  )

  valid = mask_BxN.astype(jnp.float32)
  # Shares against the set that weighted this step (before the refresh).
  is_rock = state.rock.rock_mask_V[emitted_BxN].astype(jnp.float32) * valid
  kl = jnp.where(mask_BxN, per_token_BxN, 0.0)
  one = jnp.ones((), jnp.float32)
  metrics = dict(metrics)
  metrics.update(
    {
      "rock/token_share": (is_rock.sum(), valid.sum()),
      "rock/kl_share": ((kl * is_rock).sum(), kl.sum()),
      "rock/set_size": (state.rock.rock_mask_V.sum().astype(jnp.float32), one),
      "train/grad_norm": (optax.tree.norm(grads), one),
      "rollout/length": (valid.sum(), jnp.float32(mask_BxN.shape[0])),
    }
  )
  new_state = TrainState(
    step=state.step + 1, params=params, opt_state=opt_state, rock=tracker
  )
  return new_state, metrics


def make_train_step(
  cfg: StepConfig,
  optimizer: optax.GradientTransformation,
  *,
  state_shardings=None,
  teacher_shardings=None,
  batch_sharding=None,
  student_sharder: shd.Sharder | None = None,
  teacher_sharder: shd.Sharder | None = None,
):
  """`train_step` jitted with its statics bound and the state donated.

  Shardings default to whatever the arguments carry (None); pass them to pin
  the layout (the state's output sharding equals its input sharding, so the
  donated buffers are reused in place).
  """
  step = functools.partial(
    train_step,
    cfg=cfg,
    optimizer=optimizer,
    student_sharder=student_sharder,
    teacher_sharder=teacher_sharder,
  )
  if state_shardings is None:
    return jax.jit(step, donate_argnums=(0,))
  return jax.jit(
    step,
    donate_argnums=(0,),
    in_shardings=(state_shardings, teacher_shardings, batch_sharding, None),
    out_shardings=(state_shardings, None),
  )
