"""Landing in the accuracy band on any CPU: replayed steps, mixtures of the
states around a step that jumps over it, and the nearest state kept."""

import re

import jax
import numpy as np
import pytest

from rock_jax.data import (
  builders,
  embedded_task,
)
from rock_jax.embedded import band, sft

STYLES = tuple(embedded_task.STYLES)


def _run(dataset, tokenizer, **spec):
  spec = sft.SFTSpec(hidden_size=16, layers=1, heads=2, batch_size=8, **spec)
  cfg = sft.model_config(spec, tokenizer)
  source = builders.open_split(dataset, "train")
  return sft._Run(spec, cfg, source, tokenizer, "student", STYLES)


def _same(a, b):
  return all(
    np.array_equal(x, y)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True)
  )


def _flat(params):
  return np.concatenate([np.ravel(x) for x in jax.tree.leaves(params)])


def _scripted(run, script, curve=None):
  """A held-out accuracy for `_select`: `script[step]` for a trained state
  and, for a mixture of the last two trained states measured, `curve(w)` of
  its weight `w` on the later one (read back from the parameters)."""
  seen = []

  def measure(params):
    if params is run.params:
      seen.append(_flat(params))
      return script[run.step]
    start, end = seen[-2], seen[-1]
    weight = np.dot(_flat(params) - start, end - start) / np.sum(
      np.square(end - start)
    )
    return curve(float(weight))

  return measure


def test_past_the_band_goes_back_and_keeps_the_first_step_inside(
  dataset, tokenizer
):
  # Scripted accuracies: step 20 overshoots the band, so steps 11.. are
  # replayed one by one from the step-10 state; step 14 is the first inside.
  script = {10: 0.1, 20: 0.9, 11: 0.1, 12: 0.2, 13: 0.1, 14: 0.5}
  run = _run(
    dataset, tokenizer, steps=40, accuracy_band=(0.4, 0.6), eval_every=10
  )
  record = band.select(run, _scripted(run, script), "student")
  assert record == {
    "step": 14,
    "held_out_accuracy": 0.5,
    "measured": [[s, script[s]] for s in (10, 20, 11, 12, 13, 14)],
  }
  assert run.step == 14
  # The replayed steps are the steps a straight run takes.
  straight = _run(dataset, tokenizer, steps=40)
  straight.advance(14)
  assert _same(run.params, straight.params)
  assert _same(run.opt_state, straight.opt_state)


def _states(dataset, tokenizer, *steps, schedule=40):
  """Host copies of a straight run's parameters after each of `steps`."""
  straight, states = _run(dataset, tokenizer, steps=schedule), []
  for step in steps:
    straight.advance(step)
    states.append(jax.tree.map(np.array, straight.params))
  return states


def test_a_step_over_the_band_is_split_by_mixing_its_two_states(
  dataset, tokenizer
):
  # Step 12 jumps from 0.2 to 0.9 over [0.4, 0.6]; along the mixture the
  # accuracy is 0.2 + 0.7 w^3: w = 0.5 gives 0.29 (below), w = 0.75 0.50.
  script = {10: 0.1, 20: 0.9, 11: 0.2, 12: 0.9}
  run = _run(
    dataset, tokenizer, steps=40, accuracy_band=(0.4, 0.6), eval_every=10
  )
  measure = _scripted(run, script, lambda w: 0.2 + 0.7 * w**3)
  record = band.select(run, measure, "student")
  assert record["step"] == 12 and "warning" not in record
  assert record["interpolation"] == {"from_step": 11, "weight": 0.75}
  assert [w for w, _ in record["bisection"]] == [0.5, 0.75]
  assert 0.4 <= record["held_out_accuracy"] <= 0.6
  assert record["measured"] == [[s, script[s]] for s in (10, 20, 11, 12)]
  # The kept parameters are that mixture of the straight run's steps.
  eleven, twelve = _states(dataset, tokenizer, 11, 12)
  assert _same(run.params, band.mix(eleven, twelve, 0.75))
  assert band.describe(record) == "steps 11->12 mixed at weight 0.7500"


def test_mixtures_that_straddle_the_band_keep_the_nearest_with_a_warning(
  dataset, tokenizer
):
  # The accuracy jumps from 0.37 to 0.65 at w = 0.3 with nothing between:
  # every bisection misses, and the first 0.37 (w = 0.25) is nearest.
  script = {10: 0.1, 20: 0.9, 11: 0.3, 12: 0.9}
  run = _run(
    dataset, tokenizer, steps=40, accuracy_band=(0.4, 0.6), eval_every=10
  )
  measure = _scripted(run, script, lambda w: 0.37 if w < 0.3 else 0.65)
  record = band.select(run, measure, "student")
  assert len(record["bisection"]) == band.BISECTIONS
  assert record["interpolation"] == {"from_step": 11, "weight": 0.25}
  assert record["held_out_accuracy"] == 0.37
  assert re.match(
    r"embedded.student: no held-out greedy accuracy in "
    r"embedded.student.accuracy_band=\(0.4, 0.6\) over one step; kept the "
    r"nearest, 0.370 at steps 11->12 mixed at weight 0.2500",
    record["warning"],
  )
  eleven, twelve = _states(dataset, tokenizer, 11, 12)
  assert _same(run.params, band.mix(eleven, twelve, 0.25))


@pytest.mark.parametrize(
  "accuracy_band, eval_every, script, kept",
  [
    # The student's schedule ends below its band: its best state is kept.
    ((0.4, 0.6), 10, {10: 0.3, 20: 0.2}, 10),
    # The teacher measured once, short of its threshold.
    ((0.95, 1.0), 0, {20: 0.9}, 20),
  ],
)
def test_a_schedule_that_ends_below_the_band_keeps_the_nearest(
  dataset, tokenizer, accuracy_band, eval_every, script, kept
):
  run = _run(
    dataset,
    tokenizer,
    steps=20,
    accuracy_band=accuracy_band,
    eval_every=eval_every,
  )
  record = band.select(run, _scripted(run, script), "student")
  assert record["step"] == kept and "interpolation" not in record
  assert record["held_out_accuracy"] == script[kept]
  assert "after the schedule; kept the nearest" in record["warning"]
  (state,) = _states(dataset, tokenizer, kept, schedule=20)
  assert _same(run.params, state)
