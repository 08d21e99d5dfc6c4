"""Freeze experiments: uniform OPD against Rock-Freeze and a random freeze.

Reads finished training runs (`<workdir>/config.json` and `summary.json`;
folders or `gs://` URLs), groups them into variants by their weighting (λ,
static list, control) and summarises accuracy against steps and wall time
over seeds. The paper's speed-up claim is read as steps to a target
accuracy: freezing skips no computation, so time per step is reported
separately.
"""

from __future__ import annotations

import glob
import json

import numpy as np

from rock_jax import storage
from rock_jax.analysis import stats

UNIFORM = "uniform OPD (λ = 1)"


def _expand(pattern: str) -> list[str]:
  """The paths or URLs a shell pattern matches, sorted."""
  if not storage.is_url(pattern):
    return sorted(glob.glob(pattern))
  # Object stores are listed below a fixed prefix: the components before
  # the first one with a wildcard.
  parts = pattern.rstrip("/").split("/")
  first = next(i for i, p in enumerate(parts) if glob.has_magic(p))
  if first < 3:
    raise ValueError(
      f"analysis.freeze_runs: {pattern!r} has a wildcard in its bucket "
      "name; expected one in the path below the bucket (gs://bucket/runs/*)"
    )
  return storage.glob("/".join(parts[:first]), "/".join(parts[first:]))


def run_dirs(text: str) -> list[str]:
  """The run folders (or URLs) of a comma list of folders and globs (as
  `analysis.freeze_runs`), each glob expanded and sorted."""
  paths = []
  for item in filter(None, (s.strip() for s in text.split(","))):
    found = _expand(item) if glob.has_magic(item) else [item]
    if not found:
      raise FileNotFoundError(
        f"analysis.freeze_runs: {item!r} matches no folder"
      )
    paths.extend(found)
  return paths


# Label prefixes by (rock.protect set, a loss guard: rock.min_loss_ratio or
# rock.min_score_ratio > 0).
GUARDS = {
  (True, True): "guarded",
  (False, True): "loss-guarded",
  (True, False): "answer-guarded",
  (False, False): "",
}


def variant_of(config: dict) -> str:
  """A run's variant label from its config.json."""
  rock = config["rock"]
  lam = float(rock["lam"])
  if lam == 1.0:
    return UNIFORM
  if rock.get("control", "none") != "none":
    return f"frequency-matched random freeze (λ = {lam:g})"
  if rock.get("static_list"):
    return f"static-list freeze (λ = {lam:g})"
  label = (
    f"Rock-Freeze (λ = {lam:g})" if lam == 0 else f"soft Rock (λ = {lam:g})"
  )
  # The default recipe guards its set with both; runs from before
  # `rock.min_loss_ratio` have none.
  answers = bool(rock.get("protect"))
  loss = rock.get("min_loss_ratio", 0) > 0 or rock.get("min_score_ratio", 0) > 0
  guard = GUARDS[answers, loss]
  return f"{guard} {label}" if guard else label


def load_runs(run_dirs) -> list[dict]:
  """Each finished run's variant, seed and summary.

  Raises:
    FileNotFoundError: naming the folder, if a run has no summary.json
      (not finished, or not a rock_jax workdir).
  """
  runs = []
  for path in run_dirs:
    files = {n: storage.join(path, n) for n in ("config.json", "summary.json")}
    for name, file in files.items():
      if not storage.isfile(file):
        raise FileNotFoundError(
          f"freeze run {path!r}: no {name} there; expected the workdir of a "
          "finished `launch/train.py` run"
        )
    config = json.loads(storage.read_text(files["config.json"]))
    summary = json.loads(storage.read_text(files["summary.json"]))
    if "evals" not in summary:
      raise ValueError(
        f"freeze run {path!r} has no graded evaluations (data.eval_split "
        "was empty or ungraded); the comparison needs accuracy curves"
      )
    runs.append(
      {
        "path": path,
        "variant": variant_of(config),
        "seed": int(config["seed"]),
        "summary": summary,
      }
    )
  return runs


