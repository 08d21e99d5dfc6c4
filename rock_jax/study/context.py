"""What the analysis sections share: the session, the analysis corpus and its
statistics (decoded once, then frozen), the output folder (or URL)."""

from __future__ import annotations

import dataclasses
from typing import Any

import ml_collections
import numpy as np

from rock_jax import storage
from rock_jax.analysis import census
from rock_jax.data import tokenization
from rock_jax.opd.train_step import StepConfig
from rock_jax.train import session as session_lib


@dataclasses.dataclass(frozen=True)
class Census:
  """The analysed student's corpus, its per-type statistics, the rock set
  and the comparison groups, as every section reads them."""

  corpus: census.Corpus
  stats: census.TypeStats
  rocks: np.ndarray
  groups: dict[str, np.ndarray]


@dataclasses.dataclass(frozen=True)
class Context:
  """An analysis run. The freeze comparison alone reads only run folders,
  so `session`, `source`, `kl_cfg` and `census` are None without models."""

  config: ml_collections.ConfigDict
  out_dir: str
  workdir: str
  session: session_lib.Session | None = None
  source: Any = None
  kl_cfg: StepConfig | None = None
  census: Census | None = None

  @property
  def analysis(self) -> ml_collections.ConfigDict:
    return self.config.analysis

  @property
  def truth(self) -> frozenset[int] | None:
    return self.session.truth if self.session else None

  @property
  def selection(self) -> dict:
    """`census.top_k` filters of the configured rock set."""
    a = self.analysis
    return dict(
      min_count=a.min_count, exclude_most_frequent=a.exclude_most_frequent
    )

  @property
  def vocab_size(self) -> int:
    return self.kl_cfg.student.vocab_size

  def params(self, role: str):
    return self.session.params[role]

  def text(self, token_id) -> str:
    return tokenization.token_text(self.session.student.tokenizer, token_id)

  def path(self, name: str) -> str:
    """A file in the output folder (or below its URL)."""
    return storage.join(self.out_dir, name)

  def eval_kwargs(self, **overrides) -> dict:
    """Greedy decoding of the corpus (`evaluate.greedy_batches`)."""
    a = self.analysis
    kwargs = dict(
      student=self.session.student.prompt,
      teacher=self.session.teacher.prompt,
      max_new_tokens=a.max_new_tokens or self.config.rollout.max_new_tokens,
      batch_size=a.batch_size,
      num_examples=a.num_examples,
    )
    return {**kwargs, **overrides}

  def collect(self, student_params) -> census.Corpus:
    """The corpus of a student checkpoint: greedy rollouts, teacher-forced."""
    return census.collect(
      self.kl_cfg,
      student_params,
      self.params("teacher"),
      self.source,
      sharders=self.session.sharders,
      **self.eval_kwargs(),
    )


def open(  # noqa: A001 (the module's verb)
  config: ml_collections.ConfigDict, workdir: str, out_dir: str
) -> Context:
  """Loads the teacher and the analysed student, and opens the split."""
  a = config.analysis
  student = a.student or storage.join(workdir, "export")
  if not storage.isfile(storage.join(student, "config.json")):
    raise FileNotFoundError(
      f"analysis.student={a.student!r}: no model at {student!r}; expected "
      "a finished run's workdir (its export/) as --config.workdir, or a "
      "Hugging Face folder as --config.analysis.student"
    )
  session = session_lib.open(config, student_path=student)
  split = a.split or config.data.eval_split
  if not split:
    raise ValueError(
      "analysis.split and data.eval_split are both empty: the corpus needs "
      "a split of prompts"
    )
  return Context(
    config=config,
    out_dir=out_dir,
    workdir=workdir,
    session=session,
    source=session.open_split(split),
    kl_cfg=census.kl_config(
      session.student.cfg, session.teacher.cfg, config.loss.chunk_size
    ),
  )


def with_census(ctx: Context) -> Context:
  """Decodes and scores the corpus, selects the rocks and the groups."""
  a = ctx.analysis
  corpus = ctx.collect(ctx.params("student"))
  corpus.save(ctx.path("corpus.npz"))
  stats = census.type_stats(
    corpus.ids_BxN, corpus.kl_BxN, corpus.mask_BxN, ctx.vocab_size
  )
  rocks = census.top_k(stats, a.k, **ctx.selection)
  groups = census.groups(
    stats,
    rocks,
    high_kl_k=a.high_kl_k,
    high_kl_min_count=a.high_kl_min_count,
    random_k=a.random_k,
    seed=a.random_seed,
  )
  return dataclasses.replace(ctx, census=Census(corpus, stats, rocks, groups))
