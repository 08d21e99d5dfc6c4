"""Tests of rock_jax.analysis.freeze on hand-built finished run folders."""

import base64
import json
import math
import os
import re
import zlib

import numpy as np
import pytest
from run_helpers import load_config

from rock_jax import storage
from rock_jax.analysis import freeze, stats
from rock_jax.study import pipeline, reproduce

FREEZE = "Rock-Freeze (λ = 0)"
SOFT = "soft Rock (λ = 0.5)"
RANDOM = "frequency-matched random freeze (λ = 0)"

STEPS = (0, 50, 100)
PROBLEMS = 10

# (folder, λ, control, seed, accuracy at STEPS). Final accuracies are
# multiples of 1/PROBLEMS so eval_correct can hold exactly that many 1s.
# The soft runs' seeds are 1..3: seed 3 has no uniform run to pair with.
RUNS = (
  ("uniform_s0", 1.0, "none", 0, (0.1, 0.3, 0.6)),
  ("uniform_s1", 1.0, "none", 1, (0.2, 0.4, 0.7)),
  ("uniform_s2", 1.0, "none", 2, (0.1, 0.5, 0.8)),
  ("freeze_s0", 0.0, "none", 0, (0.4, 0.6, 0.9)),
  ("freeze_s1", 0.0, "none", 1, (0.1, 0.2, 0.3)),
  ("freeze_s2", 0.0, "none", 2, (0.2, 0.3, 0.5)),
  ("soft_s1", 0.5, "none", 1, (0.1, 0.3, 0.7)),
  ("soft_s2", 0.5, "none", 2, (0.2, 0.4, 0.6)),
  ("soft_s3", 0.5, "none", 3, (0.1, 0.2, 0.4)),
  ("random_s0", 0.0, "frequency_matched", 0, (0.1, 0.2, 0.5)),
  ("random_s1", 0.0, "frequency_matched", 1, (0.2, 0.3, 0.6)),
  ("random_s2", 0.0, "frequency_matched", 2, (0.1, 0.4, 0.7)),
)


def _wall(seed):
  return (0.0, 30.0 + seed, 61.0 + 2 * seed)


def _correct(name, final):
  """Per-problem 0/1 correctness with `final` of them right, in some order."""
  ones = round(final * PROBLEMS)
  # crc32, not hash(): str hashes change between processes.
  rng = np.random.default_rng(zlib.crc32(name.encode()))
  order = rng.permutation(PROBLEMS)
  return [int(i < ones) for i in order]


def _write_run(root, name, lam, control, seed, curve, **extra):
  """A finished run's folder (or `gs://` prefix) `root/name`."""
  path = storage.join(os.fspath(root), name)
  storage.makedirs(path)
  config = {
    "seed": seed,
    "rock": {"lam": lam, "control": control, "static_list": ""},
  }
  summary = {
    "steps": STEPS[-1],
    "train_s": _wall(seed)[-1],
    "student_accuracy_after": curve[-1],
    "evals": [
      [s, a, t] for s, a, t in zip(STEPS, curve, _wall(seed), strict=True)
    ],
    "eval_correct": _correct(name, curve[-1]),
    **extra,
  }
  if lam == 0.0 and control == "none":
    summary["detection_precision"] = 0.5 + 0.1 * seed
    summary["detection_recall"] = 0.3 + 0.2 * seed
  storage.write_text(storage.join(path, "config.json"), json.dumps(config))
  storage.write_text(storage.join(path, "summary.json"), json.dumps(summary))
  return path


@pytest.fixture
def runs(tmp_path):
  for row in RUNS:
    _write_run(tmp_path, *row)
  # Sorted folder names list each variant's runs by seed.
  return freeze.load_runs(freeze.run_dirs(str(tmp_path / "*")))


def _rows(label):
  lam, control = {
    freeze.UNIFORM: (1.0, "none"),
    FREEZE: (0.0, "none"),
    SOFT: (0.5, "none"),
    RANDOM: (0.0, "frequency_matched"),
  }[label]
  return sorted(
    (r for r in RUNS if r[1:3] == (lam, control)), key=lambda r: r[3]
  )


