"""Rollouts and teacher scores ahead of the update: the OPD pipeline.

Step t trains on a batch sampled with the student's weights after update
t - 1 - `staleness` (key `fold_in(seed key, t)`). With staleness 0
each batch is sampled right before its update (lockstep). With staleness s
> 0 the batches of steps t + 1 .. t + s are sampled (on `rollout.devices`)
and scored by the teacher (on `teacher.devices` when it has its own) before
update t is dispatched, and nothing waits on the host in between: JAX runs
the three programs on disjoint devices at once. After each update the
student's weights are copied to the sampler's devices.

Batches still queued at a checkpoint are saved with it (`inflight`), so a
resumed run trains on exactly the batches an uninterrupted one would.

Across tokenizers (`teacher.cross_tokenizer`) each sampled batch is
re-tokenised for the teacher on the host (`rock_jax.data.retokenize`) as soon
as its rollout is fetched, and the teacher always scores outside the update
(`score`): with staleness s the host work for step t + s runs while update t
computes on the devices.

Legend: B batch, P prompt length, N completion length, E teacher hidden.
"""

from __future__ import annotations

import collections
import dataclasses
import functools
from typing import Any

import jax
import numpy as np

from rock_jax import models
from rock_jax import sharding as shd
from rock_jax.models import lora
from rock_jax.opd import cross
from rock_jax.opd.batch import (
  OPDBatch,
  TeacherScores,
  batch_from_rollout,
  with_teacher_tokens,
)
from rock_jax.opd.train_step import StepConfig, score_teacher
from rock_jax.sampler import rollout
from rock_jax.train.run_spec import PipelineSpec
from rock_jax.train.session import ROLES, Session


def batch_sharding(sharder: shd.Sharder):
  """Rows over a role's batch axes."""
  return sharder.sharding((shd.BATCH, shd.LENGTH))


@dataclasses.dataclass(frozen=True)
class PlacedPrompts:
  """A batch's prompts as `Pipeline.sample` takes them (`Pipeline.place`).

  Attributes:
    roles: each role's `(tokens_BxP, mask_BxP)` on the student's mesh,
      every prompt repeated `rollout.num_samples` times.
    sampled: the sampling policy's `(tokens, mask)` on its own layout.
    samples: the completions drawn per row of `sampled`.
  """

  roles: dict[str, tuple[jax.Array, jax.Array]]
  sampled: tuple[jax.Array, jax.Array]
  samples: int


