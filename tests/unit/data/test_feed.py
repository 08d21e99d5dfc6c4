"""Feed: the loader's batches prepared a batch ahead on one background
thread, in order, with a resumable state and errors raised where they
belong."""

import threading

import numpy as np
import pytest

from rock_jax.data import feed, loader, prompts, schema, tokenization


def _source(n):
  return [
    schema.to_record(
      schema.Example(
        uid=str(i),
        task="embedded",
        messages=({"role": "user", "content": f"What is {i}+{i}?"},),
        privileged="style: terse" if i % 2 else "",
      )
    )
    for i in range(n)
  ]


def _uids(batch):
  return [x.uid for x in batch]


def _loader(source, state=None):
  return loader.Loader(
    source, 4, seed=5, process_index=0, process_count=1, state=state
  )


def test_batches_follow_the_loader_and_resume_from_its_state():
  source = _source(24)
  plain = _loader(source)
  expected = [_uids(next(plain)) for _ in range(9)]  # crosses two epochs
  fed = feed.Feed(_loader(source), _uids)
  assert [next(fed) for _ in range(5)] == expected[:5]
  state = fed.state()
  # One batch further was prepared, but the state is where the caller is.
  assert state == {**plain.state(), "position": 5}
  fed.close()
  resumed = feed.Feed(_loader(source, state=state), _uids)
  assert [next(resumed) for _ in range(4)] == expected[5:]
  resumed.close()


def test_the_next_batch_is_prepared_on_another_thread_meanwhile():
  prepared = []
  second = threading.Event()

  def prepare(examples):
    prepared.append((_uids(examples), threading.current_thread()))
    if len(prepared) == 2:
      second.set()
    return examples

  fed = feed.Feed(_loader(_source(8)), prepare)
  next(fed)
  # Without another call, the following batch gets prepared.
  assert second.wait(timeout=30)
  assert threading.current_thread() not in {t for _, t in prepared}
  assert len({t for _, t in prepared}) == 1
  fed.close()
  assert all(not t.is_alive() for _, t in prepared)


def test_an_error_is_raised_at_its_batch_and_the_state_stays_there():
  def prepare(examples):
    if "3" in _uids(examples):
      raise ValueError("example '3' is too long")
    return _uids(examples)

  source = _source(8)
  plain = loader.Loader(
    source, 4, seed=0, shuffle=False, process_index=0, process_count=1
  )
  fed = feed.Feed(plain, prepare)
  for _ in range(2):
    with pytest.raises(ValueError, match="'3' is too long"):
      next(fed)
  assert fed.state()["position"] == 0
  fed.close()


def test_rendered_prompts_equal_the_serial_ones_while_the_caller_decodes():
  tok = tokenization.build_embedded_tokenizer()
  formats = {
    role: prompts.PromptFormat(role, tok, width=48) for role in prompts.ROLES
  }

  def render(examples):
    return prompts.make_prompt_batch(examples, **formats)

  source = _source(40)
  plain = _loader(source)
  fed = feed.Feed(_loader(source), render)
  for _ in range(10):
    got, want = next(fed), render(next(plain))
    # The caller uses the same tokenizer while the feed renders.
    tok.decode(got.student_tokens_BxP[0].tolist())
    for role in prompts.ROLES:
      for a, b in zip(got.of(role), want.of(role)):
        np.testing.assert_array_equal(a, b)
  fed.close()
