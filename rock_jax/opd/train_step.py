"""One on-policy distillation step: teacher scoring, weighted KL, AdamW.

Legend: B batch, N completion length, D / E student / teacher hidden, V
vocab. Hidden state column P - 1 + t of a role's sequence predicts
completion token t (`batch.OPDBatch`).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from rock_jax import losses, models, rock
from rock_jax import sharding as shd
from rock_jax.models import lora
from rock_jax.models.config import ModelConfig
from rock_jax.opd import cross
from rock_jax.opd.batch import OPDBatch, TeacherScores
from rock_jax.opd.train_state import TrainState


class Sharders(NamedTuple):
  """The student's and the teacher's layouts (hashable: a static argument)."""

  student: shd.Sharder | None = None
  teacher: shd.Sharder | None = None


def check_vocab(
  student: ModelConfig,
  teacher: ModelConfig,
  *,
  student_path: str = "",
  teacher_path: str = "",
) -> None:
  """Raises unless both models predict over one vocabulary (OPD compares
  the full next-token distributions id by id); names the folders if given."""
  if student.vocab_size != teacher.vocab_size:
    where = {
      role: f" ({path})" if path else ""
      for role, path in (("student", student_path), ("teacher", teacher_path))
    }
    raise ValueError(
      f"teacher vocab_size={teacher.vocab_size}{where['teacher']} != student "
      f"vocab_size={student.vocab_size}{where['student']}: OPD compares the "
      "full next-token distributions, so both must share one vocabulary"
    )


@dataclasses.dataclass(frozen=True, kw_only=True)
class StepConfig:
  """Static settings of the step (hashable: part of the compiled program).

  Attributes:
    student, teacher: model configs (one vocabulary unless cross_tokenizer).
    kind, beta, temperature, kd_ratio, chunk_size: the per-token loss, as in
      `losses.chunked_token_divergence` (kd_ratio < 1 mixes in cross-entropy
      on the completion, Stage-1 KD).
    normalize: the `losses.reduce` normaliser.
    importance_cap: truncation c of the per-position importance weights
      min(c, p_current(x) / p_sampler(x)) for samples from a sampler whose
      weights lag the student's; None: fresh samples, no weights.
    rock: the Rock-Token weighting (λ, selection, refresh schedule).
    micro_batch_size: sequences per forward/backward (teacher scoring
      included); 0: the whole batch at once. Gradients are accumulated over
      the micro-batches, so the update is the full batch's.
    clip_norm: the optimizer's global-norm clip (`optim.clip_norm`), read
      only for the `train/clipped` metric (the share of steps whose gradient
      it scaled down); <= 0: no clipping.
    cross_tokenizer: the teacher reads its own tokenisation of each
      completion (`batch.with_teacher_tokens`, `opd.cross`).
    seed: the run's seed, for the adapters' dropout masks (folded with the
      step and the micro-batch).
  """

  student: ModelConfig
  teacher: ModelConfig
  kind: str = "reverse_kl"
  beta: float = 0.5
  temperature: float = 1.0
  kd_ratio: float = 1.0
  chunk_size: int = losses.DEFAULT_CHUNK_SIZE
  normalize: str = "tokens"
  importance_cap: float | None = None
  rock: rock.Policy = rock.Policy()
  micro_batch_size: int = 0
  clip_norm: float = 0.0
  cross_tokenizer: bool = False
  seed: int = 0

  def __post_init__(self):
    if self.cross_tokenizer:
      cross.check_loss(self.kind, self.temperature, self.kd_ratio)
    else:
      check_vocab(self.student, self.teacher)
    if self.micro_batch_size < 0:
      raise ValueError(
        f"micro_batch_size={self.micro_batch_size} must be >= 0 (0: the "
        "whole batch at once)"
      )

  def micro_batches(self, batch_size: int) -> int:
    """How many micro-batches a batch of `batch_size` sequences is run as."""
    size = self.micro_batch_size or batch_size
    if batch_size % size:
      raise ValueError(
        f"micro_batch_size={size} does not divide the step's {batch_size} "
        f"sequences; use a divisor of {batch_size}"
      )
    return batch_size // size


def completion_hidden(
  cfg, params, tokens, mask, n, sharder=None, dropout_rng=None
):
  """Final hidden states at the N positions that predict the completion."""
  hidden = models.hidden_states(
    cfg,
    params,
    tokens,
    attention_mask_BxL=mask,
    sharder=sharder,
    dropout_rng=dropout_rng,
  )
  prompt_len = tokens.shape[1] - n
  return hidden[:, prompt_len - 1 : prompt_len - 1 + n]


def teacher_side(cfg: StepConfig, teacher_params, batch: OPDBatch, sharder):
  """The frozen teacher's completion hidden states and LM head (across
  tokenizers, over its own M completion tokens)."""
  n = batch.teacher_width
  tokens, mask = batch.sequence("teacher")
  hidden = completion_hidden(
    cfg.teacher, teacher_params, tokens, mask, n, sharder
  )
  head = models.lm_head(cfg.teacher, teacher_params)
  return jax.lax.stop_gradient(hidden), head


def score_teacher(
  cfg: StepConfig,
  teacher_params,
  batch: OPDBatch,
  sharder=None,
  groups=None,
):
  """The teacher's completion hidden states [B, N, E] of a whole batch, one
  micro-batch at a time: what a teacher on its own devices sends to the
  student's (its LM head crosses once, not per step). Across tokenizers
  `cross.scores_at_student_positions` (`groups`: `cross.teacher_groups`)."""

  def one(micro: OPDBatch):
    hidden, head = teacher_side(cfg, teacher_params, micro, sharder)
    if not micro.cross:
      return hidden
    return cross.scores_at_student_positions(
      hidden, head, micro, groups, cfg.chunk_size
    )

  count = cfg.micro_batches(batch.completion_mask_BxN.shape[0])
  if count == 1:
    return one(batch)
  micro = jax.tree.map(lambda x: _split(x, count), batch)
  return jax.tree.map(_merge, jax.lax.map(one, micro))


def per_token_loss(cfg: StepConfig, params, teacher, batch: OPDBatch, sharder):
  """The student's float32 per-token loss [B, N] against `teacher_side`."""
  return _loss_and_importance(cfg, params, teacher, batch, sharder)[0]