@dataclasses.dataclass
class Pipeline:
  """The queue of sampled, scored batches, and the sampler's weights.

  `events` records `("rollout", t)` when step t's batch is dispatched for
  sampling (the loop adds its own), so the order of dispatches and waits
  can be checked.
  """

  spec: PipelineSpec
  session: Session
  step_cfg: StepConfig
  # The student's weights on the sampler's devices (when it has its own).
  sampler_params: Any = None
  teacher_head: Any = None
  queue: collections.deque = dataclasses.field(
    default_factory=collections.deque
  )
  events: list = dataclasses.field(default_factory=list)
  # Host-side counts of the re-tokenisation since the last `take_counts`,
  # as (sum, count) metrics.
  counts: dict = dataclasses.field(default_factory=dict)

  def apart(self, role: str) -> bool:
    return role in self.session.placement.apart

  @property
  def cross(self) -> bool:
    return self.session.retokenizer is not None

  def take_counts(self) -> dict:
    """The re-tokenisation's metrics since the last call."""
    counts, self.counts = self.counts, {}
    return counts

  def teacher_shardings(self):
    """The layout of the train step's `teacher` argument: the parameters'
    own, or `TeacherScores` on the student's mesh when the teacher scores on
    its own devices."""
    if not self.apart("teacher") and not self.cross:
      return jax.tree.map(lambda x: x.sharding, self.session.params["teacher"])
    student = batch_sharding(self.session.student.sharder)
    if not self.cross:
      return TeacherScores(student, self._head().sharding)
    return TeacherScores(
      student,
      self._head().sharding,
      student,
      self._groups.sharding,
      student,
      student,
    )

  def _head(self):
    """The teacher's LM head, copied to the student's mesh once and
    replicated there: the chunked loss reads all of it every chunk, and a
    head split over `fsdp` would be gathered into a float32 copy every
    chunk (benchmarks/disaggregated.py measures both)."""
    if self.teacher_head is None:
      teacher = self.session.teacher
      head = jax.jit(functools.partial(models.lm_head, teacher.cfg))(
        self.session.params["teacher"]
      )
      if self.cross:
        # On the student's comparable ids, once: an [E, S] gather.
        head = cross.mapped_head(head, self.session.retokenizer.vocab_map_V)
      whole = jax.sharding.NamedSharding(
        self.session.mesh, jax.sharding.PartitionSpec()
      )
      self.teacher_head = shd.move(head, whole)
    return self.teacher_head

  @functools.cached_property
  def _groups(self):
    """int32 [V_student], replicated on the student's mesh: -1 for ids with
    a comparable teacher id, else their first-byte group."""
    whole = jax.sharding.NamedSharding(
      self.session.mesh, jax.sharding.PartitionSpec()
    )
    return jax.device_put(self.session.retokenizer.student_groups_V, whole)

  @functools.cached_property
  def _teacher_groups(self):
    """The teacher ids' first-byte groups on its mesh, replicated (None
    with one tokenizer)."""
    if not self.cross:
      return None
    teacher = self.session.teacher
    whole = jax.sharding.NamedSharding(
      teacher.sharder.mesh, jax.sharding.PartitionSpec()
    )
    groups = cross.teacher_groups(
      self.session.retokenizer.teacher_groups_V, teacher.cfg.vocab_size
    )
    return jax.device_put(groups, whole)

  @functools.cached_property
  def _sampler_shardings(self):
    """The student's parameter layout on the sampler's mesh (built once,
    not at every sync)."""
    return models.param_shardings(self._rollout_cfg, self.session.rollout)

  @functools.cached_property
  def _rollout_cfg(self):
    """The model the student samples as: a LoRA student's adapters are
    merged into its weights (`PipelineSpec.merge_adapters`) or applied in
    every decode step."""
    cfg = self.session.student.cfg
    if cfg.lora is not None and self.spec.merge_adapters:
      return cfg.replace(lora=None)
    return cfg

  def _rollout_params(self, params):
    """The student's weights as `_rollout_cfg` reads them."""
    spec = self.session.student.cfg.lora
    if spec is None or not self.spec.merge_adapters:
      return params
    return lora.merge(params, spec=spec)

  def sync(self, params) -> None:
    """Copies the student's weights to the sampler's devices (after an
    update; a no-op when the student samples on its own mesh)."""
    if self.apart("rollout"):
      self.sampler_params = shd.move(
        self._rollout_params(params), self._sampler_shardings
      )

  def fill(self, step: int, data, base_key, params) -> None:
    """Samples (and scores) the batches of steps `step` .. `step + s`
    not queued yet, within `train.steps`, from `data`'s `PlacedPrompts`;
    `params` are the student's current weights (sampled with when it
    samples on its own mesh)."""
    steps, ahead = self.spec.steps, self.spec.staleness
    while len(self.queue) <= ahead and step + len(self.queue) < steps:
      k = step + len(self.queue)
      self.events.append(("rollout", k))
      batch = self.sample(next(data), jax.random.fold_in(base_key, k), params)
      self.queue.append((k, batch, self.score(batch)))

  def pop(self, step: int):
    """`(batch, teacher)` of `step`, the queue's head."""
    k, batch, teacher = self.queue.popleft()
    assert k == step, (k, step)
    return batch, teacher

  def inflight(self) -> dict:
    """The queued batches as plain arrays, for the checkpoint."""
    return {
      str(k): {
        f.name: getattr(batch, f.name)
        for f in dataclasses.fields(OPDBatch)
        if getattr(batch, f.name) is not None
      }
      for k, batch, _ in self.queue
    }

  def restore(self, inflight: dict) -> None:
    """Queues a checkpoint's batches again (scored anew: the teacher is
    frozen, so its scores are the same)."""
    for k in sorted(inflight, key=int):
      batch = OPDBatch(**inflight[k])
      self.queue.append((int(k), batch, self.score(batch)))

  def inflight_target(self, stored: dict) -> dict:
    """Restore targets of a checkpoint's queued batches, from the stored
    shapes, laid out as the student's batch."""
    sharding = batch_sharding(self.session.student.sharder)
    return jax.tree.map(
      lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding),
      stored,
    )

  def score(self, batch: OPDBatch):
    """The train step's `teacher` argument for `batch`: the parameters, or
    the completion hidden states scored on the teacher's devices, moved to
    the student's. Across tokenizers always scores (on the student's mesh
    unless the teacher has its own devices)."""
    apart = self.apart("teacher")
    if not apart and not self.cross:
      return self.session.params["teacher"]
    teacher = self.session.teacher
    on_teacher = shd.move(batch, batch_sharding(teacher.sharder))
    out = _scorer(self.step_cfg, teacher.sharder)(
      self.session.params["teacher"], on_teacher, groups=self._teacher_groups
    )
    out = shd.move(out, batch_sharding(self.session.student.sharder))
    if not self.cross:
      return TeacherScores(out, self._head())
    hidden, span_logprob, log_z, log_groups = out
    return TeacherScores(
      hidden, self._head(), span_logprob, self._groups, log_z, log_groups
    )

  @functools.cached_property
  def _sampler_sharder(self) -> shd.Sharder:
    """Where the sampling policy decodes."""
    if self.spec.sampler == "student":
      return self.session.rollout
    return self.session.teacher.sharder

  def place(self, examples) -> PlacedPrompts:
    """This process's examples' prompts, rendered for both roles
    (`Session.prompt_batch`) and assembled into the global arrays `sample`
    takes (the training feed does this a step ahead, on its thread)."""
    batch = self.session.prompt_batch(examples)
    samples = self.spec.num_samples
    student = batch_sharding(self.session.student.sharder)
    roles = {
      role: shd.to_global(
        tuple(np.repeat(x, samples, axis=0) for x in batch.of(role)),
        student,
      )
      for role in ROLES
    }
    sampling = batch_sharding(self._sampler_sharder)
    mine = batch.of(self.spec.sampler)
    # Each prompt once (the rollout prefills it once for all its samples)
    # when the prompts split evenly over the batch devices; the tokens are
    # the same either way.
    if self.spec.prompts % _row_pieces(sampling):
      mine, samples = tuple(np.repeat(x, samples, axis=0) for x in mine), 1
    return PlacedPrompts(roles, shd.to_global(mine, sampling), samples)

  def sample(self, prompts: PlacedPrompts, rng, params) -> OPDBatch:
    """Completions of the sampling policy for `prompts` (`place`), as the
    step's `OPDBatch`.

    The student samples on its prompt in OPD (on the rollout's devices,
    with the weights last synced there), the teacher on its own
    (privileged) prompt in Stage-1 KD; either way both models then see
    their own prompt followed by the same completion ids.
    """
    spec = self.spec
    student = batch_sharding(self.session.student.sharder)
    sharder, sampled = self._sampler_sharder, prompts.sampled
    if spec.sampler == "student":
      cfg = self._rollout_cfg
      if self.apart("rollout"):
        params = self.sampler_params
      else:
        params = self._rollout_params(params)
    else:
      params = self.session.params["teacher"]
      cfg = self.session.teacher.cfg
    out = rollout.generate(
      cfg,
      params,
      *sampled,
      rng,
      spec.max_new_tokens,
      spec.sampling,
      num_samples=prompts.samples,
      crop=False,
      slots=spec.slots,
      page_size=spec.page_size,
      sharder=sharder,
    )
    width = out.tokens.shape[1] - sampled[0].shape[1]
    if sharder.mesh is not self.session.mesh:
      out = shd.move(out, student)
    batch = batch_from_rollout(
      out.tokens,
      out.completion_mask,
      prompts.roles["student"],
      prompts.roles["teacher"],
      out.logprobs,
      width=width,
    )
    if not self.cross:
      return batch
    return self._retokenize(batch, prompts.roles["teacher"], student)

  def _retokenize(self, batch: OPDBatch, teacher_prompt, sharding):
    """`batch` with the teacher's own tokens of its completions (this
    process's rows re-tokenised on the host); counts what was skipped."""
    aligned = self.session.retokenizer(
      shd.to_local(batch.completion_BxN),
      shd.to_local(batch.completion_mask_BxN),
    )
    c = aligned.counts
    rows = float(batch.completion_mask_BxN.shape[0] // jax.process_count())
    add = {
      "xtok/template_tokens": (c["template_tokens"], c["tokens"]),
      "xtok/unaligned": (c["unaligned"], rows),
      "xtok/too_long": (c["too_long"], rows),
    }
    for name, (total, count) in add.items():
      before = self.counts.get(name, (0.0, 0.0))
      self.counts[name] = (before[0] + total, before[1] + count)
    arrays = {
      f.name: getattr(aligned, f.name)
      for f in dataclasses.fields(aligned)
      if f.name != "counts"
    }
    aligned = dataclasses.replace(aligned, **shd.to_global(arrays, sharding))
    return with_teacher_tokens(batch, teacher_prompt, aligned)


@functools.cache
def _scorer(step_cfg: StepConfig, sharder: shd.Sharder):
  """`score_teacher` jitted for the teacher's mesh (compiled once)."""
  return jax.jit(functools.partial(score_teacher, step_cfg, sharder=sharder))


def _row_pieces(sharding) -> int:
  """How many pieces a sharding splits an array's rows into."""
  axes = sharding.spec[0] or ()
  axes = axes if isinstance(axes, tuple) else (axes,)
  return int(np.prod([sharding.mesh.shape[a] for a in axes]))
