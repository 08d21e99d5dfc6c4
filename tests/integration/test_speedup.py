"""The speed-up sweep: its reading on hand-made curves, and the driver end
to end on tiny runs (the `assets` fixture's models and GSM8K folder)."""

import dataclasses
import json
import os

import numpy as np
import pytest
from run_helpers import tiny_overrides

from rock_jax.study import open_questions, speedup, speedup_report

UNIFORM, FREEZE = speedup.ARMS[0], speedup.ARMS[2]
SETTINGS = speedup.Settings(steps=100, warmup_steps=20, eval_every=50)


STEPS = np.array([0.0, 25.0, 50.0, 75.0, 100.0])


def _run(accuracy, seconds_per_step=0.5, correct=(1, 0, 1, 1)):
  logged = {
    "step": np.array([10.0, 30.0, 100.0]),
    "train/grad_norm": np.array([9.0, 2.0, 4.0]),
    "train/clipped": np.array([1.0, 1.0, 0.0]),
    "rollout/length": np.array([30.0, 20.0, 24.0]),
  }
  return {
    "steps": STEPS,
    "accuracy": np.asarray(accuracy, np.float64),
    "seconds": STEPS * seconds_per_step,
    "correct": np.asarray(correct, np.float64),
    "logged": logged,
    "wall_s": 60.0,
  }


def _crossing(smoothed, target):
  """Hand-read crossing of a smoothed curve, interpolated."""
  i = next(i for i, a in enumerate(smoothed) if a >= target)
  a0, a1 = smoothed[i - 1], smoothed[i]
  return STEPS[i - 1] + (target - a0) / (a1 - a0) * 25


def _hand_made_sweep():
  """Uniform's best final accuracy is 0.9 at lr 1 (lr 2 is faster but ends
  at 0.8): the target is 0.855. Rock-Freeze ends at 0.95 at lr 2 and never
  gets there at lr 1; at lr 2 its steps cost half the seconds."""
  late, early = [0.5, 0.5, 0.9, 0.9, 0.9], [0.5, 0.9, 0.9, 0.9, 0.8]
  runs = {}
  for seed in range(3):
    runs["uniform", 1, seed] = _run(late)
    runs["uniform", 2, seed] = _run(early)
    runs["freeze", 1, seed] = _run([0.5] * 5, correct=(0, 0, 1, 1))
    fast = [0.5, 0.5 if seed == 2 else 0.9, 0.9, 0.9, 0.95]
    runs["freeze", 2, seed] = _run(fast, 0.25, (0, 1, 1, 1))
  return runs


def test_smoothing_is_a_trailing_mean_and_ignores_a_single_spike():
  np.testing.assert_allclose(
    speedup_report.smoothed([0.3, 0.6, 0.9, 0.0]), [0.3, 0.45, 0.6, 0.5]
  )
  spike = _run([0.5, 0.9, 0.5, 0.5, 0.9])
  assert np.isnan(speedup_report._to_target(spike, 0.8)[0])