def _loss_and_importance(
  cfg, params, teacher, batch: OPDBatch, sharder, dropout_rng=None
):
  """`per_token_loss` and the importance weights [B, N] of a stale sampler
  (None for fresh samples: `cfg.importance_cap` None). `teacher` is
  `(hidden, head)`, across tokenizers then `cross.terms`' arguments."""
  n = batch.completion_mask_BxN.shape[1]
  tokens, mask = batch.sequence("student")
  hidden = completion_hidden(
    cfg.student, params, tokens, mask, n, sharder, dropout_rng
  )
  stale = cfg.importance_cap is not None
  out = losses.chunked_token_divergence(
    hidden,
    models.lm_head(cfg.student, params),
    *teacher[:2],
    kind=cfg.kind,
    beta=cfg.beta,
    temperature=cfg.temperature,
    sampled_ids_BxT=batch.completion_BxN,
    kd_ratio=cfg.kd_ratio,
    chunk_size=cfg.chunk_size,
    return_logprobs=stale,
    cross=cross.terms(batch, *teacher[2:]) if batch.cross else None,
  )
  if not stale:
    return out, None
  per_token, logprobs = out
  return per_token, losses.importance_weights(
    logprobs,
    batch.sampler_logprobs_BxN,
    batch.completion_mask_BxN,
    cfg.importance_cap,
  )


