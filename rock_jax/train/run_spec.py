"""The run, decided once: what the loop, the pipeline and both memory
planners read instead of the config.

`build(config)` reads a validated config once into a frozen `RunSpec` (a
`rock.static_list` is loaded there, once). What also needs the
models is derived from it in one place each: `step_config` (whose `rock` is
the run's one `rock.Policy`) and `RockSpec.check_vocab`.
"""

from __future__ import annotations

import dataclasses
import types
from collections.abc import Mapping

import ml_collections
import optax

from rock_jax import rock
from rock_jax.models.config import ModelConfig
from rock_jax.opd import optim
from rock_jax.opd.train_step import StepConfig
from rock_jax.sampler.sampling import Sampling


@dataclasses.dataclass(frozen=True, kw_only=True)
class PipelineSpec:
  """How each step's batch is sampled, and how far ahead.

  Attributes:
    sampler: the role that samples ("student" in OPD, "teacher" in KD).
    steps: the run's updates.
    prompts: prompts per step (`train.batch_size`).
    num_samples, max_new_tokens, sampling, slots, page_size: the rollout.
    staleness: batches sampled ahead of the update (0: lockstep).
    merge_adapters: a LoRA student samples with its adapters merged into
      the weights at each sync (`student.lora.rollout`), not applied in
      every decode step.
  """

  sampler: str
  steps: int
  prompts: int
  num_samples: int
  max_new_tokens: int
  sampling: Sampling
  slots: int | None
  page_size: int
  staleness: int
  merge_adapters: bool = True


@dataclasses.dataclass(frozen=True, kw_only=True)
class RockSpec:
  """The weighting, before the vocabulary and the data are known.

  Attributes:
    lam, align, k, min_count, exclude_most_frequent, max_improvement,
      source, warmup_steps, refresh_every: `config.rock`'s policy.
    decay, fast_decay: the tracker's EMAs.
    static_ids: `rock.static_list`'s ids (loaded once), or None.
    control_seed: the frequency-matched control's seed, or None.
    min_loss_ratio, min_score_ratio: `rock.min_loss_ratio` and
      `rock.min_score_ratio`, None for no filter.
    protect: `rock.protect` ("", "answers" or "auto"), "" when nothing is
      selected (λ = 1 or a static list).
    protect_examples: records whose reference ids the answer guard keeps
      out of the set.
  """

  lam: float
  align: str
  k: int
  min_count: int
  exclude_most_frequent: int
  max_improvement: float | None
  source: str
  warmup_steps: int
  refresh_every: int
  decay: float
  fast_decay: float
  static_ids: tuple[int, ...] | None
  static_list: str
  control_seed: int | None
  min_loss_ratio: float | None
  min_score_ratio: float | None
  protect: str
  protect_examples: int

  def policy(self, vocab_size: int, protected=()) -> rock.Policy:
    """The step's weighting; `protected` ids are never selected."""
    selection = rock.Selection(
      k=min(self.k, vocab_size),
      min_count=self.min_count,
      exclude_most_frequent=self.exclude_most_frequent,
      max_improvement=self.max_improvement,
      min_loss_ratio=self.min_loss_ratio,
      min_score_ratio=self.min_score_ratio,
      source=self.source,
      protected=tuple(protected),
    )
    return rock.Policy(
      lam=self.lam,
      align=self.align,
      selection=selection,
      warmup_steps=self.warmup_steps,
      refresh_every=self.refresh_every,
    )

  def check_vocab(self, vocab_size: int) -> None:
    """Fails, naming the list, on a listed id outside the vocabulary."""
    if self.static_ids is not None:
      rock.lists.check_vocab(self.static_ids, vocab_size, self.static_list)