@pytest.mark.parametrize(
  "rock_config, label",
  [
    ({"lam": 1.0, "control": "none", "static_list": ""}, freeze.UNIFORM),
    # λ = 1 weights nothing, whatever the set: plain OPD.
    ({"lam": 1, "control": "frequency_matched"}, freeze.UNIFORM),
    ({"lam": 0.0, "control": "none", "static_list": ""}, FREEZE),
    ({"lam": 0.0}, FREEZE),  # control defaults to "none"
    ({"lam": 0.5, "control": "none", "static_list": ""}, SOFT),
    ({"lam": 0.0, "control": "frequency_matched"}, RANDOM),
    (
      {"lam": 0.25, "control": "frequency_matched", "static_list": ""},
      "frequency-matched random freeze (λ = 0.25)",
    ),
    (
      {"lam": 0.0, "control": "none", "static_list": "rocks.json"},
      "static-list freeze (λ = 0)",
    ),
    (
      {"lam": 0.25, "control": "none", "static_list": "rocks.json"},
      "static-list freeze (λ = 0.25)",
    ),
    # The default recipe's guards; runs from before min_loss_ratio lack it.
    (
      {"lam": 0.0, "protect": "auto", "min_loss_ratio": 1.0},
      "guarded " + FREEZE,
    ),
    (
      {"lam": 0.0, "protect": "", "min_loss_ratio": 1.0},
      "loss-guarded " + FREEZE,
    ),
    ({"lam": 0.0, "protect": "answers"}, "answer-guarded " + FREEZE),
    (
      {"lam": 0.0, "protect": "", "min_score_ratio": 0.01},
      "loss-guarded " + FREEZE,
    ),
    ({"lam": 0.5, "protect": "", "min_loss_ratio": 0.0}, SOFT),
    ({"lam": 1.0, "protect": "auto", "min_loss_ratio": 1.0}, freeze.UNIFORM),
  ],
)
def test_variant_of(rock_config, label):
  assert freeze.variant_of({"seed": 0, "rock": rock_config}) == label


def test_run_dirs_expands_globs_sorted(tmp_path):
  for name in ("a", "b2", "b10", "b1", "c"):
    (tmp_path / name).mkdir()
  text = f"{tmp_path}/a, {tmp_path}/b*,, {tmp_path}/missing ,"
  assert freeze.run_dirs(text) == [
    f"{tmp_path}/a",
    f"{tmp_path}/b1",
    f"{tmp_path}/b10",
    f"{tmp_path}/b2",
    # A plain path is kept as given; load_runs reports it if absent.
    f"{tmp_path}/missing",
  ]
  assert freeze.run_dirs("") == []


def test_run_dirs_names_an_unmatched_pattern(tmp_path):
  (tmp_path / "a").mkdir()
  pattern = f"{tmp_path}/z*"
  with pytest.raises(FileNotFoundError, match=re.escape(repr(pattern))):
    freeze.run_dirs(f"{tmp_path}/a,{pattern}")


def test_load_runs_reads_variant_seed_and_summary(tmp_path, runs):
  assert [r["path"] for r in runs] == sorted(
    str(tmp_path / row[0]) for row in RUNS
  )
  by_path = {r["path"]: r for r in runs}
  for name, lam, control, seed, curve in RUNS:
    run = by_path[str(tmp_path / name)]
    assert run["seed"] == seed
    assert run["variant"] == freeze.variant_of(
      {"rock": {"lam": lam, "control": control}}
    )
    assert run["summary"]["student_accuracy_after"] == curve[-1]


def test_load_runs_without_summary_names_folder_and_file(tmp_path):
  path = tmp_path / "unfinished"
  path.mkdir()
  (path / "config.json").write_text(json.dumps({"seed": 0, "rock": {}}))
  with pytest.raises(FileNotFoundError) as info:
    freeze.load_runs([str(path)])
  assert str(path) in str(info.value)
  assert "summary.json" in str(info.value)