def summarize(runs: list[dict], target_fraction: float = 0.95) -> dict:
  """Per variant: curves and final accuracy over seeds, steps to target.

  The target is `target_fraction` of the uniform runs' mean final accuracy
  (of all runs if there is no uniform variant).

  Returns:
    {"target": float, "variants": {label: {...}}, "paired": {label:
    {...}}}: per variant the seeds, per-seed final accuracy and mean ± sd,
    the mean curve against steps (with the sd band) and against mean wall
    time, steps and seconds per step to the target per seed, detection
    precision/recall when known. "paired" compares each variant with
    uniform OPD on the final evaluation: the per-seed differences and,
    when the runs saved per-problem correctness, a paired bootstrap over
    pooled (seed, problem) pairs ("bootstrap") and one over seeds, then
    problems within each ("seed_bootstrap").
  """
  variants = {}
  for run in runs:
    variants.setdefault(run["variant"], []).append(run)
  finals = {
    label: [r["summary"]["student_accuracy_after"] for r in group]
    for label, group in variants.items()
  }
  reference = finals.get(UNIFORM) or [a for v in finals.values() for a in v]
  target = target_fraction * float(np.mean(reference))
  out = {"target": target, "target_fraction": target_fraction}
  out["variants"] = {
    label: _variant(group, target) for label, group in variants.items()
  }
  out["paired"] = {
    label: _paired(group, variants[UNIFORM])
    for label, group in variants.items()
    if label != UNIFORM and UNIFORM in variants
  }
  return out


def _variant(group, target):
  group = sorted(group, key=lambda r: r["seed"])
  evals = [np.asarray(r["summary"]["evals"], np.float64) for r in group]
  steps = evals[0][:, 0]
  same = all(e.shape == evals[0].shape for e in evals)
  acc = np.stack([e[:, 1] for e in evals]) if same else None
  final = [r["summary"]["student_accuracy_after"] for r in group]
  mean, sd = stats.mean_std(final)
  reach = [stats.steps_to_target(e[:, 0], e[:, 1], target) for e in evals]
  seconds_per_step = [
    r["summary"]["train_s"] / max(r["summary"]["steps"], 1) for r in group
  ]
  row = {
    "seeds": [r["seed"] for r in group],
    "final": final,
    "final_mean": mean,
    "final_sd": sd,
    "steps_to_target": reach,
    "seconds_per_step": seconds_per_step,
    "steps": steps.tolist(),
  }
  if acc is not None:
    row["curve_mean"] = acc.mean(0).tolist()
    row["curve_sd"] = (
      acc.std(0, ddof=1) if len(group) > 1 else np.zeros(len(steps))
    ).tolist()
    row["wall_mean"] = np.stack([e[:, 2] for e in evals]).mean(0).tolist()
  for key in ("detection_precision", "detection_recall"):
    values = [r["summary"].get(key) for r in group]
    if all(v is not None for v in values):
      row[key] = stats.mean_std(values)[0]
  return row


def _paired(group, uniform):
  by_seed = {r["seed"]: r["summary"] for r in uniform}
  group = sorted(group, key=lambda r: r["seed"])
  pairs = [
    (r["summary"], by_seed[r["seed"]]) for r in group if r["seed"] in by_seed
  ]
  out = {
    "seeds": len(pairs),
    "differences": [
      a["student_accuracy_after"] - b["student_accuracy_after"]
      for a, b in pairs
    ],
  }
  out["mean_difference"], out["sd_difference"] = stats.mean_std(
    out["differences"]
  )
  if pairs and all(
    "eval_correct" in a and "eval_correct" in b for a, b in pairs
  ):
    variant = [a["eval_correct"] for a, _ in pairs]
    base = [b["eval_correct"] for _, b in pairs]
    out["bootstrap"] = stats.paired_bootstrap(
      np.concatenate(base), np.concatenate(variant)
    ).to_dict()
    # The interval to conclude from: runs vary with their seed, which
    # resampling pooled problems alone leaves out. It needs every seed
    # graded on the same problems.
    if len({len(c) for c in base + variant}) == 1:
      out["seed_bootstrap"] = stats.seed_bootstrap(base, variant).to_dict()
  return out
