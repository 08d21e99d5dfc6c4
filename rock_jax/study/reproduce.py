"""The paper's study on the embedded task, end to end, on one CPU machine.

1. Freeze experiments: uniform OPD (λ = 1), Rock-Freeze (λ = 0), soft
   λ = 0.5 and a frequency-matched random freeze, each over the seeds, all
   from the same cached teacher and student. The first uniform run also
   exports its student at step `early_step` (the early checkpoint).
2. Every analysis of `rock_jax.study.pipeline` on the first uniform run
   (the paper analyses its baseline OPD checkpoint), with the freeze runs.
3. A "paper vs this run" section with the paper's figures (`PAPER`).

Finished runs (those with a `summary.json`) are reused, so an interrupted
reproduction resumes. The root may be a local folder or a `gs://` URL.
"""

from __future__ import annotations

import json
import time

import ml_collections
import numpy as np

from rock_jax import metrics, storage, train
from rock_jax.analysis import report
from rock_jax.config import analysis_keys, presets, validate
from rock_jax.study import compare, pipeline

# (name, λ, control, recipe): the paper's three regimes and its rock set
# with a soft weight ("paper": no guards), the project's default ("default":
# the freeze whose set is guarded against content tokens), and that default
# as it runs on data without reference answers ("no_answers").
VARIANTS = (
  ("uniform", 1.0, "none", "paper"),
  ("rock_freeze", 0.0, "none", "paper"),
  ("guarded_freeze", 0.0, "none", "default"),
  ("loss_guarded_freeze", 0.0, "none", "no_answers"),
  ("soft_rock", 0.5, "none", "paper"),
  ("random_freeze", 0.0, "frequency_matched", "paper"),
)


def _no_answers(c):
  c.rock.protect = ""


RECIPES = {
  "paper": presets.paper_freeze,
  "default": lambda c: None,
  "no_answers": _no_answers,
}

# The paper's figures (arXiv 2605.09253, §3, §4, §5, §8): the submission's
# text unless noted; Fig. 5 at step 1500, average accuracy over AIME24,
# AIME25 and HMMT25 in percent.
PAPER = {
  "rock_token_share": (
    "0.665",
    "Σ freq of the 100 freeze-list rocks "
    "85,120 / ≤ 128,000 positions (256-token cap)",
  ),
  "rock_density_median": ("0.525 (v2: 0.18)", "median per-sequence density"),
  "coverage_at_k": ("≈ 0.60 at K = 100", "share of corpus KL in the top K"),
  "jaccard_at_k": ("> 0.70 for K ≤ 100 (0.81 at K = 50)", "nested prefixes"),
  "rock_vs_unselected_mean_kl": ("0.282 vs 0.099 (controls)", "freeze list"),
  "median_norm": ("0.016 (rock) vs 0.54 (rare high-KL)", "Fig. 3a"),
  "median_cos": ("0.040 / 0.025 / 0.006 (rock / high-KL / random)", "Fig. 3b"),
  "persistence_high_kl": ("2.02 → 0.85 (−58%, p < 1e-8)", "Fig. 3c"),
  "persistence_rock": ("0.21 → 0.19", "Fig. 3d"),
  "persistence_random": ("no net change", "Fig. 3d"),
  "pillars": ("7 / 193 / 0 of 200 (deterministic rerun: 0 pillars)", "§5"),
  "sign_test": ("10 of 10 negative, p = 1.95e-3", "§5"),
  "final_uniform": ("56.67", "Fig. 5"),
  "final_rock_freeze": ("55.56 (−1.1)", "Fig. 5"),
  "final_random": ("42.22 (−14.4)", "Fig. 5"),
}


def variant_config(
  name, lam, control, recipe, seed, root, early_step, difficulty
):
  """The training config of one freeze run on the embedded task, its rock
  set chosen by `RECIPES[recipe]`."""
  c = presets.base("", f"{name}_seed{seed}")
  presets.embedded_difficulty(c, difficulty)
  RECIPES[recipe](c)
  c.rock.lam = lam
  c.rock.control = control
  c.seed = seed
  c.workdir = storage.join(root, "runs", c.name)
  if name == "uniform" and early_step:
    c.train.export_every = early_step
  return c


def train_runs(
  root,
  seeds,
  variants=VARIANTS,
  early_step=100,
  overrides=None,
  difficulty="default",
):
  """Trains (or reuses) every variant × seed; returns their workdirs."""
  workdirs = []
  for seed in seeds:
    for variant in variants:
      c = variant_config(*variant, seed, root, early_step, difficulty)
      if overrides:
        overrides(c)
      workdirs.append(c.workdir)
      if storage.isfile(storage.join(c.workdir, "summary.json")):
        print(f"{c.name}: done already, reused", flush=True)
        continue
      start = time.time()
      train.run(c)
      print(f"{c.name}: {time.time() - start:.0f} s", flush=True)
  return workdirs


def analysis_config(
  root, workdirs, overrides=None, difficulty="default"
) -> ml_collections.ConfigDict:
  """The analysis of the first uniform run, comparing all the runs."""
  c = presets.base("", "opd_uniform")
  presets.embedded_difficulty(c, difficulty)
  c.analysis = analysis_keys.analysis_config(embedded=True)
  c.workdir = workdirs[0]
  c.analysis.freeze_runs = ",".join(workdirs)
  c.analysis.out_dir = storage.join(root, "report")
  if overrides:
    overrides(c)
  return c


