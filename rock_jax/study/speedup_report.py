"""The speed-up sweep's reading: each arm at its best learning rate.

An arm's best rate is the one with the highest final accuracy (mean over
seeds; ties go to the fewer steps to the target). The target is
`target_fraction` of the baseline's (uniform OPD with clipping) at its best
rate. A run reaches the target when the mean of its last `SMOOTHING` graded
evaluations does (interpolated between evaluations): greedy accuracy on a
hundred-odd problems swings by several points between evaluations, and a
single lucky evaluation is no speed-up. At the best rate the report gives
steps and training seconds to the target, the speed-up over the baseline's
with a 95%
interval that resamples seeds, the final-accuracy difference with the
two-level seed bootstrap of `rock_jax.analysis.stats`, rollout lengths and
the gradient-norm and clip-rate curves from the runs' metrics.
"""

from __future__ import annotations

import json

import numpy as np

from rock_jax import metrics, storage
from rock_jax.analysis import plots, report, stats
from rock_jax.study import speedup


def _read_json(path: str):
  return json.loads(storage.read_text(path))


def _logged(workdir: str) -> dict[str, np.ndarray]:
  """Per logged step: gradient norm, clip rate and rollout length."""
  lines = storage.read_text(storage.join(workdir, "logs", "metrics.jsonl"))
  keys = ("train/grad_norm", "train/clipped", "rollout/length")
  rows = [json.loads(x) for x in lines.splitlines() if x.strip()]
  rows = [r for r in rows if all(k in r for k in keys)]
  out = {"step": np.array([r["step"] for r in rows], np.float64)}
  for key in keys:
    out[key] = np.array([r[key] for r in rows], np.float64)
  return out


def load(root: str, settings: speedup.Settings, arms, learning_rates, seeds):
  """Every run's evaluations and logged curves: {(arm, lr, seed): run}."""
  runs = {}
  for arm, lr, seed in speedup.grid(arms, learning_rates, seeds):
    workdir = speedup.run_config(arm, lr, seed, root, settings).workdir
    summary = _read_json(storage.join(workdir, "summary.json"))
    evals = np.asarray(summary["evals"], np.float64)
    runs[arm.name, lr, seed] = {
      "steps": evals[:, 0],
      "accuracy": evals[:, 1],
      "seconds": evals[:, 2],
      "correct": np.asarray(summary["eval_correct"], np.float64),
      "logged": _logged(workdir),
      "wall_s": float(summary["wall_s"]),
    }
  return runs


# Evaluations averaged (trailing) before the target crossing is read.
SMOOTHING = 3


def smoothed(accuracy) -> np.ndarray:
  """Trailing mean over up to `SMOOTHING` evaluations."""
  accuracy = np.asarray(accuracy, np.float64)
  cumulative = np.concatenate([[0.0], np.cumsum(accuracy)])
  end = np.arange(1, len(accuracy) + 1)
  start = np.maximum(end - SMOOTHING, 0)
  return (cumulative[end] - cumulative[start]) / (end - start)


def _to_target(run: dict, target: float) -> tuple[float, float]:
  accuracy = smoothed(run["accuracy"])
  steps = stats.steps_to_target(run["steps"], accuracy, target)
  seconds = stats.steps_to_target(run["seconds"], accuracy, target)
  return steps, seconds


def _cell(runs, arm, lr, seeds, target) -> dict:
  """One arm at one rate: per-seed finals and target crossings."""
  own = [runs[arm, lr, s] for s in seeds]
  crossings = np.array([_to_target(r, target) for r in own])
  steps = crossings[:, 0]
  return {
    "final": [float(r["accuracy"][-1]) for r in own],
    "steps_to_target": steps.tolist(),
    "seconds_to_target": crossings[:, 1].tolist(),
    "median_steps": float(np.median(np.where(np.isnan(steps), np.inf, steps))),
  }


def _speedup_interval(base, variant, resamples=10000, seed=0):
  """Ratio of mean steps to target, base / variant, with a 95% interval
  over seeds resampled in pairs; None when a run never reached it or the
  arm's runs all started at the target."""
  base, variant = np.asarray(base), np.asarray(variant)
  if np.isnan(base).any() or np.isnan(variant).any() or not variant.any():
    return None
  rng = np.random.default_rng(seed)
  idx = rng.integers(0, len(base), size=(resamples, len(base)))
  ratios = base[idx].mean(1) / variant[idx].mean(1)
  low, high = np.quantile(ratios, [0.025, 0.975])
  return [float(base.mean() / variant.mean()), float(low), float(high)]


def _steps_difference(base, variant):
  """Arm minus baseline mean steps to target, paired over seeds
  (`stats.paired_bootstrap`); None when a run never reached it."""
  if np.isnan(base).any() or np.isnan(variant).any():
    return None
  return stats.paired_bootstrap(base, variant).to_dict()