def test_each_arm_is_read_at_the_rate_of_its_best_final_accuracy():
  runs = _hand_made_sweep()
  found = speedup_report.summarize(
    runs, SETTINGS, (UNIFORM, FREEZE), (1, 2), (0, 1, 2), 0.95
  )
  target = 0.95 * 0.9
  assert found["target"] == pytest.approx(target)
  assert (found["runs"], found["run_wall_s"]) == (12, 720.0)
  uniform, freeze = found["arms"]["uniform"], found["arms"]["freeze"]
  assert (uniform["best_lr"], freeze["best_lr"]) == (1, 2)
  # Trailing means of three evaluations.
  late = [0.5, 0.5, 0.6 + 0.1 / 3, 0.7 + 0.2 / 3, 0.9]
  fast = [0.5, 0.7, 0.7 + 0.2 / 3, 0.9, 0.9 + 0.05 / 3]
  slow = [0.5, 0.5, 0.6 + 0.1 / 3, 0.7 + 0.2 / 3, 0.9 + 0.05 / 3]
  want_uniform = [_crossing(late, target)] * 3
  want_freeze = [_crossing(fast, target)] * 2 + [_crossing(slow, target)]
  np.testing.assert_allclose(uniform["steps_to_target"], want_uniform)
  np.testing.assert_allclose(freeze["steps_to_target"], want_freeze)
  ratio, low, high = freeze["speedup_steps"]
  assert ratio == pytest.approx(np.mean(want_uniform) / np.mean(want_freeze))
  assert low <= ratio <= high
  difference = freeze["steps_minus_uniform"]
  want = np.mean(want_freeze) - np.mean(want_uniform)
  assert difference["delta"] == pytest.approx(want)
  assert difference["ci_low"] <= want <= difference["ci_high"]
  # Half the seconds per step: twice the speed-up in seconds.
  assert freeze["speedup_seconds"][0] == pytest.approx(2 * ratio)
  assert freeze["final_minus_uniform"]["delta"] == pytest.approx(0.0)
  assert uniform["speedup_steps"][0] == pytest.approx(1.0)
  # Means over the logged steps after the rock set is selected (> 20).
  assert freeze["grad_norm"] == pytest.approx(3.0)
  assert freeze["clip_rate"] == pytest.approx(0.5)
  assert freeze["rollout_length"] == pytest.approx(22.0)
  assert freeze["seconds_per_step"] == pytest.approx(0.25)
  # Half the step time at lr 2, the same at lr 1: median over both rates.
  assert freeze["step_time_vs_uniform"] == pytest.approx([0.75, 0.5, 1.0])
  assert uniform["step_time_vs_uniform"] == pytest.approx([1.0, 1.0, 1.0])
  never = [c for c in found["sweep"] if (c["arm"], c["lr"]) == ("freeze", 1)]
  assert never[0]["median_steps"] == np.inf
  assert np.isnan(never[0]["steps_to_target"]).all()


def test_an_arm_that_misses_the_target_has_no_speedup():
  runs = _hand_made_sweep()
  for seed in range(3):
    runs["freeze", 2, seed] = _run([0.5] * 5)
  found = speedup_report.summarize(
    runs, SETTINGS, (UNIFORM, FREEZE), (1, 2), (0, 1, 2), 0.95
  )
  assert found["arms"]["freeze"]["speedup_steps"] is None
  assert found["arms"]["freeze"]["steps_minus_uniform"] is None
  section = speedup_report.section(found)
  assert "missed the target" in str(section.tables[0].rows)


def test_the_sweep_end_to_end_on_tiny_runs(assets, tmp_path, capsys):
  given = speedup.Settings(
    steps=4, warmup_steps=2, eval_every=2, eval_examples=8
  )
  mine = {"train.steps", "train.eval_every", "train.eval_examples"}
  overrides = {k: v for k, v in tiny_overrides(assets).items() if k not in mine}
  settings = dataclasses.replace(given, overrides=tuple(overrides.items()))
  grid = dict(
    arms=(UNIFORM, speedup.ARMS[-1]), learning_rates=(1e-3,), seeds=(0,)
  )
  paths = open_questions.speedup_study(
    str(tmp_path), settings=settings, workers=1, **grid
  )
  found = json.load(open(tmp_path / "report" / "speedup.json"))
  assert set(found["arms"]) == {"uniform", "guarded_freeze"}
  assert len(found["sweep"]) == 2
  for arm in found["arms"].values():
    assert arm["best_lr"] == 1e-3
    assert 0 <= arm["clip_rate"] <= 1 and arm["grad_norm"] > 0
  guarded = json.load(
    open(tmp_path / "runs" / "guarded_freeze_lr0.001_seed0" / "config.json")
  )
  assert guarded["rock"]["protect"] == "answers"
  assert guarded["rock"]["lam"] == 0.0
  markdown = open(paths["markdown"]).read()
  assert "guarded Rock-Freeze" in markdown
  for name in ("accuracy", "grad_norm", "clip_rate", "rollout_length"):
    assert os.path.isfile(tmp_path / "report" / f"speedup_{name}.png")
  capsys.readouterr()
  speedup.train_runs(str(tmp_path), settings, workers=1, **grid)
  assert capsys.readouterr().out.count("done already, reused") == 2
