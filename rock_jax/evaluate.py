"""Accuracy of a model on a split: greedy rollouts graded by the verifiers.

Each process renders, decodes and grades only its own examples; the counts
are summed over processes. Batches keep one static shape (the last one is
filled with repeats that are not graded), so evaluation compiles once.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import jax
import numpy as np
from jax.experimental import multihost_utils

from rock_jax import rollout
from rock_jax import sharding as shd
from rock_jax.data import loader, prompts, schema, verifiers
from rock_jax.models.config import ModelConfig


@dataclasses.dataclass(frozen=True)
class Result:
  """Accuracy over all processes, plus a few graded samples of process 0."""

  correct: int
  total: int
  samples: tuple[tuple[str, str, bool], ...]  # (prompt, completion, correct)

  @property
  def accuracy(self) -> float:
    return self.correct / max(self.total, 1)


class _Head(Sequence):
  """The first `n` records of a random-access source."""

  def __init__(self, source, n):
    self._source, self._n = source, min(n, len(source)) if n else len(source)

  def __len__(self):
    return self._n

  def __getitem__(self, i):
    return self._source[i]

  def __getitems__(self, indices):
    return [self._source[i] for i in indices]


def accuracy(
  cfg: ModelConfig,
  params,
  source,
  *,
  side: str,
  student_tokenizer,
  teacher_tokenizer,
  student_len: int,
  teacher_len: int,
  max_new_tokens: int,
  batch_size: int,
  num_examples: int = 0,
  sharder: shd.Sharder,
  template_kwargs: tuple[dict, dict] = ({}, {}),
  num_samples_logged: int = 0,
) -> Result:
  """Greedy accuracy of one model on (the first `num_examples` of) `source`.

  Args:
    cfg, params: the model.
    source: random-access records (`builders.open_split`).
    side: "student" or "teacher": whose prompt (and tokenizer) the model
      gets; the teacher's carries the privileged text.
    student_tokenizer, teacher_tokenizer: both sides' tokenizers.
    student_len, teacher_len: prompt widths (bucket sizes).
    max_new_tokens: generation budget.
    batch_size: global batch size (a multiple of the batch devices).
    num_examples: 0 evaluates the whole split.
    sharder: the model's layout; prompts are split over its batch axes.
    template_kwargs: (student, teacher) chat-template variables.
    num_samples_logged: how many graded completions to return.

  Returns:
    A `Result`.
  """
  tokenizer = teacher_tokenizer if side == "teacher" else student_tokenizer
  local_batch = batch_size // jax.process_count()
  sharding = sharder.sharding((shd.BATCH, shd.LENGTH))
  correct = total = 0
  samples = []
  for examples in loader.eval_batches(_Head(source, num_examples), local_batch):
    real = len(examples)
    if not real:
      # This process ran out first; it still takes part in the collective.
      examples = [schema.from_record(source[0])] * local_batch
    examples = list(examples) + [examples[-1]] * (local_batch - len(examples))
    batch = prompts.make_prompt_batch(
      examples,
      student_tokenizer=student_tokenizer,
      teacher_tokenizer=teacher_tokenizer,
      student_len=student_len,
      teacher_len=teacher_len,
      student_template_kwargs=template_kwargs[0],
      teacher_template_kwargs=template_kwargs[1],
    )
    if side == "teacher":
      arrays = batch.teacher_tokens_BxP, batch.teacher_mask_BxP
    else:
      arrays = batch.student_tokens_BxP, batch.student_mask_BxP
    tokens, mask = shd.to_global(arrays, sharding)
    out = rollout.generate(
      cfg,
      params,
      tokens,
      mask,
      jax.random.key(0),
      max_new_tokens,
      "greedy",
      crop=False,
      sharder=sharder,
    )
    width = out.tokens.shape[1] - tokens.shape[1]
    completion = shd.to_local(out.tokens)[:, -width:]
    completion_mask = shd.to_local(out.completion_mask)[:, -width:]
    for b in range(real):
      ids = completion[b][completion_mask[b]].tolist()
      text = tokenizer.decode(ids, skip_special_tokens=True)
      ok = verifiers.get_verifier(examples[b].task)(text, examples[b].reference)
      correct += ok
      total += 1
      if len(samples) < num_samples_logged:
        prompt = tokenizer.decode(arrays[0][b][arrays[1][b]].tolist())
        samples.append((prompt, text, bool(ok)))
  counts = np.asarray([correct, total], np.int64)
  if jax.process_count() > 1:
    counts = multihost_utils.process_allgather(counts).sum(axis=0)
  return Result(int(counts[0]), int(counts[1]), tuple(samples))
