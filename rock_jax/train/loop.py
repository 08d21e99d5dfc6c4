"""The training loop: sample, step, log, evaluate, checkpoint.

Per step this process's prompts, rendered for both models and assembled into
global arrays a step ahead on the feed's thread (`rock_jax.data.feed`),
the sampling policy (the student in OPD, the teacher in Stage-1 KD) writes
completions, and the jitted step scores them with the
frozen teacher and updates the student and the Rock-Token tracker (with
`rollout.staleness` the next steps' batches are sampled and scored ahead,
on their own devices: `pipeline`). Metrics are pulled one step late, so the
host never waits on the device it just fed. A checkpoint holds the train
state (and any batches sampled ahead) and the `Progress`; re-running the
same command resumes from it, with the same result as an uninterrupted run.

Legend: B batch, P prompt length, V vocab.
"""

from __future__ import annotations

import dataclasses
import functools
import time
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from rock_jax import checkpoint, storage
from rock_jax import metrics as metrics_lib
from rock_jax.data import feed, loader
from rock_jax.models import hf, lora, peft_adapter
from rock_jax.opd import train_state
from rock_jax.opd.train_step import make_train_step
from rock_jax.rock import snapshots
from rock_jax.rock.rock_set import RockSet
from rock_jax.train import profiling
from rock_jax.train.pipeline import Pipeline, batch_sharding
from rock_jax.train.progress import Progress
from rock_jax.train.session import Session, task_of

# Shown beside the progress bar.
_BAR_KEYS = ("kl/unweighted", "rock/kl_share", "eval/accuracy")