def _step_time(run: dict) -> float:
  return float(run["seconds"][-1] / run["steps"][-1])


def _step_time_ratio(runs, arm, learning_rates, seeds) -> list[float]:
  """Median, min and max over (rate, seed) of the arm's seconds per step
  over the baseline's at the same rate and seed: runs the sweep trains side
  by side, so both saw the same machine load."""
  ratios = [
    _step_time(runs[arm, lr, s]) / _step_time(runs[speedup.BASELINE, lr, s])
    for lr in learning_rates
    for s in seeds
  ]
  return [float(np.median(ratios)), float(min(ratios)), float(max(ratios))]


def _after_warmup(logged: dict, key: str, warmup: int) -> float:
  keep = logged["step"] > warmup
  return float(np.mean(logged[key][keep])) if keep.any() else float("nan")


def summarize(runs, settings, arms, learning_rates, seeds, target_fraction):
  """The sweep's numbers (what `speedup.json` holds)."""
  cells = {}
  for arm in arms:
    for lr in learning_rates:
      final = np.mean([runs[arm.name, lr, s]["accuracy"][-1] for s in seeds])
      cells[arm.name, lr] = {"final_mean": float(final)}
  target = target_fraction * max(
    cells[speedup.BASELINE, lr]["final_mean"] for lr in learning_rates
  )
  for (name, lr), cell in cells.items():
    cell.update(_cell(runs, name, lr, seeds, target))
  out = {
    "runs": len(runs),
    "run_wall_s": float(sum(r["wall_s"] for r in runs.values())),
    "target": target,
    "target_fraction": target_fraction,
    "smoothing": SMOOTHING,
    "arms": {},
    "sweep": [],
  }
  for (name, lr), cell in cells.items():
    out["sweep"].append({"arm": name, "lr": lr, **cell})
  best = {
    arm.name: min(
      learning_rates,
      key=lambda lr, n=arm.name: (
        -cells[n, lr]["final_mean"],
        cells[n, lr]["median_steps"],
      ),
    )
    for arm in arms
  }
  base_lr = best[speedup.BASELINE]
  base = cells[speedup.BASELINE, base_lr]
  base_correct = [runs[speedup.BASELINE, base_lr, s]["correct"] for s in seeds]
  for arm in arms:
    lr = best[arm.name]
    cell = cells[arm.name, lr]
    own = [runs[arm.name, lr, s] for s in seeds]
    delta = stats.seed_bootstrap(base_correct, [r["correct"] for r in own])
    w = settings.warmup_steps
    out["arms"][arm.name] = {
      "label": arm.label,
      "best_lr": lr,
      **cell,
      "speedup_steps": _speedup_interval(
        base["steps_to_target"], cell["steps_to_target"]
      ),
      "steps_minus_uniform": _steps_difference(
        base["steps_to_target"], cell["steps_to_target"]
      ),
      "speedup_seconds": _speedup_interval(
        base["seconds_to_target"], cell["seconds_to_target"]
      ),
      "final_minus_uniform": delta.to_dict(),
      "seconds_per_step": float(np.mean([_step_time(r) for r in own])),
      "step_time_vs_uniform": _step_time_ratio(
        runs, arm.name, learning_rates, seeds
      ),
      "rollout_length": np.mean(
        [_after_warmup(r["logged"], "rollout/length", w) for r in own]
      ).item(),
      "grad_norm": np.mean(
        [_after_warmup(r["logged"], "train/grad_norm", w) for r in own]
      ).item(),
      "clip_rate": np.mean(
        [_after_warmup(r["logged"], "train/clipped", w) for r in own]
      ).item(),
    }
  return out


def _mean_curve(runs, arm, lr, seeds, key):
  """Mean over seeds of a logged curve (or of accuracy for key None)."""
  own = [runs[arm, lr, s] for s in seeds]
  if key is None:
    return own[0]["steps"], np.mean([r["accuracy"] for r in own], axis=0)
  x = own[0]["logged"]["step"]
  return x, np.mean([r["logged"][key] for r in own], axis=0)


def figures(runs, found, seeds, out_dir) -> tuple[report.Figure, ...]:
  """Accuracy, gradient norm, clip rate and rollout length against steps,
  each arm at its best rate, mean over seeds."""
  drawn = []
  for key, name, ylabel in (
    (None, "accuracy", "greedy accuracy"),
    ("train/grad_norm", "grad_norm", "gradient norm before clipping"),
    ("train/clipped", "clip_rate", "share of steps clipped"),
    ("rollout/length", "rollout_length", "completion tokens"),
  ):
    series = {
      f"{a['label']} (lr {a['best_lr']:g})": _mean_curve(
        runs, n, a["best_lr"], seeds, key
      )
      for n, a in found["arms"].items()
    }
    hline = (found["target"], "target") if key is None else None
    path = storage.join(out_dir, f"speedup_{name}.png")
    plots.curves(
      path,
      series,
      title=f"{ylabel} at each arm's best learning rate",
      xlabel="step",
      ylabel=ylabel,
      hline=hline,
      markers=key is None,
    )
    drawn.append(report.Figure(path=f"speedup_{name}.png", caption=ylabel))
  return tuple(drawn)


