"""The Rock Score census: who carries the KL on a fixed analysis corpus.

The corpus is the student's greedy rollouts on an evaluation split, teacher-
forced through both models: at every generated position the exact full-
vocabulary reverse KL, credited to the token emitted there (the paper's
§2.2). Statistics are float64 on the host; R(v) = count(v) × mean KL(v), the
total KL the type carries.

Legend: B sequences, N completion length, V vocab, K top-K size.
"""

from __future__ import annotations

import dataclasses
import functools
import io

import jax
import numpy as np

from rock_jax import evaluate, storage
from rock_jax import sharding as shd
from rock_jax.analysis import stats
from rock_jax.opd import train_step
from rock_jax.opd.batch import OPDBatch, batch_from_rollout
from rock_jax.opd.train_step import StepConfig

# The arrays of an `OPDBatch`, in the order they are stored.
_BATCH_FIELDS = tuple(f.name for f in dataclasses.fields(OPDBatch))


@dataclasses.dataclass(frozen=True)
class Corpus:
  """Greedy rollouts with their per-position KL, on the host.

  `batch` holds both models' full sequences, so the corpus can be re-scored
  (another checkpoint, gradients) without decoding again.
  """

  batch: OPDBatch  # numpy arrays, every row a real example
  kl_BxN: np.ndarray  # float32 reverse KL at each completion position
  correct_B: np.ndarray  # bool, graded by the split's verifier

  @property
  def ids_BxN(self) -> np.ndarray:
    return np.asarray(self.batch.completion_BxN)

  @property
  def mask_BxN(self) -> np.ndarray:
    return np.asarray(self.batch.completion_mask_BxN, bool)

  def head(self, n: int) -> Corpus:
    """The first n sequences (nested prefixes for the stability check)."""
    return Corpus(
      jax.tree.map(lambda x: x[:n], self.batch),
      self.kl_BxN[:n],
      self.correct_B[:n],
    )

  def save(self, path: str) -> None:
    """Writes the corpus as one compressed `.npz` to a file or URL."""
    # A rollout's recorded log-probabilities, when it has them.
    arrays = {
      k: np.asarray(getattr(self.batch, k))
      for k in _BATCH_FIELDS
      if getattr(self.batch, k) is not None
    }
    with storage.open_for_write(path) as f:
      np.savez_compressed(
        f, kl_BxN=self.kl_BxN, correct_B=self.correct_B, **arrays
      )

  @classmethod
  def load(cls, path: str) -> Corpus:
    """A corpus written by `save`, from a file or URL."""
    with np.load(io.BytesIO(storage.read_bytes(path))) as f:
      batch = OPDBatch(**{k: f[k] for k in _BATCH_FIELDS if k in f})
      return cls(batch, f["kl_BxN"], f["correct_B"])


def kl_config(student, teacher, chunk_size: int) -> StepConfig:
  """The step settings of the census: exact reverse KL at T = 1."""
  return StepConfig(
    student=student, teacher=teacher, chunk_size=chunk_size, kind="reverse_kl"
  )


@functools.partial(jax.jit, static_argnames=("cfg", "sharders"))
def _score(cfg, student_params, teacher_params, batch, sharders):
  teacher = train_step.teacher_side(
    cfg, teacher_params, batch, sharders.teacher
  )
  return train_step.per_token_loss(
    cfg, student_params, teacher, batch, sharders.student
  )


def row_slices(batch: OPDBatch, batch_size: int, sharder: shd.Sharder):
  """Fixed sequences as global batches of `batch_size` rows.

  The last slice is filled with repeats of the last row whose completion
  mask is all False (they add nothing), so every slice compiles to the same
  program.

  Yields:
    (global `OPDBatch`, number of real rows).
  """
  rows = batch.completion_mask_BxN.shape[0]
  sharding = sharder.sharding((shd.BATCH, shd.LENGTH))
  for start in range(0, rows, batch_size):
    index = np.minimum(np.arange(start, start + batch_size), rows - 1)
    part = jax.tree.map(lambda x, i=index: np.asarray(x)[i], batch)
    real = np.arange(start, start + batch_size) < rows
    part = part.replace(
      completion_mask_BxN=part.completion_mask_BxN & real[:, None]
    )
    yield jax.tree.map(lambda x: shd.to_global(x, sharding), part), real.sum()


