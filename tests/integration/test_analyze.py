"""The analysis pipeline and the reproduction driver, on tiny runs.

Tiny random Hugging Face models and a GSM8K-format folder (the `assets`
fixture) go through `reproduce.run`: every freeze variant is
trained, every analysis runs on the uniform one and the report is built.
"""

import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest
from run_helpers import (
  ROOT,
  load_config,
  set_fields,
  tiny_config,
  tiny_overrides,
)

from rock_jax import storage
from rock_jax.analysis import census
from rock_jax.config import validate
from rock_jax.study import pipeline, reproduce

ANALYSIS = {
  "analysis.num_examples": 8,
  "analysis.batch_size": 8,
  "analysis.k": 5,
  "analysis.k_sweep": "1,2,5,10",
  "analysis.stability_sizes": "2,4,6",
  "analysis.high_kl_k": 3,
  "analysis.random_k": 3,
  "analysis.grad_batches": 1,
  "analysis.knockout_candidates": 3,
  "analysis.resamples": 200,
}


@pytest.fixture(scope="module")
def reproduced(assets, tmp_path_factory):
  root = tmp_path_factory.mktemp("reproduce")
  settings = tiny_overrides(assets)
  settings.update({"train.eval_every": 2, "rock.refresh_every": 0})
  result = reproduce.run(
    str(root),
    seeds=(0,),
    early_step=2,
    train_overrides=lambda c: set_fields(c, settings),
    analysis_overrides=lambda c: set_fields(c, {**settings, **ANALYSIS}),
  )
  return root, result


def test_reproduction_writes_every_analysis_and_a_complete_report(reproduced):
  root, result = reproduced
  out = result["out_dir"]
  assert out == str(root / "report")
  for name in validate.ANALYSES:
    assert os.path.isfile(result[name]), name
  machine = json.load(open(os.path.join(out, "machine.json")))
  assert machine["cpu"] and machine["jax"]
  markdown = open(result["report"]["markdown"]).read()
  for title in (
    "Rock Score census",
    "Gradient diagnostics",
    "Persistence",
    "Knockout",
    "Freeze experiments",
    "Paper vs this run",
    "Where this ran",
  ):
    assert f"## {title}" in markdown
  figures = re.findall(r"\]\(([^)]+\.png)\)", markdown)
  assert len(figures) >= 15
  for path in figures:
    with open(os.path.join(out, path), "rb") as f:
      assert f.read(8) == b"\x89PNG\r\n\x1a\n"
  page = open(result["report"]["html"]).read()
  assert page.count("data:image/png;base64,") == len(figures)
  # Every variant was trained once, the uniform one kept its early export.
  runs = sorted(os.listdir(root / "runs"))
  assert runs == [
    "guarded_freeze_seed0",
    "loss_guarded_freeze_seed0",
    "random_freeze_seed0",
    "rock_freeze_seed0",
    "soft_rock_seed0",
    "uniform_seed0",
  ]
  assert os.path.isdir(root / "runs" / "uniform_seed0" / "export_step_2")


def test_census_numbers_follow_from_the_saved_corpus(reproduced):
  _, result = reproduced
  numbers = json.load(open(result["census"]))
  corpus = census.Corpus.load(os.path.join(result["out_dir"], "corpus.npz"))
  assert corpus.kl_BxN.shape[0] == numbers["problems"] == 8
  vocab = int(corpus.ids_BxN.max()) + 1
  ids, kl, mask = corpus.ids_BxN, corpus.kl_BxN, corpus.mask_BxN
  count = np.bincount(ids[mask], minlength=vocab)
  total = np.bincount(ids[mask], weights=kl[mask].astype(np.float64))
  total = np.pad(total, (0, vocab - len(total)))
  # The embedded task's recipe (the freeze list's): every emitted type.
  eligible = [v for v in range(vocab) if count[v] >= 1]
  expected = sorted(eligible, key=lambda v: (-total[v], v))[:5]
  assert numbers["rock_ids"] == expected
  assert numbers["rock_token_share"] == pytest.approx(
    count[expected].sum() / count.sum()
  )
  assert numbers["rock_kl_share"] == pytest.approx(
    total[expected].sum() / total.sum()
  )
  assert numbers["positions"] == int(mask.sum())