def test_load_runs_without_config_names_folder_and_file(tmp_path):
  path = tmp_path / "not_a_workdir"
  path.mkdir()
  with pytest.raises(FileNotFoundError) as info:
    freeze.load_runs([str(path)])
  assert str(path) in str(info.value)
  assert "config.json" in str(info.value)


def test_load_runs_without_evals_is_a_value_error(tmp_path):
  path = _write_run(tmp_path, "ungraded", 1.0, "none", 0, (0.1, 0.2, 0.3))
  summary = json.loads((tmp_path / "ungraded" / "summary.json").read_text())
  del summary["evals"]
  (tmp_path / "ungraded" / "summary.json").write_text(json.dumps(summary))
  with pytest.raises(ValueError, match=re.escape(repr(path))):
    freeze.load_runs([path])


def _interpolated(steps, acc, target):
  """Steps to target, written out independently of stats.steps_to_target.

  The first eval at or above the target, on the line from the eval before.
  """
  for i, (s, a) in enumerate(zip(steps, acc, strict=True)):
    if a >= target:
      if i == 0:
        return float(s)
      s0, a0 = steps[i - 1], acc[i - 1]
      return s0 + (target - a0) * (s - s0) / (a - a0)
  return math.nan


def test_summarize_target_is_a_fraction_of_uniform_final(runs):
  out = freeze.summarize(runs, target_fraction=0.5)
  assert out["target_fraction"] == 0.5
  assert out["target"] == pytest.approx(0.5 * np.mean([0.6, 0.7, 0.8]))
  assert set(out["variants"]) == {freeze.UNIFORM, FREEZE, SOFT, RANDOM}


def test_summarize_variants_match_numpy_over_seeds(runs):
  out = freeze.summarize(runs, target_fraction=0.5)
  for label, row in out["variants"].items():
    rows = _rows(label)
    curves = np.array([r[4] for r in rows])
    walls = np.array([_wall(r[3]) for r in rows])
    final = curves[:, -1]
    assert row["seeds"] == [r[3] for r in rows]
    assert row["final"] == pytest.approx(final.tolist())
    assert row["final_mean"] == pytest.approx(np.mean(final))
    assert row["final_sd"] == pytest.approx(np.std(final, ddof=1))
    assert row["steps"] == list(STEPS)
    assert row["curve_mean"] == pytest.approx(curves.mean(0).tolist())
    assert row["curve_sd"] == pytest.approx(curves.std(0, ddof=1).tolist())
    assert row["wall_mean"] == pytest.approx(walls.mean(0).tolist())
    assert row["seconds_per_step"] == pytest.approx(
      (walls[:, -1] / STEPS[-1]).tolist()
    )


def test_summarize_steps_to_target_by_hand(runs):
  out = freeze.summarize(runs, target_fraction=0.5)
  target = out["target"]  # 0.35
  # By hand at 0.35: 50 + 50 * 0.05 / 0.3, 50 * 0.15 / 0.2, 50 * 0.25 / 0.4.
  uniform = out["variants"][freeze.UNIFORM]["steps_to_target"]
  assert uniform == pytest.approx([50 + 50 / 6, 37.5, 31.25])
  # Reached at the first eval, never reached, 50 + 50 * 0.05 / 0.2.
  frozen = out["variants"][FREEZE]["steps_to_target"]
  assert frozen[0] == 0.0
  assert math.isnan(frozen[1])
  assert frozen[2] == pytest.approx(62.5)
  for label, row in out["variants"].items():
    want = [_interpolated(STEPS, r[4], target) for r in _rows(label)]
    assert row["steps_to_target"] == pytest.approx(want, nan_ok=True)


def test_summarize_detection_only_where_every_seed_has_it(runs):
  out = freeze.summarize(runs)
  frozen = out["variants"][FREEZE]
  assert frozen["detection_precision"] == pytest.approx(0.6)
  assert frozen["detection_recall"] == pytest.approx(0.5)
  for label in (freeze.UNIFORM, SOFT, RANDOM):
    assert "detection_precision" not in out["variants"][label]
    assert "detection_recall" not in out["variants"][label]


