"""`run(config)`: the distillation loop, from a config to summary.json.

Per step: this process's prompts are rendered for both models, assembled into
global arrays, the sampling policy (the student in OPD, the teacher in
Stage-1 KD) writes completions, and the jitted step scores them with the
frozen teacher and updates the student and the Rock-Token tracker. Metrics
are pulled one step late, so the host never waits on the device it just fed.
A checkpoint holds the train state and the data position; re-running the same
command resumes from it, with the same result as an uninterrupted run.

Legend: B batch, P prompt length, N completion length, V vocab.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import os
import time

import jax
import ml_collections
import numpy as np
import optax
from jax.experimental import multihost_utils

from rock_jax import (
  checkpoint,
  config_lib,
  evaluate,
  optim,
  rock,
  rock_report,
  rollout,
  run_setup,
  train_state,
  validate,
)
from rock_jax import metrics as metrics_lib
from rock_jax import sharding as shd
from rock_jax.data import (
  builders,
  loader,
  prompts,
)
from rock_jax.models import hf
from rock_jax.sampling import Sampling
from rock_jax.train_step import StepConfig, batch_from_rollout, make_train_step

# Shown beside the progress bar.
_BAR_KEYS = ("kl/unweighted", "rock/kl_share", "eval/accuracy")


def _step_config(config, s_cfg, t_cfg) -> StepConfig:
  """The jitted step's static settings from the config."""
  r, t = config.rock, config.train
  selection = rock_report.selection(config, s_cfg.vocab_size)
  return StepConfig(
    student=s_cfg,
    teacher=t_cfg,
    kind=config.loss.kind,
    beta=config.loss.beta,
    temperature=config.loss.temperature,
    kd_ratio=config.loss.kd_ratio,
    chunk_size=config.loss.chunk_size,
    normalize=config.loss.normalize,
    lam=r.lam,
    align=r.align,
    rock_k=selection["k"],
    rock_min_count=selection["min_count"],
    rock_exclude_most_frequent=selection["exclude_most_frequent"],
    rock_max_improvement=selection["max_improvement"],
    rock_source=selection["source"],
    warmup_steps=r.warmup_steps,
    # A static set is never recomputed; refresh_every=0 selects once, at
    # the end of the warm-up (an interval longer than the run).
    refresh_every=0
    if r.static_list or r.control != "none"
    else r.refresh_every or t.steps + 1,
  )


def _schedule_kwargs(config) -> dict:
  o = config.optim
  return dict(
    learning_rate=o.learning_rate,
    total_steps=config.train.steps,
    warmup_steps=o.warmup_steps,
    min_lr=o.min_lr,
  )


def _sample(config, models, student_params, prompts_, sharders, rng):
  """Completions from the sampling policy, as the step's `OPDBatch`.

  The student samples on its prompt in OPD, the teacher on its own
  (privileged) prompt in Stage-1 KD; either way both models then see their
  own prompt followed by the same completion ids.
  """
  s_tok, s_mask, t_tok, t_mask = prompts_
  r = config.rollout
  role = "student" if config.stage == "opd" else "teacher"
  params = student_params if role == "student" else models.params["teacher"]
  prompt, prompt_mask = (
    (s_tok, s_mask) if role == "student" else (t_tok, t_mask)
  )
  out = rollout.generate(
    models.cfgs[role],
    params,
    prompt,
    prompt_mask,
    rng,
    r.max_new_tokens,
    Sampling(temperature=r.temperature, top_k=r.top_k, top_p=r.top_p),
    crop=False,
    sharder=sharders[role],
  )
  return batch_from_rollout(
    out.tokens,
    out.completion_mask,
    s_tok,
    s_mask,
    t_tok,
    t_mask,
    width=out.tokens.shape[1] - prompt.shape[1],
  )


