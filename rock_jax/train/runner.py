"""`run(config)`: a distillation run, from a config to summary.json."""

from __future__ import annotations

import logging
import os
import time

import jax
import ml_collections

from rock_jax.config import fields
from rock_jax.train import session as session_lib
from rock_jax.train import summary
from rock_jax.train.loop import Loop


def run(config: ml_collections.ConfigDict, workdir: str | None = None) -> dict:
  """Trains as configured; returns (and writes) the run's summary.

  The phases: open the session (validate, mesh, data, both models), open
  the work directory, build or restore the loop (train state, progress,
  rock-set policy), evaluate both models once, train, summarise.
  Re-running with the same work directory resumes.

  Args:
    config: a config from `configs/` (validated here first).
    workdir: overrides `config.workdir`.

  Returns:
    The summary dict written to `<workdir>/summary.json`, or
    `{"steps", "stopped": True}` after a stop request (SIGTERM, preemption).
  """
  start = time.time()
  session = session_lib.open(config)
  workdir = open_workdir(config, workdir)
  d = config.data
  sources = tuple(
    session.open_split(split) if split else None
    for split in (d.train_split, d.eval_split)
  )
  loop = Loop.create(config, session, workdir, sources)
  loop.evaluate_before()
  if loop.train():
    logging.warning("stopped at step %d (SIGTERM); re-run to resume", loop.step)
    loop.writer.close()
    return {"steps": loop.step, "stopped": True}
  return summary.finish(loop, start)


def open_workdir(config: ml_collections.ConfigDict, workdir: str | None) -> str:
  """The run's folder, absolute, with the config in `config.json`."""
  workdir = os.path.abspath(workdir) if workdir else fields.workdir(config)
  if jax.process_index() == 0:
    print(f"workdir: {workdir}; config in config.json", flush=True)
    os.makedirs(workdir, exist_ok=True)
    with open(os.path.join(workdir, "config.json"), "w") as f:
      f.write(config.to_json_best_effort(indent=2, sort_keys=True))
  return workdir
