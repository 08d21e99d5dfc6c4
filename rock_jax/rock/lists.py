"""Rock-Token id lists on the host (NumPy): static `rock.json` lists,
frequency-matched control sets, detection scores against planted ids.

Shapes: V vocabulary, K listed ids.
"""

import collections
import json
import os

import numpy as np
from scipy import optimize

from rock_jax import storage

# Where an object-shaped JSON file may keep its ids, and the id field of a
# list of records; the paper's own `rock.json` is a flat list of ids.
_LIST_KEYS = ("token_ids", "ids", "rock_ids", "tokens", "rock")
_RECORD_KEYS = ("token_id", "id")


def load_rock_json(path, vocab_size=None):
  """Token ids from a JSON file, in file order.

  Accepts the paper's `rock.json` (a flat list of ids, e.g. `[3070, 279]`),
  a list of records such as `[{"token_id": 3070, "token": "**"}]` (field
  "token_id" or "id"), or an object holding either under one of the keys
  token_ids, ids, rock_ids, tokens, rock. Rejects anything else with the file
  name and the offending entry: non-integer ids, negative ids, ids >=
  vocab_size, duplicates, an empty list.

  Args:
    path: the JSON file, a local path or a `gs://` URL.
    vocab_size: if given, every id must be below it.

  Returns:
    int32 [K] ids (turn them into a mask with `rock.rock_mask`).
  """
  path = os.fspath(path)
  if storage.is_url(path) and not storage.isfile(path):
    raise FileNotFoundError(
      f"{path}: no such object; expected a JSON list of token ids such as "
      "[3070, 279] (the paper's rock.json)"
    )
  try:
    data = json.loads(storage.read_text(path))
  except json.JSONDecodeError as e:
    raise ValueError(
      f"{path}: not JSON ({e}); expected a list of token ids such as "
      "[3070, 279] (the paper's rock.json)"
    ) from None
  if isinstance(data, dict):
    key = next((k for k in _LIST_KEYS if k in data), None)
    if key is None:
      raise ValueError(
        f"{path}: object with keys {sorted(data)} has none of "
        f"{list(_LIST_KEYS)} holding the token ids"
      )
    data = data[key]
  if not isinstance(data, list) or not data:
    raise ValueError(f"{path}: expected a non-empty list of token ids")
  ids = []
  for index, entry in enumerate(data):
    token_id = entry
    if isinstance(entry, dict):
      key = next((k for k in _RECORD_KEYS if k in entry), None)
      if key is None:
        raise ValueError(
          f"{path}: entry {index} {entry!r} has no {list(_RECORD_KEYS)} field"
        )
      token_id = entry[key]
    if isinstance(token_id, bool) or not isinstance(token_id, int):
      raise ValueError(
        f"{path}: entry {index} is {token_id!r}; token ids must be integers"
      )
    ids.append(token_id)
  check_vocab(ids, vocab_size, path)
  repeated = sorted(i for i, n in collections.Counter(ids).items() if n > 1)
  if repeated:
    raise ValueError(f"{path}: repeated token ids {repeated}")
  return np.asarray(ids, np.int32)


def check_vocab(ids, vocab_size: int | None, path: str) -> None:
  """Raises a ValueError naming the list `path` and the entry when an id is
  negative or (with a `vocab_size`) outside the vocabulary."""
  for index, token_id in enumerate(ids):
    if token_id < 0 or (vocab_size is not None and token_id >= vocab_size):
      raise ValueError(
        f"{path}: entry {index} is {token_id}, outside "
        f"[0, {vocab_size if vocab_size is not None else 'inf'})"
      )


def frequency_matched_control(
  rock_ids, counts_V, *, seed=0, jitter=0.0, exclude_ids=()
):
  """A control set with the rock set's token frequencies (the paper's §6).

  As the paper's `generate_control_tokens.py`: a Hungarian assignment
  (`scipy.optimize.linear_sum_assignment`) of every rock id to a distinct
  observed non-rock id, minimising Σ |log10 f(rock) − log10 f(control)|.
  Candidates are shuffled with `seed` first, so ties (the many ids with equal
  counts) go to random ids rather than the lowest; `jitter` > 0 also adds
  Uniform(−jitter, jitter) decades to each candidate's log-frequency, giving
  a different, about equally well matched set per seed. Matching is only as
  good as the candidates: the most frequent rocks have no peers of similar
  frequency (the paper's controls carry 16,893 occurrences against 85,120).

  Args:
    rock_ids: rock ids; negative entries (unfilled `rock_ids` slots) are
      ignored.
    counts_V: occurrences per id on the detection corpus, e.g.
      `np.asarray(state.total_count_V)`.
    seed: seed of the shuffle and the jitter.
    jitter: log10-frequency noise amplitude in decades (0 = exact matching).
    exclude_ids: ids never to use as controls (e.g. special tokens).

  Returns:
    int32 [K] control ids; entry i is matched to the i-th non-negative rock id.
  """
  counts = np.asarray(counts_V)
  rock = np.asarray(rock_ids).ravel()
  rock = rock[rock >= 0]
  if rock.size == 0 or np.unique(rock).size != rock.size:
    raise ValueError(f"rock_ids must be non-empty and distinct; got {rock}")
  if rock.max() >= counts.size:
    raise ValueError(
      f"rock id {rock.max()} is outside counts_V of size {counts.size}"
    )
  unseen = rock[counts[rock] <= 0]
  if unseen.size:
    raise ValueError(
      f"rock ids {unseen.tolist()} have count 0; frequency matching needs "
      "ids observed in the corpus"
    )
  eligible = counts > 0
  eligible[rock] = False
  eligible[np.asarray(exclude_ids, dtype=np.int64)] = False
  rng = np.random.default_rng(seed)
  candidates = rng.permutation(np.flatnonzero(eligible))
  if candidates.size < rock.size:
    raise ValueError(
      f"only {candidates.size} observed non-rock ids to match "
      f"{rock.size} rock ids"
    )
  log_rock = np.log10(counts[rock])
  log_candidate = np.log10(counts[candidates])
  if jitter:
    log_candidate = log_candidate + rng.uniform(
      -jitter, jitter, candidates.size
    )
  # An optimal assignment only uses each rock id's K nearest candidates (were
  # one matched further away, one of its K nearest would be free and no
  # worse). They lie within K places of it in log-frequency order (a stable
  # sort keeps the shuffled order among ties), so the cost matrix shrinks
  # from K x V to K x at most 2K².
  order = np.argsort(log_candidate, kind="stable")
  positions = np.searchsorted(log_candidate[order], log_rock)
  windows = [
    np.arange(max(p - rock.size, 0), min(p + rock.size, order.size))
    for p in positions
  ]
  subset = order[np.unique(np.concatenate(windows))]
  cost = np.abs(log_rock[:, None] - log_candidate[subset][None, :])
  rows, cols = optimize.linear_sum_assignment(cost)
  return candidates[subset[cols[np.argsort(rows)]]].astype(np.int32)


def detection(found_ids, truth_ids) -> dict[str, float]:
  """Precision and recall of a detected rock set against planted ids."""
  found, truth = set(map(int, found_ids)), set(map(int, truth_ids))
  hits = len(found & truth)
  return {
    "detection_precision": hits / max(len(found), 1),
    "detection_recall": hits / max(len(truth), 1),
  }