def run(config: ml_collections.ConfigDict, workdir: str | None = None) -> dict:
  """Trains as configured; returns (and writes) the run's summary.

  Args:
    config: a config from `configs/` (validated here first).
    workdir: overrides `config.workdir`.

  Returns:
    The summary dict written to `<workdir>/summary.json`.
  """
  start = time.time()
  run_setup.init_distributed(config)
  validate.validate(config)
  workdir = os.path.abspath(workdir) if workdir else config_lib.workdir(config)
  lead = jax.process_index() == 0
  if lead:
    print(f"workdir: {workdir}", flush=True)
    os.makedirs(workdir, exist_ok=True)
    with open(os.path.join(workdir, "config.json"), "w") as f:
      f.write(config.to_json_best_effort(indent=2, sort_keys=True))
  mesh = shd.make_mesh(shd.parse_mesh(config.mesh, "mesh"))
  if lead:
    print(
      f"mesh {dict(mesh.shape)} over {mesh.size} "
      f"{jax.devices()[0].platform} devices, {jax.process_count()} "
      "processes; config in config.json",
      flush=True,
    )
  sharders = {
    role: shd.Sharder(mesh, shd.get_rules(config[role].rules))
    for role in ("teacher", "student")
  }

  # Process 0 prepares (TFDS renames race), the others then reuse.
  if jax.process_count() > 1 and not lead:
    multihost_utils.sync_global_devices("rock_jax: prepared")
  dataset_dir, teacher_path, student_path, truth = run_setup.prepare(config)
  if jax.process_count() > 1 and lead:
    multihost_utils.sync_global_devices("rock_jax: prepared")
  prepare_s = time.time() - start
  models = run_setup.Models(config, teacher_path, student_path, sharders)
  s_cfg, t_cfg = models.cfgs["student"], models.cfgs["teacher"]
  teacher_params = models.params["teacher"]
  widths = {
    "student": config.data.student_prompt_len,
    "teacher": config.data.teacher_prompt_len,
  }
  sources = {}
  for split in filter(None, (config.data.train_split, config.data.eval_split)):
    sources[split] = builders.open_split(dataset_dir, split)
    run_setup.check_prompts(sources[split], split, dataset_dir, widths, models)
  train_source = sources[config.data.train_split]
  eval_source = sources.get(config.data.eval_split)

  # State, optimizer, checkpoint.
  t = config.train
  optimizer = optim.make_optimizer(
    **_schedule_kwargs(config),
    b1=config.optim.b1,
    b2=config.optim.b2,
    weight_decay=config.optim.weight_decay,
    clip_norm=config.optim.clip_norm,
  )
  if t.nonfinite == "skip":
    # The update of a step with a non-finite gradient is dropped; the
    # metrics check below reports the window.
    optimizer = optax.apply_if_finite(optimizer, max_consecutive_errors=10)
  state = train_state.create(
    models.params["student"],
    optimizer,
    s_cfg.vocab_size,
    rock_decay=config.rock.decay,
    rock_fast_decay=config.rock.fast_decay,
  )
  del models.params["student"]
  ckpt = checkpoint.Checkpointer(
    os.path.join(workdir, "checkpoints"),
    keep=t.keep_checkpoints,
    save_every=t.checkpoint_every,
  )
  ckpt.install_sigterm_handler()
  meta, step = {}, 0
  restored = ckpt.restore_latest(state)
  if restored is not None:
    state, meta, step = restored
    if lead:
      print(f"resumed from step {step}", flush=True)
  data = loader.Loader(
    train_source,
    t.batch_size,
    seed=config.seed,
    state=meta.get("loader"),
  )

  r = config.rock
  step_cfg = _step_config(config, s_cfg, t_cfg)
  state_shardings = train_state.shardings(state)
  batch_sharding = sharders["student"].sharding((shd.BATCH, shd.LENGTH))
  step_fn = make_train_step(
    step_cfg,
    optimizer,
    state_shardings=state_shardings,
    teacher_shardings=jax.tree.map(lambda x: x.sharding, teacher_params),
    batch_sharding=batch_sharding,
    student_sharder=sharders["student"],
    teacher_sharder=sharders["teacher"],
  )

  tok = models.tokenizers
  evaluate_on = functools.partial(
    evaluate.accuracy,
    student_tokenizer=tok["student"],
    teacher_tokenizer=tok["teacher"],
    student_len=widths["student"],
    teacher_len=widths["teacher"],
    max_new_tokens=config.rollout.max_new_tokens,
    batch_size=t.eval_batch_size,
    num_examples=t.eval_examples,
    template_kwargs=(
      models.template_kwargs["student"],
      models.template_kwargs["teacher"],
    ),
    num_samples_logged=t.log_samples,
  )
  graded = eval_source is not None and bool(run_setup.task_of(eval_source))

  def evaluate_student(params):
    return evaluate_on(
      s_cfg, params, eval_source, side="student", sharder=sharders["student"]
    )

  writer = metrics_lib.MetricWriter(os.path.join(workdir, "logs"))
  if "teacher_accuracy" not in meta and graded:
    result = evaluate_on(
      t_cfg,
      teacher_params,
      eval_source,
      side="teacher",
      sharder=sharders["teacher"],
    )
    meta["teacher_accuracy"] = result.accuracy
    result = evaluate_student(state.params)
    meta["student_accuracy_before"] = result.accuracy
    meta["evals"] = [[0, result.accuracy, 0.0]]
    writer.write(0, {"eval/accuracy": result.accuracy})
    if lead:
      print(
        f"teacher accuracy {meta['teacher_accuracy']:.3f}, student "
        f"{result.accuracy:.3f} (greedy, {result.total} problems)",
        flush=True,
      )

  # Static sets: a file now, a control set once the tracker has warmed up.
  # None lets the tracker's own selection weight the step.
  if "control_ids" in meta:
    ids = np.asarray(meta["control_ids"], np.int32)
    fixed = np.asarray(rock.rock_mask(ids, s_cfg.vocab_size))
  elif r.static_list:
    fixed = rock_report.fixed_mask(
      config, s_cfg.vocab_size, state.rock, tok["student"]
    )
  elif r.control != "none":
    fixed = np.zeros(s_cfg.vocab_size, bool)  # until the warm-up ends
  else:
    fixed = None

  base_key = jax.random.key(config.seed)
  ns = config.rollout.num_samples
  schedule = optim.learning_rate_schedule(**_schedule_kwargs(config))
  bar = metrics_lib.ProgressBar(t.steps, initial=step, keys=_BAR_KEYS)
  acc, window_start, window_time = {}, step + 1, time.time()
  pending = None
  stopped = False
  train_s = meta.get("train_s", 0.0)
  loop_start = time.time()

  def flush(pending_metrics):
    nonlocal acc
    if pending_metrics is not None:
      acc = metrics_lib.accumulate(acc, jax.device_get(pending_metrics))

  while step < t.steps:
    examples = next(data)
    pb = prompts.make_prompt_batch(
      examples,
      student_tokenizer=tok["student"],
      teacher_tokenizer=tok["teacher"],
      student_len=widths["student"],
      teacher_len=widths["teacher"],
      student_template_kwargs=models.template_kwargs["student"],
      teacher_template_kwargs=models.template_kwargs["teacher"],
    )
    local = tuple(
      np.repeat(x, ns, axis=0)
      for x in (
        pb.student_tokens_BxP,
        pb.student_mask_BxP,
        pb.teacher_tokens_BxP,
        pb.teacher_mask_BxP,
      )
    )
    batch = _sample(
      config,
      models,
      state.params,
      shd.to_global(local, batch_sharding),
      sharders,
      jax.random.fold_in(base_key, step),
    )
    state, step_metrics = step_fn(state, teacher_params, batch, fixed)
    flush(pending)
    pending = step_metrics
    step += 1

    if (
      r.control != "none"
      and step == r.warmup_steps
      and "control_ids" not in meta
    ):
      fixed = rock_report.fixed_mask(
        config, s_cfg.vocab_size, state.rock, tok["student"]
      )
      meta["control_ids"] = np.flatnonzero(fixed).tolist()

    if step % t.log_every == 0 or step == t.steps:
      flush(pending)
      pending = None
      values = metrics_lib.summarize(acc)
      elapsed = time.time() - window_time
      tokens = acc["rollout/length"][0]
      values["perf/steps_per_s"] = (step - window_start + 1) / elapsed
      values["perf/tokens_per_s"] = tokens / elapsed
      values["train/learning_rate"] = float(schedule(step))
      bad = metrics_lib.check_finite(values, (window_start, step), t.nonfinite)
      for name in bad:
        values.pop(name)
      _, table, _ = rock_report.rock_table(state.rock, tok["student"], config)
      top = ", ".join(f"{row['text']!r} ({row['R']:.3g})" for row in table[:10])
      writer.write(step, values, {"rock/top_tokens": top})
      bar.update(step, values)
      acc, window_start, window_time = {}, step + 1, time.time()

    if graded and t.eval_every and step % t.eval_every == 0 and step < t.steps:
      result = evaluate_student(state.params)
      meta.setdefault("evals", []).append(
        [step, result.accuracy, train_s + time.time() - loop_start]
      )
      if lead:
        save_tracker(workdir, step, state.rock)
      samples = "\n\n".join(
        f"{'OK' if ok else 'WRONG'}: {text!r}" for _, text, ok in result.samples
      )
      writer.write(
        step, {"eval/accuracy": result.accuracy}, {"eval/samples": samples}
      )
      bar.update(step, {"eval/accuracy": result.accuracy})
      bar.write(f"step {step}: student accuracy {result.accuracy:.3f}")

    if t.export_every and step % t.export_every == 0 and step < t.steps:
      hf.save(s_cfg, state.params, os.path.join(workdir, f"export_step_{step}"))

    meta["loader"] = data.state()
    meta["train_s"] = train_s + time.time() - loop_start
    if ckpt.should_stop(step):
      stopped = True
      break
    ckpt.save(step, state, meta)
  # A finished run logged its last step; a stopped one drops the metrics
  # still pending.
  bar.close()
  ckpt.save(step, state, meta, force=True)
  ckpt.close()
  if stopped:
    logging.warning("stopped at step %d (SIGTERM); re-run to resume", step)
    writer.close()
    return {"steps": step, "stopped": True}

  summary = {"steps": step, "stage": config.stage, "workdir": workdir}
  if graded:
    result = evaluate_student(state.params)
    summary.update(
      teacher_accuracy=meta["teacher_accuracy"],
      student_accuracy_before=meta["student_accuracy_before"],
      student_accuracy_after=result.accuracy,
      eval_problems=result.total,
      evals=meta.get("evals", []) + [[step, result.accuracy, meta["train_s"]]],
      eval_correct=[int(x) for x in result.per_example],
    )
    writer.write(step, {"eval/accuracy": result.accuracy})
  ids, table, shares = rock_report.rock_table(
    state.rock, tok["student"], config
  )
  if lead:
    save_tracker(workdir, step, state.rock)
  summary["rock_tokens"] = table
  if "control_ids" in meta:
    summary["control_ids"] = meta["control_ids"]
  summary.update(shares)
  if truth is not None:
    found = set(ids.tolist())
    summary["detection_precision"] = len(found & truth) / max(len(found), 1)
    summary["detection_recall"] = len(found & truth) / max(len(truth), 1)
  if t.export:
    export = os.path.join(workdir, "export")
    hf.save(s_cfg, state.params, export)
    if lead:
      tok["student"].save_pretrained(export)
    summary["export"] = export
  summary["train_s"] = meta["train_s"]
  summary["prepare_s"] = prepare_s
  summary["wall_s"] = time.time() - start
  writer.close()
  if lead:
    metrics_lib.write_json(os.path.join(workdir, "summary.json"), summary)
    print(format_report(summary), flush=True)
  return summary


