"""Seeded, process-sharded, resumable batches of examples, read by index.

Every process computes the same global order (a NumPy permutation per epoch
from `(seed, epoch)`) and reads only its own contiguous slice of each global
batch, so no example is read twice across processes and nothing is
exchanged. The whole state is the number of global batches already produced,
which a checkpoint stores as JSON.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import jax
import numpy as np

from rock_jax.data import schema


class Records(Sequence):
  """Records `[start, stop)` of a random-access source, itself one.

  A held-out tail of a split, or the head an evaluation reads, without
  copying records.
  """

  def __init__(self, source: Sequence, start: int = 0, stop: int | None = None):
    n = len(source)
    self._source = source
    self._start = min(max(start, 0), n)
    self._stop = n if stop is None else min(max(stop, self._start), n)

  def __len__(self):
    return self._stop - self._start

  def __getitem__(self, i):
    if not -len(self) <= i < len(self):
      raise IndexError(f"record {i} of {len(self)}")
    return self._source[self._start + i % len(self)]

  def __getitems__(self, indices):
    for i in indices:
      if not 0 <= i < len(self):
        raise IndexError(f"record {i} of {len(self)}")
    return _records(self._source, [self._start + int(i) for i in indices])


def _records(source: Sequence, indices) -> list:
  indices = [int(i) for i in indices]
  # TFDS data sources fetch a list of indices in one call.
  getitems = getattr(source, "__getitems__", None)
  return getitems(indices) if getitems else [source[i] for i in indices]


def _read(source: Sequence, indices: np.ndarray) -> list[schema.Example]:
  return [schema.from_record(r) for r in _records(source, indices)]


def _process(process_index, process_count) -> tuple[int, int]:
  index = jax.process_index() if process_index is None else process_index
  count = jax.process_count() if process_count is None else process_count
  if not 0 <= index < count:
    raise ValueError(
      f"process_index={index}: expected 0 <= index < process_count={count}"
    )
  return index, count


class Loader:
  """Endless training batches; an epoch drops the last partial batch.

  Example:
    loader = Loader(builders.open_split(path, "train"), 64, seed=0)
    examples = next(loader)              # this process's 64 / count examples
    saved = loader.state()               # JSON-able; store with the model
    loader = Loader(source, 64, seed=0, state=saved)  # resumes exactly
  """

  def __init__(
    self,
    source: Sequence,
    global_batch_size: int,
    *,
    seed: int = 0,
    shuffle: bool = True,
    process_index: int | None = None,
    process_count: int | None = None,
    state: dict | None = None,
  ):
    """Creates a loader at the start, or at a saved `state`.

    Args:
      source: random-access records (`builders.open_split`).
      global_batch_size: examples per step summed over processes.
      seed: decides the order of every epoch.
      shuffle: if False, epochs follow the stored order.
      process_index: this process; defaults to `jax.process_index()`.
      process_count: defaults to `jax.process_count()`.
      state: a `state()` to resume from.
    """
    self.process_index, self.process_count = _process(
      process_index, process_count
    )
    if global_batch_size <= 0 or global_batch_size % self.process_count:
      raise ValueError(
        f"global_batch_size={global_batch_size}: expected a positive "
        f"multiple of process_count={self.process_count}"
      )
    if len(source) < global_batch_size:
      raise ValueError(
        f"the split has {len(source)} examples, fewer than "
        f"global_batch_size={global_batch_size}; use a batch of at most "
        f"{len(source)} (train.batch_size) or a larger split"
      )
    self.source = source
    self.global_batch_size = global_batch_size
    self.local_batch_size = global_batch_size // self.process_count
    self.steps_per_epoch = len(source) // global_batch_size
    self.seed, self.shuffle = seed, shuffle
    self.position = 0
    self._order_epoch, self._order = -1, np.arange(0)
    if state is not None:
      self.restore(state)

  def state(self) -> dict:
    """The resume point plus what must match on restore."""
    return {
      "position": self.position,
      "seed": self.seed,
      "shuffle": self.shuffle,
      "global_batch_size": self.global_batch_size,
      "num_examples": len(self.source),
    }

  def restore(self, state: dict) -> None:
    """Moves to a saved position; the order must be the one saved with it."""
    for key, value in self.state().items():
      if key != "position" and state.get(key) != value:
        raise ValueError(
          f"loader state {key}={state.get(key)!r} was saved with a "
          f"different order than this loader's {key}={value!r}"
        )
    self.position = int(state["position"])

  def global_indices(self, position: int) -> np.ndarray:
    """Source indices of global batch `position`, all processes."""
    epoch, step = divmod(position, self.steps_per_epoch)
    if epoch != self._order_epoch:
      n = len(self.source)
      rng = np.random.default_rng((self.seed, epoch))
      self._order = rng.permutation(n) if self.shuffle else np.arange(n)
      self._order_epoch = epoch
    start = step * self.global_batch_size
    return self._order[start : start + self.global_batch_size]

  def __iter__(self) -> Loader:
    return self

  def __next__(self) -> list[schema.Example]:
    indices = self.global_indices(self.position)
    start = self.process_index * self.local_batch_size
    self.position += 1
    return _read(self.source, indices[start : start + self.local_batch_size])


def eval_batches(
  source: Sequence,
  batch_size: int,
  *,
  process_index: int | None = None,
  process_count: int | None = None,
) -> Iterator[list[schema.Example]]:
  """One pass over every example, each read by exactly one process.

  Process i takes the i-th of `process_count` contiguous, near-equal slices
  in stored order. Every process yields the same number of batches, so
  processes stay in step; the last ones may be short or empty.

  Args:
    source: random-access records.
    batch_size: examples per local batch.
    process_index: defaults to `jax.process_index()`.
    process_count: defaults to `jax.process_count()`.

  Yields:
    Lists of at most `batch_size` examples.
  """
  index, count = _process(process_index, process_count)
  mine = np.array_split(np.arange(len(source)), count)[index]
  per_process = -(-len(source) // count)
  for start in range(0, per_process, batch_size):
    yield _read(source, mine[start : start + batch_size])
