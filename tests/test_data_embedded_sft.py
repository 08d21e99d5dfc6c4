"""Supervised training of the embedded models, stopped in an accuracy band."""

import os

import data_helpers
import jax
import numpy as np
import pytest

from rock_jax import evaluate
from rock_jax import sharding as shd
from rock_jax.data import (
  builders,
  embedded_builder,
  embedded_sft,
  embedded_task,
  loader,
  prompts,
  tokenization,
)

STYLES = tuple(embedded_task.STYLES)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
  return data_helpers.prepare_embedded(tmp_path_factory.mktemp("data"))


@pytest.fixture(scope="module")
def tokenizer(dataset):
  return tokenization.load_tokenizer(
    os.path.join(dataset, embedded_builder.TOKENIZER_DIR)
  )


def _example(style="formal"):
  problem = embedded_task.Problem((47, 85), style)
  return embedded_task.to_example(problem, "x"), problem


def test_clean_solution_is_trained_everywhere(tokenizer):
  example, problem = _example()
  ids, trained = embedded_sft._solution_ids(
    example, tokenizer, STYLES, np.random.default_rng(0), 0.0
  )
  solution = prompts.encode(embedded_task.solution(problem), tokenizer)
  assert ids == solution + [tokenizer.eos_token_id]
  assert all(trained)


def test_mixed_prefix_switches_to_the_tag_and_trains_only_after(tokenizer):
  example, problem = _example("formal")
  rocks = set(embedded_task.rock_token_ids(tokenizer, STYLES))
  formal_ids = {
    tokenizer.encode(getattr(embedded_task.STYLES["formal"], f))[0]
    for f in ("first", "middle", "final", "separator", "answer_open")
  }
  for seed in range(20):
    ids, trained = embedded_sft._solution_ids(
      example, tokenizer, STYLES, np.random.default_rng(seed), 1.0
    )
    start = trained.index(True)
    assert start > 0 and all(trained[start:])  # one switch, then trained
    assert ids[start] in rocks  # the switch is at a slot
    # Every style decision from the switch on is the tagged style's.
    decided = [i for i in ids[start:] if i in rocks]
    assert set(decided) <= formal_ids | {tokenizer.encode("**")[0]}
    text = tokenizer.decode(ids, skip_special_tokens=True)
    assert text.endswith("132**")  # the switch may be at the last slot


def _run(dataset, tokenizer, **spec):
  spec = embedded_sft.SFTSpec(
    hidden_size=16, layers=1, heads=2, batch_size=8, **spec
  )
  cfg = embedded_sft.model_config(spec, tokenizer)
  source = builders.open_split(dataset, "train")
  return embedded_sft._Run(spec, cfg, source, tokenizer, "student", STYLES)


def _same(a, b):
  return all(
    np.array_equal(x, y)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True)
  )


def test_past_the_band_goes_back_and_keeps_the_first_step_inside(
  dataset, tokenizer
):
  # Scripted accuracies: step 20 overshoots the band, so steps 11.. are
  # replayed one by one from the step-10 state; step 14 is the first inside.
  script = {10: 0.1, 20: 0.9, 11: 0.1, 12: 0.2, 13: 0.1, 14: 0.5}
  run = _run(
    dataset, tokenizer, steps=40, accuracy_band=(0.4, 0.6), eval_every=10
  )
  measured = embedded_sft._select(run, lambda p: script[run.step], "student")
  assert measured == [[s, script[s]] for s in (10, 20, 11, 12, 13, 14)]
  assert run.step == 14
  # The replayed steps are the steps a straight run takes.
  straight = _run(dataset, tokenizer, steps=40)
  straight.advance(14)
  assert _same(run.params, straight.params)
  assert _same(run.opt_state, straight.opt_state)


@pytest.mark.parametrize(
  "script, message",
  [
    ({10: 0.1, 20: 0.2}, r"accuracy 0.200 after step 20"),
    ({10: 0.1, 20: 0.9, 11: 0.9}, r"accuracy 0.900 in one step, at step 11"),
  ],
)
def test_a_band_that_is_never_measured_fails_naming_it(
  dataset, tokenizer, script, message
):
  run = _run(
    dataset, tokenizer, steps=20, accuracy_band=(0.4, 0.6), eval_every=10
  )
  with pytest.raises(
    ValueError,
    match=rf"embedded.student: held-out greedy {message}, outside "
    r"embedded.student.accuracy_band=\(0.4, 0.6\); widen the band",
  ):
    embedded_sft._select(run, lambda p: script[run.step], "student")


def _held_out_accuracy(cfg, params, tokenizer, dataset, n):
  """Greedy accuracy on the split's last n problems, measured here."""
  split = builders.open_split(dataset, "train")
  formats = {
    r: prompts.PromptFormat(r, tokenizer, 32 if r == "student" else 96)
    for r in prompts.ROLES
  }
  mesh = shd.make_mesh([("data", 1)], jax.devices()[:1])
  return evaluate.accuracy(
    cfg,
    params,
    loader.Records(split, len(split) - n),
    role="student",
    **formats,
    max_new_tokens=embedded_sft.SOLUTION_LEN,
    batch_size=n,
    sharder=shd.Sharder(mesh, shd.get_rules("fsdp")),
  ).accuracy


def test_student_lands_in_its_band(tmp_path):
  # A band the tiny model reaches within a few dozen steps on the easy task
  # (two or more of 64 held-out problems right).
  dataset = data_helpers.prepare_embedded(
    tmp_path, difficulty="easy", train_size=1024, test_size=16
  )
  tokenizer = embedded_builder.load_tokenizer(dataset)
  spec = embedded_sft.SFTSpec(
    hidden_size=64,
    layers=1,
    heads=2,
    steps=400,
    batch_size=32,
    learning_rate=1e-2,
    accuracy_band=(0.03, 0.5),
    eval_every=20,
    eval_examples=64,
  )
  styles = embedded_task.get_difficulty("easy").styles
  cfg, params, record = embedded_sft.train_sft(
    spec, dataset, tokenizer, "student", styles
  )
  assert 0.03 <= record["held_out_accuracy"] <= 0.5
  assert 0 < record["step"] < 400 and record["held_out_examples"] == 64
  assert record["measured"][-1] == [record["step"], record["held_out_accuracy"]]
  # Every earlier measurement was below the band: the first one in it won.
  assert all(a < 0.03 for _, a in record["measured"][:-1])
  accuracy = _held_out_accuracy(cfg, params, tokenizer, dataset, 64)
  assert accuracy == record["held_out_accuracy"]
