"""Accuracy of a model on a split: rollouts graded by the verifiers.

`graded_batches` yields every batch's rollout with its grading (greedy, or
several samples per problem for pass@k); `greedy_batches` is its greedy
case, for analyses that need more than the accuracy (`rock_jax.analysis`).

Each process renders, decodes and grades only its own examples; the counts
are summed over processes. Batches keep one static shape (the last one is
filled with repeats that are not graded), so evaluation compiles once.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator

import jax
import numpy as np
from jax.experimental import multihost_utils

from rock_jax import sharding as shd
from rock_jax.data import loader, prompts, schema, verifiers
from rock_jax.models.config import ModelConfig
from rock_jax.sampler import rollout


@dataclasses.dataclass(frozen=True)
class Result:
  """Accuracy over all processes, plus a few graded samples of process 0."""

  correct: int
  total: int
  samples: tuple[tuple[str, str, bool], ...]  # (prompt, completion, correct)
  # Per problem in stored order, over all processes (paired comparisons).
  per_example: tuple[bool, ...] = ()

  @property
  def accuracy(self) -> float:
    return self.correct / max(self.total, 1)


@dataclasses.dataclass(frozen=True)
class GradedBatch:
  """One evaluation batch: both roles' prompts, the rollout, the grades.

  The rollout is global (`sharding.to_global`), the prompts are this
  process's host arrays; `real` prompts are its examples, the rest repeat
  the last one and are not graded. Each prompt has `num_samples`
  completions, prompt-major: completion r is of example `r // num_samples`.
  """

  examples: list
  real: int
  prompts: prompts.PromptBatch
  role: str  # whose prompt the decoding model got
  rollout: rollout.Rollout
  completion_ids: list[list[int]]  # real prompts' rows only
  texts: list[str]
  correct: list[bool]
  num_samples: int = 1

  @property
  def prompt_BxP(self) -> tuple[np.ndarray, np.ndarray]:
    """The decoding role's (tokens, mask), host."""
    return self.prompts.of(self.role)


def head(source, num_examples: int) -> loader.Records:
  """The first `num_examples` records (0: all)."""
  return loader.Records(source, 0, num_examples or None)


def _local_batches(source, num_examples, local_batch):
  """This process's examples in batches of `local_batch`, filled up by
  repeating the last one; yields `(examples, real)`."""
  for examples in loader.eval_batches(head(source, num_examples), local_batch):
    real = len(examples)
    if not real:
      # This process ran out first; it still takes part in the collective.
      examples = [schema.from_record(source[0])] * local_batch
    examples = list(examples) + [examples[-1]] * (local_batch - len(examples))
    yield examples, real


