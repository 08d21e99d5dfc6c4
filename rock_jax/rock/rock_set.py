"""The set a run weights by λ, and the tracker's top-K table.

The step weights the tracker's own selection (`tracker.Policy`) unless the
run has a static set: a `rock.json` list, or the paper's frequency-matched
control, drawn once at the end of the warm-up and kept by the caller.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from rock_jax.data import loader, schema, tokenization
from rock_jax.rock import lists, tracker


def protected_ids(
  source: Sequence, tokenizer, examples: int
) -> tuple[int, ...]:
  """Every id of the reference answers of the first `examples` records of
  `source`, sorted: the ids a guard keeps out of the rock set.

  A verifier reads these tokens (the digits of a sum, the unit of a
  quantity), so freezing one removes the gradient of content the student
  must get right; style tokens never occur in a reference.
  """
  records = loader.Records(source, 0, examples)
  ids = set()
  for record in records.__getitems__(range(len(records))):
    reference = schema.from_record(record).reference
    ids.update(tokenizer.encode(reference, add_special_tokens=False))
  return tuple(sorted(ids))


def answer_guard(
  protect: str, source: Sequence, tokenizer, examples: int, where: str
) -> tuple[int, ...]:
  """The ids `rock.protect` keeps out of the rock set.

  Args:
    protect: "" (none), "answers" or "auto" (answers where there are any).
    source: the training split's records.
    tokenizer: the student's.
    examples: records read from the start of `source`.
    where: the data, as the error names it (e.g. "data.name='jsonl'").

  Returns:
    `protected_ids` of the first `examples` records; () for "" and for
    "auto" on data without reference answers.

  Raises:
    ValueError: "answers" on data whose records have no reference answer.
  """
  if not protect:
    return ()
  ids = protected_ids(source, tokenizer, examples)
  if ids or protect == "auto":
    return ids
  raise ValueError(
    f"rock.protect='answers': the first {examples} training records of "
    f"{where} have no reference answer, so there is no content to guard; "
    "use rock.protect='auto' (on such data the rock set is guarded by "
    "rock.min_loss_ratio alone) or rock.protect='' (no guard)"
  )


@functools.partial(jax.jit, static_argnames=("selection",))
def _select(state, selection):
  return tracker.rock_ids(state, selection)


@functools.partial(jax.jit, static_argnames=("ranking",))
def _top(state, ranking):
  ids = tracker.rock_ids(state, ranking)
  return ids, tracker.rock_score(state, ranking.source)[jnp.maximum(ids, 0)]


@dataclasses.dataclass
class RockSet:
  """The weighted set of a run.

  Attributes:
    policy: the step's weighting.
    tokenizer: the student's (token texts of the table).
    control_seed: seed of the frequency-matched control, or None for none.
    static_V: bool [V] the step weights instead of the tracker's selection,
      or None to weight the selection.
    control_ids: the control set once drawn (sorted ids), else None.
  """

  policy: tracker.Policy
  tokenizer: Any
  control_seed: int | None
  static_V: np.ndarray | None
  control_ids: list[int] | None = None

  @classmethod
  def create(
    cls,
    policy,
    tokenizer,
    vocab_size,
    *,
    static_ids=None,
    control_seed=None,
    control_ids=None,
  ):
    """The run's set: the tracker's selection under `policy`, or the ids
    `static_ids` (a `rock.json` list), or a frequency-matched control drawn
    with `control_seed` when the warm-up ends (`control_ids`: one drawn
    earlier, restored)."""
    ids = control_ids if control_ids is not None else static_ids
    if ids is not None:
      static_V = np.asarray(tracker.rock_mask(ids, vocab_size))
    elif control_seed is not None:
      static_V = np.zeros(vocab_size, bool)  # until the warm-up ends
    else:
      static_V = None
    drawn = list(control_ids) if control_ids is not None else None
    return cls(policy, tokenizer, control_seed, static_V, drawn)

  def after_step(self, step: int, state: tracker.RockState) -> None:
    """Draws the control set when the warm-up ends (once per run)."""
    due = step == self.policy.warmup_steps and self.control_ids is None
    if self.control_seed is None or not due:
      return
    control = lists.frequency_matched_control(
      self.selected(state),
      np.asarray(state.total_count_V),
      seed=self.control_seed,
    )
    self.static_V = np.asarray(tracker.rock_mask(control, state.vocab_size))
    self.control_ids = np.flatnonzero(self.static_V).tolist()

  def selected(
    self, state: tracker.RockState, selection: tracker.Selection | None = None
  ) -> np.ndarray:
    """The tracker's current selection (default: the policy's), ids by
    decreasing R(v)."""
    ids = np.asarray(_select(state, selection or self.policy.selection))
    return ids[ids >= 0]

  def top(self, state: tracker.RockState):
    """The ranking's ids (-1 padded) and their R(v), dispatched without
    waiting (`top_text` reads them)."""
    return _top(state, self.policy.selection.ranking())

  def top_text(self, top, count: int = 10) -> str:
    """The first `count` ids of a fetched `top` as "'text' (R)" items."""
    ids, scores = top
    return ", ".join(
      f"{tokenization.token_text(self.tokenizer, int(i))!r} ({r:.3g})"
      for i, r in zip(ids[:count], scores[:count])
      if i >= 0
    )

  def table(self, state: tracker.RockState):
    """The tracker's top-K by its ranking (the guards only change what is
    weighted) and its shares of the tokens and of the loss.

    Returns:
      `(ids, rows, shares)`: rows of id, text, count, mean loss and R(v);
      shares `rock_token_share` and `rock_kl_share` since the start.
    """
    ranking = self.policy.selection.ranking()
    source = ranking.source
    ids = self.selected(state, ranking)
    counts = np.asarray(state.total_count_V)
    mean = np.asarray(tracker.mean_loss(state, source))
    score = np.asarray(tracker.rock_score(state, source))
    rows = [
      {
        "id": int(i),
        "text": tokenization.token_text(self.tokenizer, int(i)),
        "count": int(counts[i]),
        "mean_loss": float(mean[i]),
        "R": float(score[i]),
      }
      for i in ids
    ]
    total_loss = np.asarray(state.total_loss_V)
    shares = {
      "rock_token_share": float(counts[ids].sum() / max(counts.sum(), 1)),
      "rock_kl_share": float(
        total_loss[ids].sum() / max(total_loss.sum(), 1e-30)
      ),
    }
    return ids, rows, shares