def _summary(runs, label, seed):
  (run,) = [r for r in runs if r["variant"] == label and r["seed"] == seed]
  return run["summary"]


def test_summarize_paired_against_uniform(runs):
  out = freeze.summarize(runs)
  assert set(out["paired"]) == {FREEZE, SOFT, RANDOM}
  for label, paired in out["paired"].items():
    # Seeds with a uniform run, in the order summarize pairs them: the
    # variant's runs as listed (here by seed, from the sorted folders).
    seeds = [r["seed"] for r in runs if r["variant"] == label]
    seeds = [s for s in seeds if s in (0, 1, 2)]
    assert paired["seeds"] == len(seeds)
    variant = [_summary(runs, label, s) for s in seeds]
    uniform = [_summary(runs, freeze.UNIFORM, s) for s in seeds]
    differences = [
      v["student_accuracy_after"] - u["student_accuracy_after"]
      for v, u in zip(variant, uniform, strict=True)
    ]
    assert paired["differences"] == pytest.approx(differences)
    assert paired["mean_difference"] == pytest.approx(np.mean(differences))
    assert paired["sd_difference"] == pytest.approx(np.std(differences, ddof=1))
    expected = stats.paired_bootstrap(
      np.concatenate([u["eval_correct"] for u in uniform]),
      np.concatenate([v["eval_correct"] for v in variant]),
    )
    assert paired["bootstrap"] == expected.to_dict()
  # Soft seed 3 has no uniform partner: only seeds 1 and 2 pair.
  assert out["paired"][SOFT]["seeds"] == 2
  assert out["paired"][SOFT]["differences"] == pytest.approx([0.0, -0.2])


def test_summarize_paired_without_per_problem_correctness(runs):
  del _summary(runs, freeze.UNIFORM, 1)["eval_correct"]
  out = freeze.summarize(runs)
  for paired in out["paired"].values():
    assert "bootstrap" not in paired
    assert "differences" in paired


def test_summarize_without_uniform(runs):
  others = [r for r in runs if r["variant"] != freeze.UNIFORM]
  out = freeze.summarize(others, target_fraction=0.8)
  finals = [r[4][-1] for r in RUNS if r[1] != 1.0]
  assert out["target"] == pytest.approx(0.8 * np.mean(finals))
  assert out["paired"] == {}
  assert set(out["variants"]) == {FREEZE, SOFT, RANDOM}


def test_summarize_single_seed_and_ragged_curves(tmp_path):
  one = _write_run(tmp_path, "u0", 1.0, "none", 0, (0.1, 0.3, 0.6))
  short = _write_run(tmp_path, "f0", 0.0, "none", 0, (0.1, 0.3, 0.6))
  long = _write_run(tmp_path, "f1", 0.0, "none", 1, (0.1, 0.3, 0.6))
  with open(os.path.join(short, "summary.json")) as f:
    summary = json.load(f)
  summary["evals"] = summary["evals"][1:]  # no step-0 evaluation
  with open(os.path.join(short, "summary.json"), "w") as f:
    json.dump(summary, f)
  out = freeze.summarize(freeze.load_runs([one, short, long]))
  uniform = out["variants"][freeze.UNIFORM]
  assert uniform["final_sd"] == 0.0
  assert uniform["curve_sd"] == [0.0, 0.0, 0.0]
  # Curves of different lengths are not averaged.
  assert "curve_mean" not in out["variants"][FREEZE]
  assert "wall_mean" not in out["variants"][FREEZE]


def test_summarize_variants_are_by_seed_whatever_the_run_order(runs):
  out = freeze.summarize(runs)
  shuffled = freeze.summarize(runs[::-1])
  assert shuffled["variants"].keys() == out["variants"].keys()
  for label, row in out["variants"].items():
    assert shuffled["variants"][label].keys() == row.keys()
    for key, value in row.items():
      # approx: the mean behind the target sums in the other order.
      assert shuffled["variants"][label][key] == pytest.approx(
        value, nan_ok=True
      ), (label, key)