def _get(path, *keys, default=np.nan):
  if not storage.isfile(path):
    return default
  value = json.loads(storage.read_text(path))
  for key in keys:
    if not isinstance(value, dict) or key not in value:
      return default
    value = value[key]
  return value


def _fmt(x):
  return report.format_number(x) if isinstance(x, (int, float)) else str(x)


def comparison(out_dir) -> report.Section:
  """The paper's figures beside this run's, from the analyses' JSON."""
  path = {n: storage.join(out_dir, f"{n}.json") for n in validate.ANALYSES}
  ours = {}
  for key in ("rock_token_share", "rock_density_median", "coverage_at_k"):
    ours[key] = _fmt(_get(path["census"], key))
  ours["jaccard_at_k"] = _fmt(_get(path["census"], "jaccard_at_k"))
  ours["rock_vs_unselected_mean_kl"] = (
    f"{_fmt(_get(path['census'], 'rock_mean_kl'))} vs "
    f"{_fmt(_get(path['census'], 'unselected_mean_kl'))} (other types)"
  )
  groups = ("rock", "high_kl_rare", "random")
  ours["median_norm"] = " vs ".join(
    _fmt(_get(path["gradients"], "groups", g, "median_norm"))
    for g in groups[:2]
  )
  ours["median_cos"] = " / ".join(
    _fmt(_get(path["gradients"], "groups", g, "median_cos")) for g in groups
  )
  for g, key in zip(
    groups,
    ("persistence_rock", "persistence_high_kl", "persistence_random"),
    strict=True,
  ):
    r = _get(path["persistence"], "own", g, default={})
    ours[key] = (
      f"{_fmt(r['median_before'])} → {_fmt(r['median_after'])} "
      f"({r['relative_median_change']:+.0%}, p = {_fmt(r['p_value'])})"
      if r
      else "n/a"
    )
  knock = _get(path["knockout"], default={})
  if knock:
    c = knock["census"]
    k = knock["census_in_rock_set"]
    ours["pillars"] = (
      f"{c['strong_pillar']} / {c['neutral']} / "
      f"{c['strong_stumbling_block']} of {len(knock['rows'])}; in the rock "
      f"set {k['strong_pillar']} / {k['neutral']} / "
      f"{k['strong_stumbling_block']}"
    )
    s = knock["sign_test"]
    ours["sign_test"] = (
      f"{s['negative']} of {s['negative'] + s['positive']} negative, "
      f"p = {_fmt(s['p_value'])}"
    )
  variants = _get(path["freeze"], "variants", default={})
  finals = {k: v["final_mean"] for k, v in variants.items()}
  base = next((v for k, v in finals.items() if k.startswith("uniform")), None)
  for key, prefix in (
    ("final_uniform", "uniform"),
    ("final_rock_freeze", "Rock-Freeze"),
    ("final_random", "frequency-matched"),
  ):
    value = next((v for k, v in finals.items() if k.startswith(prefix)), None)
    if value is not None:
      ours[key] = f"{100 * value:.2f}"
      if base is not None and key != "final_uniform":
        ours[key] += f" ({100 * (value - base):+.1f})"
  rows = tuple(
    (key.replace("_", " "), paper, ours.get(key, "n/a"), note)
    for key, (paper, note) in PAPER.items()
  )
  return report.Section(
    title="Paper vs this run",
    paragraphs=(
      "The paper's figures come from Qwen3-30B-A3B → Qwen3-4B on MATH "
      "(analysis) and AIME/HMMT (accuracy, percent); ours from the embedded "
      "column-addition task (accuracy in percent of 256 test problems). "
      "docs/reproduction.md discusses where they agree and why they differ.",
    ),
    tables=(
      report.Table(
        columns=("quantity", "paper", "this run", "paper's source"),
        rows=rows,
      ),
    ),
  )


def _machine_section(out_dir) -> report.Section:
  m = json.loads(storage.read_text(storage.join(out_dir, compare.MACHINE_FILE)))
  return report.Section(
    title="Where this ran",
    paragraphs=(
      "Runs repeat bit for bit on the same CPU type with the same seeds and "
      "software; XLA compiles for the host's instruction set, so another "
      "CPU gives other numbers (compare reproductions with "
      "`launch/reproduce.py --compare`).",
    ),
    numbers={
      k: ", ".join(v) if isinstance(v, list) else v for k, v in m.items()
    },
  )


def run(
  root: str,
  seeds=(0, 1, 2, 3, 4),
  *,
  variants=VARIANTS,
  early_step: int = 100,
  train_overrides=None,
  analysis_overrides=None,
  difficulty: str = "default",
) -> dict:
  """Runs the whole study under `root` (a folder or `gs://` URL) on the
  embedded task of `difficulty`; returns the pipeline's result."""
  start = time.time()
  root = storage.absolute(root)
  workdirs = train_runs(
    root, seeds, variants, early_step, train_overrides, difficulty
  )
  config = analysis_config(root, workdirs, analysis_overrides, difficulty)
  metrics.write_json(
    storage.join(config.analysis.out_dir, compare.MACHINE_FILE),
    compare.machine(),
  )
  result = pipeline.run(config, extra_sections=(comparison, _machine_section))
  result["wall_s"] = time.time() - start
  print(f"reproduction: {result['wall_s']:.0f} s", flush=True)
  return result
