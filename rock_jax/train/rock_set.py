"""Rock-Token reports from the tracker: the top-K table, shares, static sets.

Host-side helpers of the training loop (`rock_jax.train`); the selection is
`rock.rock_ids`, the function the jitted step refreshes the set with.
"""

from __future__ import annotations

import functools

import jax
import numpy as np

from rock_jax import rock, rock_lists


def token_text(tokenizer, token_id: int) -> str:
  """The token as text; its raw vocabulary entry if it is a partial UTF-8
  sequence (one byte of a multi-byte character decodes to U+FFFD)."""
  text = tokenizer.decode([token_id])
  if "\ufffd" in text:
    return tokenizer.convert_ids_to_tokens(token_id)
  return text


def selection(config, vocab_size) -> dict:
  """`rock.rock_ids` keyword arguments from `config.rock`."""
  r = config.rock
  return dict(
    k=min(r.k, vocab_size),
    min_count=r.min_count,
    exclude_most_frequent=r.exclude_most_frequent,
    max_improvement=None if r.max_improvement < 0 else r.max_improvement,
    source=r.source,
  )


@functools.partial(jax.jit, static_argnames=("kwargs",))
def _select(state, kwargs):
  return rock.rock_ids(state, **dict(kwargs))


def rock_table(state, tokenizer, config):
  """The tracker's current top-K: id, text, count, mean loss, R(v)."""
  kwargs = selection(config, state.vocab_size)
  ids = np.asarray(_select(state, tuple(sorted(kwargs.items()))))
  ids = ids[ids >= 0]
  counts = np.asarray(state.total_count_V)
  mean = np.asarray(rock.mean_loss(state, kwargs["source"]))
  score = np.asarray(rock.rock_score(state, kwargs["source"]))
  table = [
    {
      "id": int(i),
      "text": token_text(tokenizer, int(i)),
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
  return ids, table, shares


def fixed_mask(config, vocab_size, tracker_state, tokenizer):
  """The static rock set for the step, or None to use the tracker's."""
  r = config.rock
  if r.static_list:
    ids = rock_lists.load_rock_json(r.static_list, vocab_size)
    return np.asarray(rock.rock_mask(ids, vocab_size))
  if r.control == "frequency_matched":
    ids, _, _ = rock_table(tracker_state, tokenizer, config)
    control = rock_lists.frequency_matched_control(
      ids, np.asarray(tracker_state.total_count_V), seed=r.control_seed
    )
    return np.asarray(rock.rock_mask(control, vocab_size))
  return None