def test_knockout_persistence_and_freeze_numbers(reproduced):
  _, result = reproduced
  knock = json.load(open(result["knockout"]))
  assert len(knock["rows"]) == 3
  assert all(row["emitted"] == 0 for row in knock["rows"])
  assert sum(knock["census"].values()) == 3
  persistence = json.load(open(result["persistence"]))
  assert set(persistence) >= {"own", "fixed", "online", "early"}
  assert persistence["early"].endswith("export_step_2")
  assert persistence["online"]["steps"] == [2, 4]
  freeze = json.load(open(result["freeze"]))
  assert len(freeze["variants"]) == len(reproduce.VARIANTS)
  assert set(freeze["paired"]) == set(freeze["variants"]) - {
    "uniform OPD (λ = 1)"
  }
  gradients = json.load(open(result["gradients"]))
  share = gradients["parameter_share"]
  assert 0 < share["token_share"][0] < 1


def test_a_rerun_reuses_finished_runs(reproduced, assets, capsys):
  root, _ = reproduced
  settings = tiny_overrides(assets)
  settings.update({"train.eval_every": 2, "rock.refresh_every": 0})
  workdirs = reproduce.train_runs(
    str(root), (0,), early_step=2, overrides=lambda c: set_fields(c, settings)
  )
  assert len(workdirs) == len(reproduce.VARIANTS)
  assert capsys.readouterr().out.count("done already, reused") == len(
    reproduce.VARIANTS
  )


def test_a_rerun_under_a_gs_root_reuses_its_finished_runs(gcs, capsys):
  names = [f"{v[0]}_seed0" for v in reproduce.VARIANTS]
  runs = [storage.join(gcs, "runs", name) for name in names]
  for workdir in runs:  # summary.json marks a run as finished.
    storage.write_text(storage.join(workdir, "summary.json"), "{}")
  assert reproduce.train_runs(gcs + "/", (0,)) == runs
  assert capsys.readouterr().out.count("done already, reused") == len(runs)
  config = reproduce.analysis_config(gcs, runs)
  assert config.analysis.out_dir == storage.join(gcs, "report")
  assert config.analysis.freeze_runs == ",".join(runs)


@pytest.mark.parametrize(
  "field, value, match",
  [
    ("analyses", "census,plots", "analysis.analyses='census,plots'"),
    ("formats", "pdf", "analysis.formats='pdf'"),
    ("persistence_contexts", "late", "analysis.persistence_contexts"),
    ("k_sweep", "5,x", "analysis.k_sweep='5,x'"),
    ("alpha", 1.5, "analysis.alpha=1.5"),
    ("analyses", "freeze", "needs analysis.freeze_runs"),
  ],
)
def test_bad_analysis_settings_are_named(field, value, match):
  config = load_config("analyze_rock.py")
  config.analysis[field] = value
  with pytest.raises(ValueError, match=re.escape(match)):
    validate.analyses(config)


def test_a_workdir_without_an_export_is_a_clear_error(assets, tmp_path):
  config = tiny_config(assets, tmp_path, name="analyze_rock.py")
  with pytest.raises(FileNotFoundError, match="no model at"):
    pipeline.run(config)


def test_the_commands_reject_bad_flags_naming_them():
  root = str(ROOT)
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  for args, message in (
    (
      [
        "launch/analyze.py",
        "--config=configs/analyze_rock.py",
        "--config.analysis.analyses=census,plots",
      ],
      "analysis.analyses='census,plots'",
    ),
    (["launch/reproduce.py", "--seeds=0,x"], "--seeds=0,x: expected integers"),
    (
      ["launch/reproduce.py", "--compare=a=x,b"],
      "--compare item 'b': expected label=root",
    ),
    (["launch/reproduce.py", "--isa=SSE9"], "--isa"),
    (
      ["launch/reproduce.py", "--difficulty=nope"],
      "--difficulty=nope: expected one of ['default', 'easy', 'hard', "
      "'long_tail']",
    ),
  ):
    done = subprocess.run(
      [sys.executable, *args],
      cwd=root,
      env=env,
      capture_output=True,
      text=True,
      timeout=120,
    )
    assert done.returncode != 0
    assert message in done.stderr + done.stdout
