"""The run's rock-set policy: what the step weights by λ, and the tracker's
top-K table.

`config.rock` becomes one `rock.Policy` (λ, the `rock.Selection`, the
warm-up and refresh schedule) used by the jitted step and by the table. The
step weights the tracker's own selection unless the run has a static set:
a `rock.json` file, or the paper's frequency-matched control, drawn once at
the end of the warm-up and kept in the progress record.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence
from typing import Any

import jax
import ml_collections
import numpy as np

from rock_jax import rock, rock_lists
from rock_jax.data import loader, schema, tokenization


def policy(
  config: ml_collections.ConfigDict,
  vocab_size: int,
  protected: tuple[int, ...] = (),
) -> rock.Policy:
  """The step's Rock-Token weighting from `config.rock`; `protected` ids
  (`protected_ids`) are never selected."""
  r = config.rock
  selection = rock.Selection(
    k=min(r.k, vocab_size),
    min_count=r.min_count,
    exclude_most_frequent=r.exclude_most_frequent,
    max_improvement=None if r.max_improvement < 0 else r.max_improvement,
    source=r.source,
    protected=protected,
  )
  return rock.Policy(
    lam=r.lam,
    align=r.align,
    selection=selection,
    warmup_steps=r.warmup_steps,
    refresh_every=r.refresh_every,
  )


def protected_ids(
  config: ml_collections.ConfigDict, source: Sequence, tokenizer
) -> tuple[int, ...]:
  """The ids `rock.protect` keeps out of the rock set, sorted.

  "answers": every id of the reference answers of the first
  `rock.protect_examples` training records. A verifier reads these tokens
  (the digits of a sum, the unit of a quantity), so freezing one removes
  the gradient of content the student must get right; style tokens never
  occur in a reference. "": none.
  """
  r = config.rock
  if not r.protect:
    return ()
  records = loader.Records(source, 0, r.protect_examples)
  ids = set()
  for record in records.__getitems__(range(len(records))):
    reference = schema.from_record(record).reference
    ids.update(tokenizer.encode(reference, add_special_tokens=False))
  return tuple(sorted(ids))


@functools.partial(jax.jit, static_argnames=("selection",))
def _select(state, selection):
  return rock.rock_ids(state, selection)


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

  policy: rock.Policy
  tokenizer: Any
  control_seed: int | None
  static_V: np.ndarray | None
  control_ids: list[int] | None = None

  @classmethod
  def from_config(
    cls, config, tokenizer, vocab_size, control_ids=None, protected=()
  ):
    """The run's set; `control_ids` restores a control drawn earlier and
    `protected` ids (`protected_ids`) are never selected."""
    r = config.rock
    drawn = control_ids is not None
    control_seed = r.control_seed if r.control != "none" else None
    if drawn:
      static_V = np.asarray(rock.rock_mask(control_ids, vocab_size))
    elif r.static_list:
      ids = rock_lists.load_rock_json(r.static_list, vocab_size)
      static_V = np.asarray(rock.rock_mask(ids, vocab_size))
    elif control_seed is not None:
      static_V = np.zeros(vocab_size, bool)  # until the warm-up ends
    else:
      static_V = None
    return cls(
      policy(config, vocab_size, protected),
      tokenizer,
      control_seed,
      static_V,
      list(control_ids) if drawn else None,
    )

  def after_step(self, step: int, tracker: rock.RockState) -> None:
    """Draws the control set when the warm-up ends (once per run)."""
    due = step == self.policy.warmup_steps and self.control_ids is None
    if self.control_seed is None or not due:
      return
    control = rock_lists.frequency_matched_control(
      self.selected(tracker),
      np.asarray(tracker.total_count_V),
      seed=self.control_seed,
    )
    self.static_V = np.asarray(rock.rock_mask(control, tracker.vocab_size))
    self.control_ids = np.flatnonzero(self.static_V).tolist()

  def selected(self, tracker: rock.RockState) -> np.ndarray:
    """The tracker's current selection, ids by decreasing R(v)."""
    ids = np.asarray(_select(tracker, self.policy.selection))
    return ids[ids >= 0]

  def table(self, tracker: rock.RockState):
    """The tracker's top-K and its shares of the tokens and of the loss.

    Returns:
      `(ids, rows, shares)`: rows of id, text, count, mean loss and R(v);
      shares `rock_token_share` and `rock_kl_share` since the start.
    """
    source = self.policy.selection.source
    ids = self.selected(tracker)
    counts = np.asarray(tracker.total_count_V)
    mean = np.asarray(rock.mean_loss(tracker, source))
    score = np.asarray(rock.rock_score(tracker, source))
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
    total_loss = np.asarray(tracker.total_loss_V)
    shares = {
      "rock_token_share": float(counts[ids].sum() / max(counts.sum(), 1)),
      "rock_kl_share": float(
        total_loss[ids].sum() / max(total_loss.sum(), 1e-30)
      ),
    }
    return ids, rows, shares
