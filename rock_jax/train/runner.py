"""`run(config)`: a distillation run, from a config to summary.json."""

from __future__ import annotations

import json
import logging
import time

import jax
import ml_collections

from rock_jax import metrics, storage
from rock_jax.config import fields
from rock_jax.train import session as session_lib
from rock_jax.train import summary
from rock_jax.train.loop import Loop


def run(config: ml_collections.ConfigDict, workdir: str | None = None) -> dict:
  """Trains as configured; returns (and writes) the run's summary.

  The phases: open the session (validate, mesh, data, both models), build
  or restore the loop in the work directory (train state, progress,
  rock-set policy; a failure there removes a folder it created), write
  config.json, evaluate both models once, train, summarise.
  Re-running with the same work directory resumes.

  Args:
    config: a config from `configs/` (validated here first).
    workdir: overrides `config.workdir`.

  Returns:
    The summary dict written to `<workdir>/summary.json`, or
    `{"steps", "stopped": True}` after a stop request (SIGTERM, preemption).
  """
  start = time.time()
  workdir = storage.absolute(workdir) if workdir else fields.workdir(config)
  fields.check_workdir(workdir)
  session = session_lib.open(config)
  d = config.data
  sources = tuple(
    session.open_split(split) if split else None
    for split in (d.train_split, d.eval_split)
  )
  created = not storage.exists(workdir)
  try:
    loop = Loop.create(config, session, workdir, sources)
  except BaseException:
    # A run that never started leaves no folder behind to be mistaken for
    # one (an existing folder keeps its checkpoints and its config.json).
    if created and jax.process_index() == 0:
      storage.rmtree(workdir)
    raise
  write_config(config, workdir)
  loop.evaluate_before()
  if loop.train():
    logging.warning("stopped at step %d (SIGTERM); re-run to resume", loop.step)
    loop.writer.close()
    return {"steps": loop.step, "stopped": True}
  return summary.finish(loop, start)


def write_config(config: ml_collections.ConfigDict, workdir: str) -> None:
  """The config of the run in the work directory, as `config.json`."""
  if jax.process_index() == 0:
    print(f"workdir: {workdir}; config in config.json", flush=True)
    storage.makedirs(workdir)
    metrics.write_json(
      storage.join(workdir, "config.json"),
      json.loads(config.to_json_best_effort(sort_keys=True)),
    )
