"""`summary.json`: what a finished run reports, and its lines for humans."""

from __future__ import annotations

import time

import jax
import numpy as np

from rock_jax import metrics as metrics_lib
from rock_jax import storage
from rock_jax.rock import lists as rock_lists
from rock_jax.rock import snapshots
from rock_jax.train.loop import Loop


def finish(loop: Loop, start: float) -> dict:
  """Evaluates, exports and writes the finished run's summary.

  Args:
    loop: the loop after `train` returned.
    start: `time.time()` when the run started.

  Returns:
    The summary, also written to `<workdir>/summary.json` (process 0).
  """
  config, progress, lead = loop.config, loop.progress, jax.process_index() == 0
  summary = {"steps": loop.step, "stage": config.stage, "workdir": loop.workdir}
  if loop.eval_source is not None:
    result = loop.evaluate("student", loop.params("student"))
    summary.update(
      teacher_accuracy=progress.teacher_accuracy,
      student_accuracy_before=progress.student_accuracy_before,
      student_accuracy_after=result.accuracy,
      eval_problems=result.total,
      evals=progress.evals + [[loop.step, result.accuracy, progress.train_s]],
      eval_correct=[int(x) for x in result.per_example],
    )
    loop.log_evaluation(loop.step, result)
  ids, table, shares = loop.rocks.table(loop.state.rock)
  if lead:
    snapshots.save(loop.workdir, loop.step, loop.state.rock)
  summary["rock_tokens"] = table
  # The set λ weights from the last update on: with `rock.refresh_every=0`
  # the one selected at the end of the warm-up (what Rock-Freeze froze),
  # which the table (the tracker's selection now) need not equal.
  summary["weighted_ids"] = np.flatnonzero(loop.state.rock.rock_mask_V).tolist()
  selection = loop.session.step_cfg.rock.selection
  summary["rock_guard"] = {
    "answer_ids": len(selection.protected),
    "min_loss_ratio": selection.min_loss_ratio,
    "min_score_ratio": selection.min_score_ratio,
  }
  if progress.control_ids is not None:
    summary["control_ids"] = progress.control_ids
  summary.update(shares)
  if loop.session.truth is not None:
    summary.update(rock_lists.detection(ids, loop.session.truth))
  if config.train.export:
    summary["export"] = _export(loop)
  summary["train_s"] = progress.train_s
  summary["prepare_s"] = loop.session.prepare_s
  summary["wall_s"] = time.time() - start
  loop.writer.close()
  if lead:
    metrics_lib.write_json(storage.join(loop.workdir, "summary.json"), summary)
    print(format_report(summary), flush=True)
  return summary


def _export(loop: Loop) -> str:
  """The student as a Hugging Face folder, with its tokenizer."""
  export = storage.join(loop.workdir, "export")
  student = loop.session.student
  loop.export(export, tokenizer=student.tokenizer)
  return export


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