@dataclasses.dataclass
class Loop:
  """The run's mutable parts between steps, and the steps themselves.

  `create` restores the newest checkpoint if there is one; `train` runs
  until `train.steps` or a stop request, saving on schedule.
  """

  config: ml_collections.ConfigDict
  session: Session
  workdir: str
  state: train_state.TrainState
  step: int
  progress: Progress
  rocks: RockSet
  ckpt: checkpoint.Checkpointer
  # This process's prompt batches, rendered and placed a step ahead.
  data: feed.Feed
  step_fn: Any
  pipeline: Pipeline
  writer: metrics_lib.MetricWriter
  eval_source: Any
  # Metrics of the current log window, and the step's still on the device.
  acc: dict = dataclasses.field(default_factory=dict)
  pending: Any = None
  # `(step, top)`: the step whose window is logged once its metrics are
  # fetched (after the next update is dispatched, so logging never waits on
  # the device), and the tracker's top ids and R(v) as of that step,
  # dispatched then (`RockSet.top`).
  due: tuple[int, Any] | None = None
  window: tuple[int, float] = (1, 0.0)  # first step, start time
  bar: metrics_lib.ProgressBar | None = None
  # time.time() minus the training seconds of earlier sessions.
  clock: float = 0.0
  # A LoRA student's frozen base (the state holds its adapters), else None.
  frozen: Any = None
  profiler: profiling.Profiler | None = None

  @functools.cached_property
  def learning_rates(self) -> np.ndarray:
    """The learning rate of every step (the optimizer's schedule), for the
    logs: on the host, as a device call at a log would wait for the steps
    queued before it."""
    schedule = jax.vmap(self.session.spec.optim.schedule())
    return np.asarray(
      jax.jit(schedule)(jnp.arange(self.config.train.steps + 1))
    )

  def params(self, role: str):
    """A role's current parameters (the student's live in the state; a
    LoRA student's adapters there, joined with its frozen base)."""
    if role != "student":
      return self.session.params[role]
    return _student(self.state, self.frozen)

  def export(self, folder: str, tokenizer=None) -> None:
    """The student as a Hugging Face folder; a LoRA student's adapters are
    merged into it and also written as a PEFT folder `<folder>_adapter`."""
    student = self.session.student
    cfg, params = student.cfg, self.params("student")
    if cfg.lora is not None:
      peft_adapter.save(
        cfg, self.state.params, folder + "_adapter", base_model=student.path
      )
      params, cfg = lora.merge(params, spec=cfg.lora), cfg.replace(lora=None)
    hf.save(cfg, params, folder, tokenizer=tokenizer)

  def train_s(self) -> float:
    """Seconds spent in the loop, over every resume."""
    return time.time() - self.clock

  @classmethod
  def create(cls, config, session: Session, workdir: str, sources) -> Loop:
    """Builds (or restores) the state and everything around it.

    Args:
      config: the run's config.
      session: from `session.open`; the student's parameters move into the
        train state.
      workdir: the run's folder.
      sources: `(train split, eval split or None)` records.
    """
    spec = session.spec
    profiler = profiling.Profiler.create(config, workdir)
    optimizer = spec.optim.optimizer()
    state, frozen = _initial_state(session, optimizer)
    t = config.train
    ckpt = checkpoint.Checkpointer(
      storage.join(workdir, "checkpoints"),
      keep=t.keep_checkpoints,
      save_every=t.checkpoint_every,
    )
    try:
      ckpt.install_sigterm_handler()
      step_cfg = session.step_cfg
      pipeline = Pipeline(spec.pipeline, session, step_cfg)
      step, progress = 0, Progress()
      restored = _restore(ckpt, state, pipeline)
      if restored is not None:
        state, meta, step = restored
        progress = Progress.from_json(meta)
        if jax.process_index() == 0:
          print(f"resumed from step {step}", flush=True)
      pipeline.sync(_student(state, frozen))
      rocks = RockSet.create(
        step_cfg.rock,
        session.student.tokenizer,
        session.student.cfg.vocab_size,
        static_ids=spec.rocks.static_ids,
        control_seed=spec.rocks.control_seed,
        control_ids=progress.control_ids,
      )
      step_fn = make_train_step(
        step_cfg,
        optimizer,
        state_shardings=train_state.shardings(state),
        teacher_shardings=pipeline.teacher_shardings(),
        batch_sharding=batch_sharding(session.student.sharder),
        frozen_shardings=None
        if frozen is None
        else train_state.shardings(frozen),
        sharders=session.sharders,
      )
      writer = metrics_lib.MetricWriter(storage.join(workdir, "logs"))
      graded = sources[1] is not None and task_of(sources[1])
      eval_source = sources[1] if graded else None
      # Last: nothing after it can fail and leave its thread running.
      data = feed.Feed(
        loader.Loader(
          sources[0], t.batch_size, seed=config.seed, state=progress.loader
        ),
        pipeline.place,
      )
      return cls(
        config=config,
        session=session,
        workdir=workdir,
        state=state,
        step=step,
        progress=progress,
        rocks=rocks,
        ckpt=ckpt,
        data=data,
        step_fn=step_fn,
        pipeline=pipeline,
        writer=writer,
        eval_source=eval_source,
        frozen=frozen,
        profiler=profiler,
      )
    except BaseException:
      # Its background writer must not outlive a start that failed.
      ckpt.close()
      raise

  def evaluate(self, role: str, params) -> Any:
    """Greedy accuracy on the evaluation split (`evaluate.Result`)."""
    t = self.config.train
    return self.session.evaluate(
      role,
      params,
      self.eval_source,
      max_new_tokens=self.config.rollout.max_new_tokens,
      batch_size=t.eval_batch_size,
      num_examples=t.eval_examples,
      num_samples_logged=t.log_samples,
    )

  def evaluate_before(self) -> None:
    """Both models' accuracy before the first step (once per run)."""
    if self.eval_source is None or self.progress.teacher_accuracy is not None:
      return
    teacher = self.evaluate("teacher", self.params("teacher"))
    student = self.evaluate("student", self.params("student"))
    self.progress.teacher_accuracy = teacher.accuracy
    self.progress.student_accuracy_before = student.accuracy
    self.progress.evals = [[0, student.accuracy, 0.0]]
    self.log_evaluation(0, student, teacher)
    if jax.process_index() == 0:
      print(
        f"teacher accuracy {teacher.accuracy:.3f}, student "
        f"{student.accuracy:.3f} (greedy, {student.total} problems)",
        flush=True,
      )

  def flush(self) -> None:
    """Folds the metrics still on the device into the window."""
    if self.pending is not None:
      self.pipeline.events.append(("wait", self.step - 1))
      self.acc = metrics_lib.accumulate(self.acc, jax.device_get(self.pending))
      self.pending = None
    self.acc = metrics_lib.accumulate(self.acc, self.pipeline.take_counts())

  def log(self) -> None:
    """Writes the due window's metrics and the tracker's top rocks."""
    self.flush()
    (step, top), t = self.due, self.config.train
    values = metrics_lib.summarize(self.acc)
    first, started = self.window
    elapsed = time.time() - started
    values["perf/steps_per_s"] = (step - first + 1) / elapsed
    values["perf/tokens_per_s"] = self.acc["rollout/length"][0] / elapsed
    values["train/learning_rate"] = float(self.learning_rates[step])
    for name in metrics_lib.check_finite(values, (first, step), t.nonfinite):
      values.pop(name)
    text = self.rocks.top_text(jax.device_get(top))
    self.writer.write(step, values, {"rock/top_tokens": text})
    self.bar.update(step, values)
    self.acc, self.window = {}, (step + 1, time.time())
    self.due = None

  def log_evaluation(self, step: int, student, teacher=None) -> None:
    """Writes an evaluation's accuracy and its graded completions (JSONL and
    TensorBoard text): the student's, and the teacher's when given."""
    texts = {"eval/samples": format_samples(student.samples)}
    if teacher is not None:
      texts["eval/teacher_samples"] = format_samples(teacher.samples)
    self.writer.write(step, {"eval/accuracy": student.accuracy}, texts)

  def evaluate_now(self) -> None:
    """The student's accuracy now, with samples and a tracker snapshot."""
    step = self.step
    result = self.evaluate("student", self.params("student"))
    self.progress.evals.append([step, result.accuracy, self.train_s()])
    if jax.process_index() == 0:
      snapshots.save(self.workdir, step, self.state.rock)
    self.log_evaluation(step, result)
    self.bar.update(step, {"eval/accuracy": result.accuracy})
    self.bar.write(f"step {step}: student accuracy {result.accuracy:.3f}")

  def train(self) -> bool:
    """Steps until `train.steps` or a stop request; True if stopped early.

    Ends with a forced checkpoint either way.
    """
    t = self.config.train
    base_key = jax.random.key(self.config.seed)
    self.start()
    stopped = False
    try:
      while self.step < t.steps:
        self.profiler.before(self.step + 1)
        self.advance(base_key)
        self.profiler.after(self.step, self.state)
        self.progress.loader = self.data.state()
        self.progress.train_s = self.train_s()
        self.progress.control_ids = self.rocks.control_ids
        if self.ckpt.should_stop(self.step):
          stopped = True
          break
        self.ckpt.save(self.step, self._saved(), self.progress.to_json())
    finally:
      self.data.close()
    # A finished run logged its last step; a stopped one drops the metrics
    # still pending.
    self.bar.close()
    self.profiler.stop()
    self.ckpt.save(
      self.step, self._saved(), self.progress.to_json(), force=True
    )
    self.ckpt.close()
    return stopped

  def start(self) -> None:
    """The progress bar, and the clocks of the first log window and of the
    run's training time."""
    self.bar = metrics_lib.ProgressBar(
      self.config.train.steps, initial=self.step, keys=_BAR_KEYS
    )
    self.window = (self.step + 1, time.time())
    self.clock = time.time() - self.progress.train_s

  def advance(self, base_key) -> None:
    """One step: its batch sampled (and those ahead of it, with
    staleness), the update dispatched, then the logging and evaluation due.
    Nothing here waits on this update's results."""
    pipeline = self.pipeline
    # Step t's batch and, with staleness s, those of t + 1 .. t + s:
    # dispatched before update t, so they run beside it.
    pipeline.fill(self.step, self.data, base_key, self.params("student"))
    batch, teacher = pipeline.pop(self.step)
    pipeline.events.append(("update", self.step))
    args = (self.state, teacher, batch, self.rocks.static_V)
    if self.frozen is not None:
      args += (self.frozen,)
    self.state, metrics = self.step_fn(*args)
    pipeline.sync(self.params("student"))
    self.flush()
    if self.due is not None:
      self.log()
    self.pending = metrics
    self.step += 1
    self.rocks.after_step(self.step, self.state.rock)
    self._periodic()

  def _saved(self):
    """The checkpointed tree: the train state, with the batches sampled
    ahead of it when the sampler runs stale (`_restore` reads both)."""
    if not self.pipeline.spec.staleness:
      return self.state
    inflight = self.pipeline.inflight()
    if not inflight:
      return {"state": self.state}
    return {"state": self.state, "inflight": inflight}

  def _periodic(self) -> None:
    """Logging, evaluation and exports due after this step."""
    step, t = self.step, self.config.train
    inside = step < t.steps
    evaluate = self.eval_source is not None and t.eval_every and inside
    evaluate = evaluate and step % t.eval_every == 0
    export = t.export_every and step % t.export_every == 0 and inside
    if step % t.log_every == 0 or not inside:
      self.due = step, self.rocks.top(self.state.rock)
      # What follows the window in the run's record is written after it
      # (and a checkpoint saved only after its values were checked).
      saved = step % t.checkpoint_every == 0
      if not inside or evaluate or export or saved:
        self.log()
    if evaluate:
      self.evaluate_now()
    if export:
      export = storage.join(self.workdir, f"export_step_{step}")
      self.export(export)