@dataclasses.dataclass(frozen=True, kw_only=True)
class OptimSpec:
  """AdamW with clipping and a warm-up + cosine schedule."""

  learning_rate: float
  total_steps: int
  warmup_steps: int
  min_lr: float
  b1: float
  b2: float
  weight_decay: float
  clip_norm: float
  skip_nonfinite: bool

  def schedule(self) -> optax.Schedule:
    """The learning rate by step."""
    return optim.learning_rate_schedule(**self._schedule())

  def optimizer(self) -> optax.GradientTransformation:
    """The optimizer; with `skip_nonfinite` a step with a non-finite
    gradient leaves the parameters as they were."""
    optimizer = optim.make_optimizer(
      **self._schedule(),
      b1=self.b1,
      b2=self.b2,
      weight_decay=self.weight_decay,
      clip_norm=self.clip_norm,
    )
    if self.skip_nonfinite:
      # The metrics check reports the window.
      optimizer = optax.apply_if_finite(optimizer, max_consecutive_errors=10)
    return optimizer

  def _schedule(self) -> dict:
    return dict(
      learning_rate=self.learning_rate,
      total_steps=self.total_steps,
      warmup_steps=self.warmup_steps,
      min_lr=self.min_lr,
    )


@dataclasses.dataclass(frozen=True, kw_only=True)
class RunSpec:
  """One run's settings, read once from a validated config."""

  pipeline: PipelineSpec
  rocks: RockSpec
  optim: OptimSpec
  # `config.loss` but its importance cap, as the step's keyword arguments.
  loss: Mapping[str, object]
  # Truncation of stale samples' importance weights; None: fresh samples.
  importance_cap: float | None
  micro_batch_size: int
  # The teacher reads its own tokenisation of the completions.
  cross_tokenizer: bool = False
  # The run's seed (the adapters' dropout masks).
  seed: int = 0

  def step_config(
    self, student: ModelConfig, teacher: ModelConfig, protected=()
  ) -> StepConfig:
    """The jitted step's static settings; its `rock` is the run's policy."""
    return StepConfig(
      student=student,
      teacher=teacher,
      rock=self.rocks.policy(student.vocab_size, protected),
      micro_batch_size=self.micro_batch_size,
      importance_cap=self.importance_cap,
      clip_norm=self.optim.clip_norm,
      cross_tokenizer=self.cross_tokenizer,
      seed=self.seed,
      **self.loss,
    )


def build(config: ml_collections.ConfigDict) -> RunSpec:
  """The run's `RunSpec` from a config (`validate.validate` checked it)."""
  r, t, o = config.rollout, config.train, config.optim
  loss = config.loss.to_dict()
  is_cap = loss.pop("is_cap")
  c = config.rock
  static_ids = None
  if c.static_list:
    static_ids = tuple(int(i) for i in rock.lists.load_rock_json(c.static_list))
  return RunSpec(
    pipeline=PipelineSpec(
      sampler="student" if config.stage == "opd" else "teacher",
      steps=t.steps,
      prompts=t.batch_size,
      num_samples=r.num_samples,
      max_new_tokens=r.max_new_tokens,
      sampling=Sampling(
        temperature=r.temperature, top_k=r.top_k, top_p=r.top_p
      ),
      slots=r.slots or None,
      page_size=r.page_size,
      staleness=r.staleness,
      merge_adapters=config.student.lora.rollout == "merged",
    ),
    rocks=RockSpec(
      lam=c.lam,
      align=c.align,
      k=c.k,
      min_count=c.min_count,
      exclude_most_frequent=c.exclude_most_frequent,
      max_improvement=None if c.max_improvement < 0 else c.max_improvement,
      source=c.source,
      warmup_steps=c.warmup_steps,
      refresh_every=c.refresh_every,
      decay=c.decay,
      fast_decay=c.fast_decay,
      static_ids=static_ids,
      static_list=c.static_list,
      control_seed=c.control_seed if c.control != "none" else None,
      min_loss_ratio=c.min_loss_ratio or None,
      min_score_ratio=c.min_score_ratio or None,
      # Nothing is selected at λ = 1 or from a static list.
      protect=c.protect if c.lam < 1 and not c.static_list else "",
      protect_examples=c.protect_examples,
    ),
    optim=OptimSpec(
      learning_rate=o.learning_rate,
      total_steps=t.steps,
      warmup_steps=o.warmup_steps,
      min_lr=o.min_lr,
      b1=o.b1,
      b2=o.b2,
      weight_decay=o.weight_decay,
      clip_norm=o.clip_norm,
      skip_nonfinite=t.nonfinite == "skip",
    ),
    loss=types.MappingProxyType(loss),
    importance_cap=is_cap if r.staleness else None,
    micro_batch_size=t.micro_batch_size,
    cross_tokenizer=config.teacher.cross_tokenizer,
    seed=config.seed,
  )
