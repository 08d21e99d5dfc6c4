"""The set a run weights (`rock.rock_set`) as a run builds it from its
config (`run_spec`): the policy, static and control sets, the guard, and the
tracker's table."""

import json

import jax.numpy as jnp
import numpy as np
import pytest
from run_helpers import load_config

from rock_jax import rock
from rock_jax.data import schema, tokenization
from rock_jax.rock import lists as rock_lists
from rock_jax.rock import rock_set
from rock_jax.train import run_spec

V = 40


@pytest.fixture(scope="module")
def tokenizer(assets):
  return tokenization.load_tokenizer(assets["student"])


def _tracker(steps=3):
  """Counts equal over the ids seen, losses rising with the id."""
  state = rock.init(V)
  ids = jnp.arange(V)[None, :].repeat(4, 0)
  loss = jnp.broadcast_to(jnp.linspace(0.1, 2.0, V), (4, V))
  seen = V // 2 + 10  # ids 30.. never occur
  for _ in range(steps):
    state = rock.update(
      state, ids[:, :seen], loss[:, :seen], jnp.ones((4, seen))
    )
  return state


def _rocks(config, tokenizer, protected=(), control_ids=None):
  """The run's `RockSet` as the loop builds it."""
  spec = run_spec.build(config).rocks
  return rock_set.RockSet.create(
    spec.policy(V, protected),
    tokenizer,
    V,
    static_ids=spec.static_ids,
    control_seed=spec.control_seed,
    control_ids=control_ids,
  )


def test_policy_from_config():
  config = load_config()
  config.rock.k, config.rock.max_improvement = 100, -1.0
  config.rock.lam, config.rock.refresh_every = 0.25, 7
  policy = run_spec.build(config).rocks.policy(V)
  assert policy.selection == rock.Selection(
    k=V,
    min_count=1,
    exclude_most_frequent=0,
    max_improvement=None,
    min_loss_ratio=1.0,
    min_score_ratio=0.01,
  )
  assert (policy.lam, policy.refresh_every) == (0.25, 7)
  assert policy.warmup_steps == config.rock.warmup_steps
  config.rock.max_improvement = 0.1
  policy = run_spec.build(config).rocks.policy(V)
  assert policy.selection.max_improvement == 0.1


def test_protected_ids_are_the_tokens_of_the_reference_answers(tokenizer):
  examples = [
    schema.Example(
      uid=str(i),
      task="embedded",
      messages=({"role": "user", "content": "What is 1+2?"},),
      reference=reference,
    )
    for i, reference in enumerate(["132", "57", "90"])
  ]
  records = [schema.to_record(e) for e in examples]
  config = load_config()
  config.rock.protect, config.rock.protect_examples = "answers", 2
  spec = run_spec.build(config).rocks
  want = {tokenizer.convert_tokens_to_ids(d) for d in "13257"}
  got = rock_set.protected_ids(records, tokenizer, spec.protect_examples)
  assert got == tuple(sorted(want)), "only the first 2 records are read"
  for protect in ("answers", "auto"):
    guard = rock_set.answer_guard(protect, records, tokenizer, 2, "data")
    assert guard == got
  assert rock_set.answer_guard("", records, tokenizer, 2, "data") == ()
  policy = spec.policy(V, got)
  assert policy.selection.protected == got
  rocks = _rocks(config, tokenizer, protected=got)
  assert rocks.policy == policy


def test_the_answer_guard_on_data_without_references(tokenizer):
  prompt = ({"role": "user", "content": "Write a haiku."},)
  records = [
    schema.to_record(schema.Example(uid=str(i), task="", messages=prompt))
    for i in range(3)
  ]
  # "auto" falls back to the loss-ratio guard alone.
  assert rock_set.answer_guard("auto", records, tokenizer, 8, "data") == ()
  with pytest.raises(
    ValueError,
    match=r"rock.protect='answers': the first 8 training records of "
    r"data.name='prompts' have no reference answer.*rock.protect='auto' "
    r"\(on such data the rock set is guarded by rock.min_loss_ratio alone\)",
  ):
    rock_set.answer_guard(
      "answers", records, tokenizer, 8, "data.name='prompts'"
    )