def _initial_state(session: Session, optimizer):
  """The train state from the session's student (popped from
  `session.params`, so it is held once), and a LoRA student's frozen base
  (else None)."""
  spec = session.spec
  student, frozen = session.params.pop("student"), None
  if session.student.cfg.lora is not None:
    # Only the adapters train: the state (and the optimizer's moments,
    # and every checkpoint) holds them alone.
    frozen, student = lora.split(student)
  state = train_state.create(
    student,
    optimizer,
    session.student.cfg.vocab_size,
    rock_decay=spec.rocks.decay,
    rock_fast_decay=spec.rocks.fast_decay,
  )
  return state, frozen


def _student(state: train_state.TrainState, frozen):
  """The student's parameters: the state's, joined with a LoRA student's
  frozen base (None otherwise)."""
  if frozen is None:
    return state.params
  return lora.combine(frozen, state.params)


def format_samples(samples) -> str:
  """Graded `(prompt, completion, correct)` triples as one text."""
  return "\n\n".join(
    f"{'OK' if ok else 'WRONG'}: {prompt!r} -> {text!r}"
    for prompt, text, ok in samples
  )


def _restore(ckpt: checkpoint.Checkpointer, state, pipeline: Pipeline):
  """`ckpt.restore_latest` of the train state, queueing the batches that
  were sampled ahead of it (`Loop._saved`); None without a checkpoint."""
  if not pipeline.spec.staleness:
    return ckpt.restore_latest(state)
  stored = ckpt.stored_tree()
  if stored is None:
    return None
  target = {"state": state}
  if isinstance(stored, dict) and "inflight" in stored:
    target["inflight"] = pipeline.inflight_target(stored["inflight"])
  tree, meta, step = ckpt.restore_latest(target)
  pipeline.restore(tree.get("inflight", {}))
  return tree["state"], meta, step
