"""`run(config)`: every configured analysis of one run, and the report.

Loads the teacher and the analysed student once, decodes the analysis corpus
once (greedy, teacher-forced KL), then runs the analyses named in
`config.analysis.analyses`. Each writes `<out>/<name>.json` and its figures
and returns a report `Section`; `report.write` assembles them.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time

import ml_collections
import numpy as np

from rock_jax import config_lib, rock_report, run_setup, validate
from rock_jax import metrics as metrics_lib
from rock_jax import sharding as shd
from rock_jax.analysis import census, report, sections
from rock_jax.data import builders
from rock_jax.models import hf

ANALYSES = ("census", "gradients", "persistence", "knockout", "freeze")
PERSISTENCE_CONTEXTS = ("own", "fixed", "both")


@dataclasses.dataclass
class Context:
  """What the analyses share: models, corpus, selection, output folder.

  The freeze comparison alone reads only run folders: it needs none of the
  model fields.
  """

  config: ml_collections.ConfigDict
  out_dir: str
  workdir: str
  models: run_setup.Models | None = None
  sharders: tuple[shd.Sharder, shd.Sharder] | None = None
  kl_cfg: object = None
  source: object = None
  eval_kwargs: dict = dataclasses.field(default_factory=dict)
  truth: set | None = None
  corpus: census.Corpus | None = None
  stats: census.TypeStats | None = None
  rocks: np.ndarray | None = None
  groups: dict | None = None

  @property
  def tokenizer(self):
    return self.models.tokenizers["student"]

  def text(self, token_id) -> str:
    return rock_report.token_text(self.tokenizer, int(token_id))

  def path(self, name: str) -> str:
    return os.path.join(self.out_dir, name)

  @property
  def selection(self) -> dict:
    a = self.config.analysis
    return dict(
      min_count=a.min_count, exclude_most_frequent=a.exclude_most_frequent
    )

  def params(self, role):
    return self.models.params[role]

  def collect(self, student_params, **kwargs) -> census.Corpus:
    return census.collect(
      self.kl_cfg,
      student_params,
      self.params("teacher"),
      self.source,
      sharders=self.sharders,
      **self.eval_kwargs,
      **kwargs,
    )

  def load_student(self, path):
    """Another student checkpoint (early persistence), same layout."""
    c = self.config.student
    cfg, params = hf.load(
      path,
      c.dtype,
      compute_dtype=c.compute_dtype or None,
      sharder=self.sharders[0],
    )
    if cfg.vocab_size != self.kl_cfg.student.vocab_size:
      raise ValueError(
        f"analysis.early={path!r}: vocab_size={cfg.vocab_size}, expected "
        f"the analysed student's {self.kl_cfg.student.vocab_size}"
      )
    return params


def check(config: ml_collections.ConfigDict) -> list[str]:
  """Validates `config.analysis`; returns the analyses to run, in order."""
  a = config.analysis
  names = config_lib.parse_list(a.analyses)
  unknown = [n for n in names if n not in ANALYSES]
  if unknown or not names:
    raise ValueError(
      f"analysis.analyses={a.analyses!r}: expected a comma list from {ANALYSES}"
    )
  if a.persistence_contexts not in PERSISTENCE_CONTEXTS:
    raise ValueError(
      f"analysis.persistence_contexts={a.persistence_contexts!r}: expected "
      f"one of {PERSISTENCE_CONTEXTS}"
    )
  formats = config_lib.parse_list(a.formats)
  if not formats or any(f not in report.FORMATS for f in formats):
    raise ValueError(
      f"analysis.formats={a.formats!r}: expected a comma list from "
      f"{report.FORMATS}"
    )
  for field in ("k", "num_examples", "batch_size", "high_kl_k", "random_k"):
    if a[field] < 1:
      raise ValueError(f"analysis.{field}={a[field]}: expected >= 1")
  for field in ("knockout_candidates", "resamples", "grad_batches"):
    if a[field] < 0 or (field == "resamples" and a[field] < 1):
      raise ValueError(f"analysis.{field}={a[field]}: expected >= 1")
  if not 0 < a.alpha < 1 or a.epsilon < 0:
    raise ValueError(
      f"analysis.alpha={a.alpha}, analysis.epsilon={a.epsilon}: expected "
      "0 < alpha < 1 and epsilon >= 0"
    )
  if not 0 < a.target_fraction <= 1:
    raise ValueError(
      f"analysis.target_fraction={a.target_fraction}: expected (0, 1]"
    )
  config_lib.parse_ints(a.k_sweep, "analysis.k_sweep")
  config_lib.parse_ints(a.stability_sizes, "analysis.stability_sizes")
  if "freeze" in names and names != ["freeze"] and not a.freeze_runs:
    names.remove("freeze")  # nothing to compare; the others still run
  if names == ["freeze"] and not a.freeze_runs:
    raise ValueError(
      "analysis.analyses='freeze' needs analysis.freeze_runs (a comma list "
      "of finished run workdirs)"
    )
  return names


def _setup(config, workdir, out_dir) -> Context:
  a = config.analysis
  run_setup.init_distributed(config)
  validate.validate(config)
  student = a.student or os.path.join(workdir, "export")
  if not os.path.isfile(os.path.join(student, "config.json")):
    raise FileNotFoundError(
      f"analysis.student={a.student!r}: no model at {student!r}; expected "
      "a finished run's workdir (its export/) as --config.workdir, or a "
      "Hugging Face folder as --config.analysis.student"
    )
  mesh = shd.make_mesh(shd.parse_mesh(config.mesh, "mesh"))
  sharders = tuple(
    shd.Sharder(mesh, shd.get_rules(config[role].rules))
    for role in ("student", "teacher")
  )
  dataset_dir, teacher_path, _, truth = run_setup.prepare(config)
  models = run_setup.Models(
    config,
    teacher_path,
    student,
    {"student": sharders[0], "teacher": sharders[1]},
  )
  split = a.split or config.data.eval_split
  if not split:
    raise ValueError(
      "analysis.split and data.eval_split are both empty: the corpus needs "
      "a split of prompts"
    )
  source = builders.open_split(dataset_dir, split)
  widths = {
    "student": config.data.student_prompt_len,
    "teacher": config.data.teacher_prompt_len,
  }
  run_setup.check_prompts(source, split, dataset_dir, widths, models)
  eval_kwargs = dict(
    student_tokenizer=models.tokenizers["student"],
    teacher_tokenizer=models.tokenizers["teacher"],
    student_len=widths["student"],
    teacher_len=widths["teacher"],
    max_new_tokens=a.max_new_tokens or config.rollout.max_new_tokens,
    batch_size=a.batch_size,
    num_examples=a.num_examples,
    template_kwargs=(
      models.template_kwargs["student"],
      models.template_kwargs["teacher"],
    ),
  )
  return Context(
    config=config,
    out_dir=out_dir,
    workdir=workdir,
    models=models,
    sharders=sharders,
    kl_cfg=census.kl_config(
      models.cfgs["student"], models.cfgs["teacher"], config.loss.chunk_size
    ),
    source=source,
    eval_kwargs=eval_kwargs,
    truth=truth,
  )


def run(
  config: ml_collections.ConfigDict,
  workdir: str | None = None,
  extra_sections=(),
) -> dict:
  """Runs the configured analyses of a run and writes the report.

  Args:
    config: from `configs/analyze_rock.py`.
    workdir: overrides `config.workdir` (the analysed run's folder).
    extra_sections: callables `out_dir -> Section`, run after the analyses
      (they may read their JSON), appended to the report.

  Returns:
    {"out_dir", "report": {format: path}, analysis name: its JSON path,
    "seconds": {analysis name: wall seconds}}.
  """
  names = check(config)
  workdir = os.path.abspath(workdir) if workdir else config_lib.workdir(config)
  out_dir = os.path.abspath(
    config.analysis.out_dir or os.path.join(workdir, "analysis")
  )
  only_freeze = names == ["freeze"]
  if only_freeze:
    ctx = Context(config=config, out_dir=out_dir, workdir=workdir)
  else:
    ctx = _setup(config, workdir, out_dir)
  os.makedirs(ctx.out_dir, exist_ok=True)
  print(f"analysis of {workdir} -> {ctx.out_dir}", flush=True)
  if not only_freeze:
    start = time.time()
    sections.prepare(ctx)
    print(f"corpus: {time.time() - start:.0f} s", flush=True)
  result = {"out_dir": ctx.out_dir, "seconds": {}}
  parts = []
  for name in ANALYSES:
    if name not in names:
      continue
    start = time.time()
    numbers, section = sections.SECTIONS[name](ctx)
    path = ctx.path(f"{name}.json")
    metrics_lib.write_json(path, numbers)
    parts.append(section)
    result[name] = path
    result["seconds"][name] = time.time() - start
    print(f"{name}: {result['seconds'][name]:.0f} s -> {path}", flush=True)
  parts.extend(make(ctx.out_dir) for make in extra_sections)
  formats = config_lib.parse_list(config.analysis.formats)
  doc = report.Report(
    title=f"Rock-Token analysis of {os.path.basename(workdir)}",
    preamble=sections.preamble(ctx),
    sections=tuple(parts),
  )
  result["report"] = report.write(doc, ctx.out_dir, tuple(formats))
  with open(ctx.path("analysis_config.json"), "w") as f:
    json.dump(json.loads(config.to_json_best_effort()), f, indent=2)
  return result