def score(
  cfg: StepConfig,
  student_params,
  teacher_params,
  batch: OPDBatch,
  sharders: train_step.Sharders,
  batch_size: int,
) -> np.ndarray:
  """Per-position reverse KL [B, N] of fixed sequences under a student,
  `batch_size` rows at a time (`row_slices`)."""
  out = []
  for part, real in row_slices(batch, batch_size, sharders.student):
    kl = _score(cfg, student_params, teacher_params, part, sharders)
    out.append(shd.to_local(kl)[:real])
  return np.concatenate(out).astype(np.float32)


def collect(
  cfg: StepConfig,
  student_params,
  teacher_params,
  source,
  *,
  sharders: train_step.Sharders,
  logit_bias_V=None,
  **eval_kwargs,
) -> Corpus:
  """Greedy student rollouts on `source`, scored by the teacher.

  Args:
    cfg: `kl_config(...)`.
    student_params, teacher_params: the two models.
    source: the analysis split's records.
    sharders: both models' layouts.
    logit_bias_V: optional decoding bias (knockout).
    **eval_kwargs: `evaluate.greedy_batches` arguments (student, teacher
      prompt formats, max_new_tokens, batch_size, num_examples).

  Returns:
    The `Corpus`, one row per example in stored order.
  """
  if jax.process_count() > 1:
    raise NotImplementedError(
      "the analyses run in one process (they gather the corpus on the host); "
      f"got jax.process_count()={jax.process_count()}"
    )
  sharding = sharders.student.sharding((shd.BATCH, shd.LENGTH))
  parts, kls, correct = [], [], []
  for graded in evaluate.greedy_batches(
    cfg.student,
    student_params,
    source,
    role="student",
    sharder=sharders.student,
    logit_bias_V=logit_bias_V,
    **eval_kwargs,
  ):
    out = graded.rollout
    width = out.tokens.shape[1] - graded.prompt_BxP[0].shape[1]
    student, teacher = shd.to_global(
      (graded.prompts.of("student"), graded.prompts.of("teacher")), sharding
    )
    batch = batch_from_rollout(
      out.tokens, out.completion_mask, student, teacher, width=width
    )
    kl = _score(cfg, student_params, teacher_params, batch, sharders)
    real = graded.real
    parts.append(jax.tree.map(lambda x, r=real: shd.to_local(x)[:r], batch))
    kls.append(shd.to_local(kl)[:real])
    correct.extend(graded.correct)
  batch = jax.tree.map(lambda *xs: np.concatenate(xs), *parts)
  return Corpus(
    batch, np.concatenate(kls).astype(np.float32), np.asarray(correct, bool)
  )


@dataclasses.dataclass(frozen=True)
class TypeStats:
  """Per-type statistics of a corpus, float64 [V]."""

  count_V: np.ndarray
  kl_sum_V: np.ndarray  # = R(v), the KL the type carries

  @property
  def mean_V(self) -> np.ndarray:
    """Mean KL per occurrence; NaN for types never emitted."""
    with np.errstate(invalid="ignore", divide="ignore"):
      return np.where(self.count_V > 0, self.kl_sum_V / self.count_V, np.nan)

  @property
  def rock_score_V(self) -> np.ndarray:
    return self.kl_sum_V


def type_stats(ids_BxN, kl_BxN, mask_BxN, vocab_size: int) -> TypeStats:
  """Counts and summed KL per emitted type (masked positions ignored)."""
  ids = np.asarray(ids_BxN)[np.asarray(mask_BxN, bool)]
  kl = np.asarray(kl_BxN, np.float64)[np.asarray(mask_BxN, bool)]
  return TypeStats(
    np.bincount(ids, minlength=vocab_size).astype(np.float64),
    np.bincount(ids, weights=kl, minlength=vocab_size),
  )


