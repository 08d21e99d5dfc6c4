"""Loader: seeded order, exact per-process sharding, resume from a state."""

import json

import numpy as np
import pytest
from data_helpers import prepare_embedded

from rock_jax.data import builders, loader, schema


def _records(n):
  return [
    schema.to_record(
      schema.Example(
        uid=str(i), task="", messages=({"role": "user", "content": "q"},)
      )
    )
    for i in range(n)
  ]


def _uids(batch):
  return [x.uid for x in batch]


@pytest.mark.parametrize("process_count", [1, 2, 4])
def test_one_epoch_reads_every_example_once_across_processes(process_count):
  source = _records(48)
  loaders = [
    loader.Loader(
      source, 8, seed=3, process_index=i, process_count=process_count
    )
    for i in range(process_count)
  ]
  seen = []
  for _ in range(loaders[0].steps_per_epoch):
    batches = [_uids(next(ld)) for ld in loaders]
    assert {len(b) for b in batches} == {8 // process_count}
    seen += [u for b in batches for u in b]
  assert sorted(seen, key=int) == [str(i) for i in range(48)]


def test_processes_split_the_same_global_batch():
  source = _records(40)
  one = loader.Loader(source, 8, seed=1, process_index=0, process_count=1)
  two = [
    loader.Loader(source, 8, seed=1, process_index=i, process_count=2)
    for i in range(2)
  ]
  for _ in range(7):  # Crosses an epoch boundary (5 steps per epoch).
    assert _uids(next(one)) == _uids(next(two[0])) + _uids(next(two[1]))


def test_order_depends_on_seed_and_epoch():
  source = _records(32)
  a, b = (
    loader.Loader(source, 32, seed=s, process_count=1, process_index=0)
    for s in (0, 1)
  )
  epoch0, epoch1 = _uids(next(a)), _uids(next(a))
  assert sorted(epoch0) == sorted(epoch1) and epoch0 != epoch1
  assert epoch0 != _uids(next(b))
  plain = loader.Loader(
    source, 8, shuffle=False, process_count=1, process_index=0
  )
  assert _uids(next(plain)) == [str(i) for i in range(8)]


def test_resume_from_json_state_continues_exactly():
  source = _records(30)
  kwargs = dict(seed=7, process_index=1, process_count=2)
  run = loader.Loader(source, 4, **kwargs)
  for _ in range(9):
    next(run)
  saved = json.loads(json.dumps(run.state()))
  expected = [_uids(next(run)) for _ in range(5)]
  resumed = loader.Loader(source, 4, state=saved, **kwargs)
  assert [_uids(next(resumed)) for _ in range(5)] == expected
  assert saved["position"] == 9


def test_restore_rejects_a_different_order():
  source = _records(30)
  state = loader.Loader(
    source, 4, seed=7, process_index=0, process_count=1
  ).state()
  with pytest.raises(ValueError, match=r"seed=7 .* this loader's seed=8"):
    loader.Loader(
      source, 4, seed=8, process_index=0, process_count=1, state=state
    )


@pytest.mark.parametrize(
  "n,batch,index,count,match",
  [
    (30, 6, 0, 4, r"global_batch_size=6: expected a positive multiple"),
    (3, 4, 0, 1, r"3 examples, fewer than global_batch_size=4"),
    (30, 4, 2, 2, r"process_index=2: expected 0 <= index"),
  ],
)
def test_loader_errors(n, batch, index, count, match):
  with pytest.raises(ValueError, match=match):
    loader.Loader(_records(n), batch, process_index=index, process_count=count)


def test_defaults_come_from_jax():
  ld = loader.Loader(_records(16), 8)
  assert (ld.process_index, ld.process_count) == (0, 1)


@pytest.mark.parametrize("n", [0, 1, 10, 13])
def test_eval_batches_cover_everything_in_lockstep(n):
  count = 3
  per_process = [
    [
      _uids(b)
      for b in loader.eval_batches(
        _records(n), 2, process_index=i, process_count=count
      )
    ]
    for i in range(count)
  ]
  assert len({len(batches) for batches in per_process}) == 1
  seen = [u for batches in per_process for b in batches for u in b]
  assert sorted(seen, key=int) == [str(i) for i in range(n)]


def test_reads_a_prepared_split(tmp_path):
  path = prepare_embedded(tmp_path)
  source = builders.open_split(path, "train")
  ld = loader.Loader(source, 16, seed=0, process_index=1, process_count=2)
  batch = next(ld)
  assert len(batch) == 8 and all(x.task == "embedded" for x in batch)
  expected = ld.global_indices(0)[8:]
  assert [x.uid for x in batch] == [
    schema.from_record(source[int(i)]).uid for i in expected
  ]
  assert isinstance(expected, np.ndarray)