def _fmt_steps(values) -> str:
  return ", ".join("—" if np.isnan(v) else f"{v:.0f}" for v in values)


def _fmt_ratio(r) -> str:
  if r is None:
    return "n/a (a run missed the target or started there)"
  return f"{r[0]:.2f}× ({r[1]:.2f} to {r[2]:.2f})"


def _fmt_interval(result, scale, spec) -> str:
  """`delta [low, high]` of a bootstrap result, scaled; n/a for None."""
  if result is None:
    return "n/a"
  low, delta, high = (
    format(scale * result[k], spec) for k in ("ci_low", "delta", "ci_high")
  )
  return f"{delta} ({low} to {high})"


def section(found: dict, figs=()) -> report.Section:
  """The report's section: best-rate table and the whole sweep."""
  best = report.Table(
    columns=(
      "arm",
      "best lr",
      "final accuracy (seeds)",
      "steps to target (seeds)",
      "speed-up in steps",
      "Δ steps vs uniform",
      "speed-up in seconds",
      "Δ final vs uniform",
      "s/step",
      "step time vs uniform",
      "rollout tokens",
      "grad norm",
      "clip rate",
    ),
    rows=tuple(
      (
        a["label"],
        f"{a['best_lr']:g}",
        ", ".join(f"{x:.3f}" for x in a["final"]),
        _fmt_steps(a["steps_to_target"]),
        _fmt_ratio(a["speedup_steps"]),
        _fmt_interval(a["steps_minus_uniform"], 1, ".0f"),
        _fmt_ratio(a["speedup_seconds"]),
        _fmt_interval(a["final_minus_uniform"], 100, "+.1f"),
        f"{a['seconds_per_step']:.3f}",
        "{:.2f} ({:.2f} to {:.2f})".format(*a["step_time_vs_uniform"]),
        f"{a['rollout_length']:.1f}",
        f"{a['grad_norm']:.2f}",
        f"{a['clip_rate']:.2f}",
      )
      for a in found["arms"].values()
    ),
  )
  labels = {name: a["label"] for name, a in found["arms"].items()}
  sweep = report.Table(
    columns=("arm", "lr", "mean final accuracy", "steps to target (seeds)"),
    rows=tuple(
      (
        labels[c["arm"]],
        f"{c['lr']:g}",
        f"{c['final_mean']:.3f}",
        _fmt_steps(c["steps_to_target"]),
      )
      for c in found["sweep"]
    ),
  )
  return report.Section(
    title="Speed-up: each arm at its best learning rate",
    paragraphs=(
      f"Target accuracy {found['target']:.3f} ({found['target_fraction']:.0%} "
      "of uniform OPD's final accuracy at its best rate; each arm is read "
      "at the rate with its highest final accuracy). A run reaches the "
      f"target when the mean of its last {SMOOTHING} evaluations does. "
      "Speed-ups are the baseline's "
      "mean steps (or training seconds) to the target over the arm's, with "
      "a 95% interval over seeds; Δ steps is the arm's mean steps to the "
      "target minus the baseline's (paired bootstrap over seeds); Δ final is "
      "accuracy points with the seed-then-problem bootstrap. Grad norm, "
      "clip rate and rollout tokens are means over the steps after the rock "
      "set is selected. Seconds depend on the machine's load when a run "
      "trained; step time vs uniform compares runs trained side by side "
      "(same rate and seed): median (range).",
    ),
    tables=(best, sweep),
    figures=tuple(figs),
  )


def run(
  root: str,
  settings: speedup.Settings,
  *,
  arms=speedup.ARMS,
  learning_rates=speedup.LEARNING_RATES,
  seeds=speedup.SEEDS,
  target_fraction: float = 0.95,
) -> tuple[dict, report.Section]:
  """Reads the finished sweep under `root`; writes `speedup.json` and the
  figures into `<root>/report`; returns the numbers and the section."""
  runs = load(root, settings, arms, learning_rates, seeds)
  found = summarize(
    runs, settings, arms, learning_rates, seeds, target_fraction
  )
  out_dir = storage.join(root, "report")
  metrics.write_json(storage.join(out_dir, "speedup.json"), found)
  return found, section(found, figures(runs, found, seeds, out_dir))