def test_the_guard_follows_the_config():
  config = load_config()  # the default recipe
  spec = run_spec.build(config).rocks
  guards = (spec.protect, spec.min_loss_ratio, spec.min_score_ratio)
  assert guards == ("auto", 1.0, 0.01)
  selection = spec.policy(V).selection
  assert (selection.min_loss_ratio, selection.min_score_ratio) == (1.0, 0.01)
  paper = run_spec.build(load_config(arg="paper_freeze")).rocks
  guards = (paper.protect, paper.min_loss_ratio, paper.min_score_ratio)
  assert guards == ("", None, None)
  # Nothing is selected at λ = 1: no answers to read.
  uniform = run_spec.build(load_config("opd_uniform.py")).rocks
  assert uniform.protect == ""


def test_the_tracker_selection_has_no_static_set(tokenizer):
  rocks = _rocks(load_config(), tokenizer)
  assert rocks.static_V is None and rocks.control_ids is None
  rocks.after_step(rocks.policy.warmup_steps, _tracker())
  assert rocks.static_V is None


def test_a_static_list_is_weighted_from_the_start(tokenizer, tmp_path):
  path = tmp_path / "rock.json"
  path.write_text(json.dumps([5, 9]))
  config = load_config()
  config.rock.static_list = str(path)
  rocks = _rocks(config, tokenizer)
  assert np.flatnonzero(rocks.static_V).tolist() == [5, 9]


def test_the_control_is_drawn_once_at_the_end_of_the_warmup(tokenizer):
  config = load_config()
  config.rock.control = "frequency_matched"
  config.rock.k, config.rock.warmup_steps = 4, 3
  config.rock.max_improvement = -1.0
  rocks = _rocks(config, tokenizer)
  assert not rocks.static_V.any()  # uniform until the warm-up ends
  tracker = _tracker()
  rocks.after_step(2, tracker)
  assert rocks.control_ids is None
  rocks.after_step(3, tracker)
  selected = rocks.selected(tracker)
  expected = rock_lists.frequency_matched_control(
    selected, np.asarray(tracker.total_count_V), seed=config.rock.control_seed
  )
  assert rocks.control_ids == sorted(expected.tolist())
  assert not set(rocks.control_ids) & set(selected.tolist())
  drawn = rocks.static_V.copy()
  rocks.after_step(3, _tracker(5))  # never drawn again
  np.testing.assert_array_equal(rocks.static_V, drawn)
  # A resumed run restores the same set.
  again = _rocks(config, tokenizer, control_ids=rocks.control_ids)
  np.testing.assert_array_equal(again.static_V, drawn)


def test_the_table_lists_the_ranking_by_rock_score(tokenizer):
  config = load_config()
  config.rock.k, config.rock.max_improvement = 5, -1.0
  # The guards change what is weighted, not the table: detection is read
  # from the tracker's ranking.
  rocks = _rocks(config, tokenizer, protected=(28,))
  tracker = _tracker()
  assert rocks.selected(tracker).tolist() == [29, 27, 26, 25, 24]
  tracker = _tracker()
  ids, rows, shares = rocks.table(tracker)
  assert [r["id"] for r in rows] == ids.tolist() == [29, 28, 27, 26, 25]
  assert [r["R"] for r in rows] == sorted((r["R"] for r in rows), reverse=True)
  assert rows[0]["text"] == tokenization.token_text(tokenizer, 29)
  assert rows[0]["count"] == 12
  counts = np.asarray(tracker.total_count_V)
  assert shares["rock_token_share"] == pytest.approx(
    counts[ids].sum() / counts.sum()
  )
  loss = np.asarray(tracker.total_loss_V)
  assert shares["rock_kl_share"] == pytest.approx(loss[ids].sum() / loss.sum())
