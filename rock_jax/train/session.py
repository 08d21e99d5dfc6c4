"""Run set-up: data preparation, both models with their tokenizers, checks.

Everything here happens once, before the first step, and fails with a message
naming the config field, file or example at fault.
"""

from __future__ import annotations

import json
import os

import jax

from rock_jax import config_lib, embedded_models, rollout
from rock_jax.data import (
  builders,
  embedded_builder,
  loader,
  prompts,
  tokenization,
)
from rock_jax.models import hf


def init_distributed(config) -> None:
  """Joins the multi-process runtime if the config asks for it.

  Must run before anything touches a JAX device; a second call is a no-op.
  CPU processes exchange collectives over gloo.
  """
  d = config.distributed
  if jax.distributed.is_initialized() or not (d.auto or d.coordinator_address):
    return
  if d.coordinator_address and not 0 <= d.process_id < d.num_processes:
    raise ValueError(
      f"distributed.process_id={d.process_id}: expected 0 <= id < "
      f"distributed.num_processes={d.num_processes}"
    )
  jax.config.update("jax_cpu_collectives_implementation", "gloo")
  if d.auto:
    jax.distributed.initialize()
  else:
    jax.distributed.initialize(
      coordinator_address=d.coordinator_address,
      num_processes=d.num_processes,
      process_id=d.process_id,
    )


def prepare(config):
  """Prepares the data (and, without model folders, the embedded models).

  Returns:
    `(dataset_dir, teacher_path, student_path, truth)`: truth is the set of
    planted rock ids when the data is the embedded task, else None.
  """
  cache = config_lib.cache_dir(config)
  teacher, student = config.teacher.path, config.student.path
  if config.data.name != "embedded":
    dataset_dir = builders.prepare(
      config.data.name,
      config.data.data_dir or os.path.join(cache, "data"),
      **config_lib.parse_kv(config.data.options, "data.options"),
    )
    return dataset_dir, teacher, student, None
  if teacher:
    # Own folders on the embedded data, e.g. a Stage-1 export as student.
    dataset_dir = embedded_models.prepare_data(config, cache)
  else:
    dataset_dir, teacher, student = embedded_models.prepare(config, cache)
  with open(os.path.join(dataset_dir, embedded_builder.ROCK_FILE)) as f:
    truth = set(json.load(f)["token_ids"])
  return dataset_dir, teacher, student, truth


class Models:
  """Tokenizers, configs and parameters of both roles, loaded and checked."""

  def __init__(self, config, teacher_path, student_path, sharders):
    roles = {"teacher": teacher_path, "student": student_path}
    for role, path in roles.items():
      if not os.path.isfile(os.path.join(path, "config.json")):
        raise FileNotFoundError(
          f"{role}.path={path!r}: no config.json there; expected a Hugging "
          "Face model folder (config.json + *.safetensors)"
        )
    self.tokenizers, self.template_kwargs = {}, {}
    for role in roles:
      c = config[role]
      self.tokenizers[role] = tokenization.load_tokenizer(
        c.tokenizer or roles[role], chat_template=c.chat_template or None
      )
      self.template_kwargs[role] = config_lib.template_kwargs(
        c, f"{role}.template_kwargs"
      )
    tokenization.check_same_vocab(
      self.tokenizers["teacher"], self.tokenizers["student"]
    )
    cfgs = {role: hf.load_config(path) for role, path in roles.items()}
    if cfgs["teacher"].vocab_size != cfgs["student"].vocab_size:
      raise ValueError(
        f"teacher vocab_size={cfgs['teacher'].vocab_size} "
        f"({teacher_path}) != student vocab_size="
        f"{cfgs['student'].vocab_size} ({student_path}): OPD compares the "
        "full next-token distributions, so both must share one vocabulary"
      )
    self.cfgs, self.params = {}, {}
    for role, path in roles.items():
      c = config[role]
      cfg, params = hf.load(
        path,
        c.dtype,
        compute_dtype=c.compute_dtype or None,
        sharder=sharders[role],
      )
      self.cfgs[role] = cfg.replace(remat=c.remat)
      self.params[role] = params


def check_prompts(source, split, path, widths, models):
  """Fails before training on a prompt over its width.

  Every prompt is rendered with each side's template and counted, so a run
  never stops hours in on one long example.

  Args:
    source: a split's records.
    split, path: named in the error.
    widths: {"student": P, "teacher": P}, the prompt widths.
    models: the `Models` (tokenizers and template variables).
  """
  records = loader.eval_batches(source, 512, process_index=0, process_count=1)
  too_long = []
  for examples in records:
    for side, render, width in (
      ("student", prompts.render_student_prompt, widths["student"]),
      ("teacher", prompts.render_teacher_prompt, widths["teacher"]),
    ):
      tok = models.tokenizers[side]
      for e in examples:
        n = len(
          prompts.encode(render(e, tok, **models.template_kwargs[side]), tok)
        )
        if n > width:
          too_long.append((side, e.uid, n, width))
  if too_long:
    side, _, _, width = too_long[0]
    longest = max(n for s, _, n, _ in too_long if s == side)
    listed = ", ".join(
      f"{u!r} ({s}, {n} tokens)" for s, u, n, _ in too_long[:5]
    )
    raise ValueError(
      f"{len(too_long)} prompts of split {split!r} ({path}) exceed their "
      "width, e.g. "
      f"{listed}; raise data.{side}_prompt_len (now {width}) to at least "
      f"{rollout.bucket(longest, rollout.DEFAULT_BUCKETS)} or filter the data"
    )


def task_of(source) -> str:
  """The verifier name of a split's first record ('' if ungraded)."""
  first = source[0]
  task = first["task"]
  return task.decode() if isinstance(task, bytes) else task
