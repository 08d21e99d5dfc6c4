"""Training prompts read, rendered and placed one batch ahead, on a
background thread.

Reading a batch's records, rendering both roles' chat templates and
assembling the global arrays is host work: about 6 ms per 32 embedded-task
prompts on one CPU core, and more with long templates and large batches. On
the loop's thread it sits between two steps' dispatches; on the feed's
thread it runs while the devices compute (and while the loop's thread waits
on them, with the GIL released).

The thread reads records, calls the tokenizers' chat templates and
`encode`, which take no lock and change no tokenizer setting (no padding or
truncation), and puts arrays on devices; so the loop may decode, evaluate
and dispatch meanwhile.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from concurrent import futures
from typing import Generic, TypeVar

from rock_jax.data import loader, schema

T = TypeVar("T")


class Feed(Iterator[T], Generic[T]):
  """`prepare(next(data))` for the loader's successive batches, the next one
  prepared on a background thread while the caller uses the current one.

  Batches come in the loader's order, and `state()` is the loader's state
  at the first batch not handed out yet, so a run resumed from it takes the
  same batches. An error while preparing a batch is raised by the `next`
  that would have returned it (and every one after), and `state()` still
  points at that batch.

  Example:
    feed = Feed(loader.Loader(source, 64), pipeline.place)
    batch = next(feed)             # rendered while the last step ran
    saved = feed.state()           # `loader.Loader(..., state=saved)`
    feed.close()
  """

  def __init__(
    self,
    data: loader.Loader,
    prepare: Callable[[Sequence[schema.Example]], T],
  ):
    self._data, self._prepare = data, prepare
    self._position = data.position
    self._pool = futures.ThreadPoolExecutor(1, thread_name_prefix="feed")
    self._next = self._pool.submit(self._read)

  def _read(self) -> T:
    return self._prepare(next(self._data))

  def __next__(self) -> T:
    # A failed batch stays next: every later call raises its error again.
    batch = self._next.result()
    self._position += 1
    self._next = self._pool.submit(self._read)
    return batch

  def state(self) -> dict:
    """The loader's `state()` at the first batch not handed out."""
    return {**self._data.state(), "position": self._position}

  def close(self) -> None:
    """Waits for the batch being prepared (dropped) and ends the thread."""
    self._pool.shutdown(wait=True, cancel_futures=True)