TRACKER_DIR = "tracker"


def save_tracker(workdir: str, step: int, state: rock.RockState) -> str:
  """Writes the tracker's statistics at `step` to tracker/step_<N>.npz.

  Saved at every evaluation and at the end, so analyses can follow each
  token's online loss and stagnation over the run.
  """
  path = os.path.join(workdir, TRACKER_DIR, f"step_{step:07d}.npz")
  os.makedirs(os.path.dirname(path), exist_ok=True)
  arrays = {
    f.name: np.asarray(getattr(state, f.name))
    for f in dataclasses.fields(state)
    if f.name not in ("decay", "fast_decay")
  }
  np.savez(path, decay=state.decay, fast_decay=state.fast_decay, **arrays)
  return path


def format_report(summary: dict) -> str:
  """A few lines for humans from a run summary."""
  lines = [f"Done: {summary['steps']} steps in {summary['wall_s']:.0f} s."]
  if "teacher_accuracy" in summary:
    lines.append(
      f"Accuracy (greedy, {summary['eval_problems']} problems): teacher "
      f"{summary['teacher_accuracy']:.3f}, student "
      f"{summary['student_accuracy_before']:.3f} -> "
      f"{summary['student_accuracy_after']:.3f}"
    )
  top = ", ".join(repr(row["text"]) for row in summary["rock_tokens"][:12])
  lines.append(
    f"Rock Tokens ({len(summary['rock_tokens'])}): {top}; "
    f"{summary['rock_token_share']:.1%} of tokens, "
    f"{summary['rock_kl_share']:.1%} of the KL"
  )
  if "detection_precision" in summary:
    lines.append(
      f"Against the planted ground truth: precision "
      f"{summary['detection_precision']:.2f}, recall "
      f"{summary['detection_recall']:.2f}"
    )
  if "export" in summary:
    lines.append(f"Student exported to {summary['export']}")
  return "\n".join(lines)