def _split(x, count):
  # [B, ...] -> [count, B / count, ...]; micro-batch j holds rows j,
  # j + count, ..., so a batch sharded in contiguous row blocks keeps every
  # micro-batch spread over all of its devices.
  x = x.reshape((x.shape[0] // count, count) + x.shape[1:])
  return jnp.moveaxis(x, 1, 0)


def _merge(x):
  """The inverse of `_split`."""
  return jnp.moveaxis(x, 0, 1).reshape((-1,) + x.shape[2:])


def accumulate_gradients(
  cfg: StepConfig,
  params,
  teacher,
  batch: OPDBatch,
  weights_BxN: jax.Array,
  sharders: Sharders | None = None,
  frozen=None,
  dropout_rng=None,
):
  """The full batch's loss gradient, one micro-batch at a time.

  The loss's denominator is a property of the whole batch (token, weight or
  sequence counts; `losses.reduce`), so it is taken up front and every
  micro-batch's numerator is divided by it: the summed gradients are the
  full batch's. Peak activation memory follows the micro-batch: each one's
  teacher scoring (when `teacher` is its parameters) and student
  forward/backward run inside one `lax.scan` iteration.

  Args:
    params: the trained parameters: the whole student, or its adapters
      (`lora`) when `frozen` holds the base.
    teacher: the teacher's parameters (scored here, on this mesh) or the
      `TeacherScores` computed on its own devices.
    frozen: the student's frozen base under LoRA, else None.
    dropout_rng: the adapters' dropout key (`ModelConfig.lora.dropout`).

  Returns:
    `(grads, per_token_BxN, metrics)`: grads of `params` in their dtypes, the
    per-token loss (no gradient, not importance-weighted) and (sum, count)
    metrics of the batch.
  """
  sharders = sharders or Sharders()
  mask_BxN = batch.completion_mask_BxN
  count = cfg.micro_batches(mask_BxN.shape[0])
  _, totals = losses.reduce(
    jnp.zeros(mask_BxN.shape, jnp.float32), mask_BxN, weights_BxN, cfg.normalize
  )
  denominator = jnp.maximum(totals["loss/opd"][1], 1.0)
  scored = isinstance(teacher, TeacherScores)
  cross.check_scored(batch, scored)

  def loss_fn(params, micro: OPDBatch, teacher, weights, rng):
    if frozen is not None:
      params = lora.combine(frozen, params)
    per_token, importance = _loss_and_importance(
      cfg, params, teacher, micro, sharders.student, rng
    )
    mask = micro.completion_mask_BxN
    _, metrics = losses.reduce(per_token, mask, weights, cfg.normalize)
    numerator = metrics["loss/opd"][0]
    if importance is not None:
      # A constant factor per position: it rescales that position's
      # gradient and leaves the logged loss the plain one.
      _, weighted = losses.reduce(
        per_token * importance, mask, weights, cfg.normalize
      )
      numerator = weighted["loss/opd"][0]
      count = metrics["kl/unweighted"][1]  # the valid positions
      # `importance` is 0 off the mask, so only valid positions count.
      metrics = dict(metrics)
      metrics["importance/weight"] = (jnp.sum(importance), count)
      metrics["importance/truncated"] = (
        jnp.sum(importance >= cfg.importance_cap, dtype=jnp.float32),
        count,
      )
    return numerator / denominator, (per_token, metrics)

  def micro_step(grads, xs):
    micro, weights, hidden, terms, index = xs
    if scored:
      micro_teacher = cross.micro_teacher(teacher, hidden, terms, micro.cross)
    else:
      micro_teacher = teacher_side(cfg, teacher, micro, sharders.teacher)
    rng = None
    if dropout_rng is not None:
      rng = jax.random.fold_in(dropout_rng, index)
    (_, (per_token, metrics)), micro_grads = jax.value_and_grad(
      loss_fn, has_aux=True
    )(params, micro, micro_teacher, weights, rng)
    grads = jax.tree.map(
      lambda g, d: g + d.astype(jnp.float32), grads, micro_grads
    )
    return grads, (jax.lax.stop_gradient(per_token), metrics)

  zeros = jax.tree.map(lambda p: jnp.zeros(p.shape, jnp.float32), params)
  hidden, per_position = cross.rows(teacher)
  xs = jax.tree.map(
    lambda x: _split(x, count), (batch, weights_BxN, hidden, per_position)
  )
  xs += (jnp.arange(count),)
  if count == 1:
    # One micro-batch needs no loop (nor its compile time).
    grads, ys = micro_step(zeros, jax.tree.map(lambda x: x[0], xs))
    ys = jax.tree.map(lambda y: y[None], ys)
  else:
    grads, ys = jax.lax.scan(micro_step, zeros, xs)
  per_token, metrics = ys
  grads = jax.tree.map(lambda g, p: g.astype(p.dtype), grads, params)
  metrics = jax.tree.map(lambda x: jnp.sum(x, axis=0), metrics)
  return grads, _merge(per_token), metrics


def train_step(
  state: TrainState,
  teacher,
  batch: OPDBatch,
  static_V: jax.Array | None,
  frozen=None,
  *,
  cfg: StepConfig,
  optimizer: optax.GradientTransformation,
  sharders: Sharders | None = None,
):
  """One OPD update; pure, so it can be jitted with the state donated.

  Args:
    state: the student's `TrainState`.
    teacher: frozen teacher parameters (never differentiated), or its
      `TeacherScores` from `score_teacher` on the teacher's own devices.
    batch: an `OPDBatch` of rollouts.
    static_V: bool [V] static rock set (e.g. a `rock.json` or a
      frequency-matched control), or None to select from the tracker.
    frozen: the student's frozen base when the state holds LoRA adapters
      (`rock_jax.models.lora`); None when it holds the whole student.
    cfg, optimizer, sharders: static settings.

  Returns:
    `(new_state, metrics)`: metrics are (sum, count) float32 pairs.
  """
  mask_BxN = batch.completion_mask_BxN
  emitted_BxN = batch.completion_BxN
  policy = cfg.rock
  weights_BxN = rock.token_weights(
    state.rock, emitted_BxN, mask_BxN, lam=policy.lam, align=policy.align
  )
  spec = cfg.student.lora
  dropout_rng = None
  if spec is not None and spec.dropout:
    dropout_rng = jax.random.fold_in(jax.random.key(cfg.seed), state.step)
  grads, per_token_BxN, metrics = accumulate_gradients(
    cfg,
    state.params,
    teacher,
    batch,
    weights_BxN,
    sharders,
    frozen,
    dropout_rng,
  )
  updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
  params = optax.apply_updates(state.params, updates)

  tracker = rock.update(state.rock, emitted_BxN, per_token_BxN, mask_BxN)
  tracker = rock.refresh(
    tracker,
    policy.selection,
    warmup_steps=policy.warmup_steps,
    refresh_every=policy.refresh_every,
    static_V=static_V,
  )

  valid = mask_BxN.astype(jnp.float32)
  # Shares against the set that weighted this step (before the refresh).
  is_rock = state.rock.rock_mask_V[emitted_BxN].astype(jnp.float32) * valid
  kl = jnp.where(mask_BxN, per_token_BxN, 0.0)
  one = jnp.ones((), jnp.float32)
  grad_norm = optax.tree.norm(grads)
  clipped = grad_norm > cfg.clip_norm if cfg.clip_norm > 0 else False
  metrics = dict(metrics)
  metrics.update(
    {
      "rock/token_share": (is_rock.sum(), valid.sum()),
      "rock/kl_share": ((kl * is_rock).sum(), kl.sum()),
      "rock/set_size": (state.rock.rock_mask_V.sum().astype(jnp.float32), one),
      "train/grad_norm": (grad_norm, one),
      "train/clipped": (jnp.float32(clipped), one),
      "rollout/length": (valid.sum(), jnp.float32(mask_BxN.shape[0])),
    }
  )
  if batch.cross:
    exact = jnp.sum(batch.exact_BxN & mask_BxN, dtype=jnp.float32)
    metrics["xtok/exact"] = (exact, valid.sum())
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
  frozen_shardings=None,
  sharders: Sharders | None = None,
):
  """`train_step` jitted with its statics bound and the state donated.

  Shardings default to whatever the arguments carry (None); pass them to pin
  the layout (the state's output sharding equals its input sharding, so the
  donated buffers are reused in place). With `frozen_shardings` (a LoRA
  student's base) the step takes the base as a fifth argument.
  """
  step = functools.partial(
    train_step,
    cfg=cfg,
    optimizer=optimizer,
    sharders=sharders,
  )
  if state_shardings is None:
    return jax.jit(step, donate_argnums=(0,))
  return jax.jit(
    step,
    donate_argnums=(0,),
    in_shardings=(state_shardings, teacher_shardings, batch_sharding, None)
    + (() if frozen_shardings is None else (frozen_shardings,)),
    out_shardings=(state_shardings, None),
  )