def _grade(examples, rows, completion, completion_mask, tokenizer, samples):
  """Ids, texts and verdicts of the first `rows` rows (`samples` rows per
  example)."""
  ids, texts, correct = [], [], []
  for r in range(rows):
    example = examples[r // samples]
    ids.append(completion[r][completion_mask[r]].tolist())
    texts.append(tokenizer.decode(ids[-1], skip_special_tokens=True))
    verify = verifiers.get_verifier(example.task)
    correct.append(bool(verify(texts[-1], example.reference)))
  return ids, texts, correct


def pass_at_k(n: int, c: int, k: int) -> float:
  """The unbiased pass@k of one problem with `c` of `n` samples correct:
  1 - C(n - c, k) / C(n, k), the chance that k of the n drawn without
  replacement hold a correct one."""
  if not 0 <= c <= n or not 1 <= k <= n:
    raise ValueError(f"pass@k needs 0 <= c={c} <= n={n} and 1 <= k={k} <= n")
  return 1.0 - math.comb(n - c, k) / math.comb(n, k)


def greedy_batches(cfg: ModelConfig, params, source, **kwargs):
  """`graded_batches` with greedy decoding, one completion per problem."""
  return graded_batches(cfg, params, source, sampling="greedy", **kwargs)


def graded_batches(
  cfg: ModelConfig,
  params,
  source,
  *,
  role: str,
  student: prompts.PromptFormat,
  teacher: prompts.PromptFormat,
  max_new_tokens: int,
  batch_size: int,
  num_examples: int = 0,
  sharder: shd.Sharder,
  logit_bias_V=None,
  sampling: str | rollout.Sampling = "greedy",
  num_samples: int = 1,
  seed: int = 0,
) -> Iterator[GradedBatch]:
  """Rollouts of one model over (the head of) a split, graded.

  Args:
    cfg, params: the model.
    source: random-access records (`builders.open_split`).
    role: "student" or "teacher": whose prompt (and tokenizer) the model
      gets; the teacher's carries the privileged text.
    student, teacher: both roles' prompt formats (both are rendered, so an
      analysis can score the rollout with the other model).
    max_new_tokens: generation budget.
    batch_size: global batch size (a multiple of the batch devices).
    num_examples: 0 evaluates the whole split.
    sharder: the model's layout; prompts are split over its batch axes.
    logit_bias_V: optional float32 [V] added to the logits at every step.
    sampling: "greedy" or a `sampling.Sampling`.
    num_samples: completions per problem.
    seed: the samples' key; batch i draws with `fold_in(key(seed), i)`.

  Yields:
    A `GradedBatch` per local batch; every process yields the same number.
  """
  tokenizer = {"student": student, "teacher": teacher}[role].tokenizer
  local_batch = batch_size // jax.process_count()
  sharding = sharder.sharding((shd.BATCH, shd.LENGTH))
  batches = _local_batches(source, num_examples, local_batch)
  for i, (examples, real) in enumerate(batches):
    batch = prompts.make_prompt_batch(
      examples, student=student, teacher=teacher
    )
    tokens, mask = shd.to_global(batch.of(role), sharding)
    out = rollout.generate(
      cfg,
      params,
      tokens,
      mask,
      jax.random.fold_in(jax.random.key(seed), i),
      max_new_tokens,
      sampling,
      num_samples=num_samples,
      logit_bias_V=logit_bias_V,
      crop=False,
      sharder=sharder,
    )
    width = out.tokens.shape[1] - tokens.shape[1]
    completion = shd.to_local(out.tokens)[:, -width:]
    completion_mask = shd.to_local(out.completion_mask)[:, -width:]
    rows = real * num_samples
    graded = _grade(
      examples, rows, completion, completion_mask, tokenizer, num_samples
    )
    yield GradedBatch(examples, real, batch, role, out, *graded, num_samples)


def gather_per_example(values, total: int) -> np.ndarray:
  """Per-problem non-negative ints of every process, in stored order.

  Args:
    values: this process's values, one per problem it graded.
    total: problems over all processes.

  Returns:
    int32 `[total]` (this process's values when it runs alone).
  """
  values = np.asarray(values, np.int32)
  if jax.process_count() == 1:
    return values
  # Contiguous per-process slices in stored order; -1 pads the short ones.
  width = -(-total // jax.process_count())
  padded = np.full(width, -1, np.int32)
  padded[: len(values)] = values
  gathered = multihost_utils.process_allgather(padded).reshape(-1)
  return gathered[gathered >= 0]


def accuracy(
  cfg: ModelConfig,
  params,
  source,
  *,
  num_samples_logged: int = 0,
  **batch_kwargs,
) -> Result:
  """Greedy accuracy of one model on (the first `num_examples` of) `source`.

  Args:
    cfg, params, source: as in `greedy_batches`.
    num_samples_logged: how many graded completions to return.
    **batch_kwargs: the other `greedy_batches` arguments (role, student,
      teacher, max_new_tokens, batch_size, num_examples, sharder,
      logit_bias_V).

  Returns:
    A `Result`.
  """
  tokenizer = batch_kwargs[batch_kwargs["role"]].tokenizer
  correct, samples = [], []
  for graded in greedy_batches(cfg, params, source, **batch_kwargs):
    correct.extend(graded.correct)
    tokens, mask = graded.prompt_BxP
    for b in range(min(graded.real, num_samples_logged - len(samples))):
      prompt = tokenizer.decode(tokens[b][mask[b]].tolist())
      samples.append((prompt, graded.texts[b], graded.correct[b]))
  per_example = gather_per_example(
    correct, len(head(source, batch_kwargs.get("num_examples", 0)))
  )
  return Result(
    int(per_example.sum()),
    len(per_example),
    tuple(samples),
    tuple(bool(x) for x in per_example),
  )