def test_summarize_paired_does_not_depend_on_the_run_order(runs):
  out = freeze.summarize(runs)["paired"]
  shuffled = freeze.summarize(runs[::-1])["paired"]
  for label in out:
    assert shuffled[label]["differences"] == out[label]["differences"]
    assert shuffled[label]["bootstrap"] == out[label]["bootstrap"]


def test_gs_run_folders_summarize_like_local_ones(tmp_path, gcs):
  runs = storage.join(gcs, "runs")
  for row in RUNS:
    _write_run(tmp_path, *row)
    _write_run(runs, *row)
  found = freeze.run_dirs(f"{runs}/*")
  assert found == [
    storage.join(runs, name) for name in sorted(r[0] for r in RUNS)
  ]
  mixed = freeze.run_dirs(f"{runs}/uniform_s0, {runs}/soft_s[12]")
  assert mixed == [
    storage.join(runs, n) for n in ("uniform_s0", "soft_s1", "soft_s2")
  ]
  local = freeze.summarize(freeze.load_runs(freeze.run_dirs(f"{tmp_path}/*")))
  remote = freeze.summarize(freeze.load_runs(found))
  assert json.dumps(remote, sort_keys=True) == json.dumps(local, sort_keys=True)


def test_bad_gs_run_patterns_and_folders_are_named(gcs):
  _write_run(storage.join(gcs, "runs"), *RUNS[0])
  with pytest.raises(FileNotFoundError, match=re.escape(f"{gcs}/runs/z*")):
    freeze.run_dirs(f"{gcs}/runs/z*")
  with pytest.raises(ValueError, match="wildcard in its bucket name"):
    freeze.run_dirs("gs://rock-*/runs/*")
  missing = storage.join(gcs, "runs", "unfinished")
  with pytest.raises(
    FileNotFoundError, match=re.escape(f"{missing!r}: no config.json")
  ):
    freeze.load_runs([missing])


def test_the_freeze_analysis_reads_and_writes_gs_urls(gcs):
  for row in RUNS[:6]:
    _write_run(storage.join(gcs, "runs"), *row)
  config = load_config("analyze_rock.py")
  config.workdir = storage.join(gcs, "runs", "uniform_s0")
  config.analysis.analyses = "freeze"
  config.analysis.freeze_runs = f"{gcs}/runs/*"
  config.analysis.out_dir = storage.join(gcs, "report") + "/"
  result = pipeline.run(config, extra_sections=(reproduce.comparison,))
  out = storage.join(gcs, "report")
  assert result["out_dir"] == out
  assert result["freeze"] == storage.join(out, "freeze.json")
  assert result["report"] == {
    "markdown": storage.join(out, "report.md"),
    "html": storage.join(out, "report.html"),
  }
  assert storage.listdir(out) == [
    "analysis_config.json",
    "freeze.json",
    "freeze_steps.png",
    "freeze_wall.png",
    "report.html",
    "report.md",
  ]
  numbers = json.loads(storage.read_text(result["freeze"]))
  assert set(numbers["variants"]) == {freeze.UNIFORM, FREEZE}
  markdown = storage.read_text(result["report"]["markdown"])
  assert markdown.startswith("# Rock-Token analysis of uniform_s0\n")
  assert re.findall(r"\]\(([^)]+)\)", markdown) == [
    "freeze_steps.png",
    "freeze_wall.png",
  ]
  # The comparison read freeze.json back from the bucket: uniform's mean.
  assert f"| {100 * np.mean([0.6, 0.7, 0.8]):.2f} |" in markdown
  page = storage.read_text(result["report"]["html"])
  for name in ("freeze_steps.png", "freeze_wall.png"):
    data = base64.b64encode(storage.read_bytes(storage.join(out, name)))
    assert f"data:image/png;base64,{data.decode()}" in page
  saved = json.loads(
    storage.read_text(storage.join(out, "analysis_config.json"))
  )
  assert saved["analysis"]["freeze_runs"] == f"{gcs}/runs/*"
