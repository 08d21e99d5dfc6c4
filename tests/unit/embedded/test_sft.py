"""Supervised training of the embedded models, stopped in an accuracy band."""

import data_helpers
import jax
import numpy as np

from rock_jax import evaluate
from rock_jax import sharding as shd
from rock_jax.data import (
  builders,
  embedded_builder,
  embedded_task,
  loader,
  prompts,
)
from rock_jax.embedded import sft as embedded_sft

STYLES = tuple(embedded_task.STYLES)


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