def top_k(
  ts: TypeStats, k: int, *, min_count: int = 1, exclude_most_frequent: int = 0
) -> np.ndarray:
  """The K types of largest R(v), descending (ties: lower id first).

  Args:
    ts: the corpus statistics.
    k: the set size (fewer if fewer types qualify).
    min_count: minimum occurrences (the figure list uses 2).
    exclude_most_frequent: drop this many most frequent types first (the
      figure list drops 5: spaces and common punctuation).
  """
  eligible = ts.count_V >= max(min_count, 1)
  if exclude_most_frequent:
    frequent = np.argsort(-ts.count_V, kind="stable")[:exclude_most_frequent]
    eligible[frequent] = False
  ids = np.flatnonzero(eligible)
  order = np.lexsort((ids, -ts.kl_sum_V[ids]))
  return ids[order][:k]


def coverage(ts: TypeStats, ks, **selection) -> np.ndarray:
  """Share of the corpus KL carried by the top-K types, for each K."""
  total = ts.kl_sum_V.sum()
  full = top_k(ts, int(max(ks)), **selection)
  return np.asarray([ts.kl_sum_V[full[:k]].sum() / total for k in ks])


def sequence_density(ids_BxN, mask_BxN, ids) -> np.ndarray:
  """Per sequence, the share of its generated tokens that are in `ids`."""
  mask = np.asarray(mask_BxN, bool)
  member = np.isin(np.asarray(ids_BxN), np.asarray(ids)) & mask
  counts = mask.sum(axis=1)
  return member.sum(axis=1)[counts > 0] / counts[counts > 0]


def stability(corpus: Corpus, sizes, ks, vocab_size: int, **selection) -> dict:
  """Jaccard of the top-K on nested prefixes against the full corpus.

  For each prefix size n and each K, the top-K of the first n sequences is
  compared with the top-K of all of them; the paper averages over n.

  Returns:
    {"sizes": [...], "ks": [...], "jaccard": [[J(n, K) for K] for n],
    "mean": [mean over n for each K]}.
  """
  full = type_stats(corpus.ids_BxN, corpus.kl_BxN, corpus.mask_BxN, vocab_size)
  sizes = [int(n) for n in sizes if int(n) < corpus.kl_BxN.shape[0]]
  table = []
  for n in sizes:
    part = corpus.head(n)
    ts = type_stats(part.ids_BxN, part.kl_BxN, part.mask_BxN, vocab_size)
    table.append(
      [
        stats.jaccard(
          top_k(ts, int(k), **selection), top_k(full, int(k), **selection)
        )
        for k in ks
      ]
    )
  mean = np.mean(table, axis=0) if table else np.full(len(ks), np.nan)
  return {
    "sizes": sizes,
    "ks": [int(k) for k in ks],
    "jaccard": table,
    "mean": mean.tolist(),
  }


def groups(
  ts: TypeStats,
  rocks,
  *,
  high_kl_k: int = 100,
  high_kl_min_count: int = 2,
  random_k: int = 200,
  seed: int = 0,
) -> dict[str, np.ndarray]:
  """The paper's three comparison groups of types (§2.6).

  rock: the given set. high_kl_rare: the largest mean KL among the other
  types seen at least `high_kl_min_count` times. random: other types (seen
  at least once, in neither group), drawn with `seed`.
  """
  rocks = np.asarray(rocks, np.int64)
  seen = ts.count_V > 0
  others = seen.copy()
  others[rocks] = False
  candidates = np.flatnonzero(others & (ts.count_V >= high_kl_min_count))
  mean = ts.mean_V
  order = np.lexsort((candidates, -mean[candidates]))
  high = candidates[order][:high_kl_k]
  others[high] = False
  pool = np.flatnonzero(others)
  rng = np.random.default_rng(seed)
  random = np.sort(rng.choice(pool, min(random_k, len(pool)), replace=False))
  return {"rock": rocks, "high_kl_rare": high, "random": random}
