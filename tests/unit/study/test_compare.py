"""Reproductions compared (rock_jax.study.compare) on hand-built runs."""

import json

import numpy as np
import pytest

from rock_jax import storage
from rock_jax.study import compare

PROBLEMS = 200
FREEZE = "Rock-Freeze (λ = 0)"
SOFT = "soft Rock (λ = 0.5)"


def _write_run(root, name, lam, seed, final, rng):
  path = storage.join(str(root), "runs", f"{name}_seed{seed}")
  config = {"seed": seed, "rock": {"lam": lam, "control": "none"}}
  correct = (rng.random(PROBLEMS) < final).astype(int).tolist()
  summary = {
    "steps": 100,
    "train_s": 10.0,
    "teacher_accuracy": 0.99,
    "student_accuracy_before": 0.5,
    "student_accuracy_after": float(np.mean(correct)),
    "evals": [[0, 0.5, 0.0], [100, float(np.mean(correct)), 10.0]],
    "eval_correct": correct,
    "detection_precision": 0.8 + 0.01 * seed,
    "detection_recall": 0.9,
  }
  for file, data in (("config.json", config), ("summary.json", summary)):
    storage.write_text(storage.join(path, file), json.dumps(data))


def _reproduction(root, freeze_final, seed=0):
  """Five seeds of uniform (0.8), Rock-Freeze and soft (0.8) runs."""
  rng = np.random.default_rng(seed)
  for s in range(5):
    for name, lam, final in (
      ("uniform", 1.0, 0.8),
      ("rock_freeze", 0.0, freeze_final),
      ("soft_rock", 0.5, 0.8),
    ):
      _write_run(root, name, lam, s, final, rng)
  storage.write_text(
    storage.join(str(root), "report", compare.MACHINE_FILE),
    json.dumps({"cpu": f"cpu {seed}", "isa": ["avx2"], "xla_flags": ""}),
  )
  return str(root)


def test_readings_agree_only_when_both_say_the_same(tmp_path):
  lower = _reproduction(tmp_path / "a", 0.5, seed=1)
  also_lower = _reproduction(tmp_path / "b", 0.6, seed=2)
  same = _reproduction(tmp_path / "c", 0.8, seed=3)
  result = compare.compare({"a": lower, "b": also_lower}, str(tmp_path / "out"))
  found = result["reproductions"]
  assert found["a"]["differences"][FREEZE]["reading"] == "lower"
  assert found["b"]["differences"][FREEZE]["reading"] == "lower"
  assert found["a"]["differences"][SOFT]["reading"] == "no difference detected"
  assert result["agree"] == {FREEZE: True, SOFT: True}
  assert found["a"]["machine"]["cpu"] == "cpu 1"
  assert found["a"]["student_accuracy_before"] == 0.5
  assert found["a"]["variants"][FREEZE]["detection_precision_span"] == (
    pytest.approx([0.8, 0.84])
  )
  markdown = open(result["report"]["markdown"]).read()
  assert "Reproductions compared" in markdown and "cpu 2" in markdown
  saved = json.loads(open(tmp_path / "out" / "comparison.json").read())
  assert saved["agree"] == result["agree"]

  result = compare.compare({"a": lower, "c": same}, str(tmp_path / "out2"))
  assert result["agree"] == {FREEZE: False, SOFT: True}
  assert "| NO |" in open(result["report"]["markdown"]).read()


def test_machine_names_the_cpu_and_its_instruction_sets(monkeypatch):
  monkeypatch.setenv("XLA_FLAGS", "--xla_cpu_max_isa=AVX2")
  m = compare.machine()
  assert m["cpu"] and m["cores"] >= 1 and m["jax"]
  assert set(m["isa"]) <= set(compare._ISA_FLAGS)
  assert m["xla_flags"] == "--xla_cpu_max_isa=AVX2"
