"""Persistence: does a type's KL fall between an early and a late checkpoint?

Offline (the paper's Fig. 3c/d): per-type mean KL at both checkpoints, per
comparison group, with the median change and a Wilcoxon signed-rank test.
The contexts are either each checkpoint's own greedy rollouts (the paper) or
the late checkpoint's sequences re-scored by the early one ("fixed", which
separates learning from context drift). Online: the tracker snapshots a run
saved (`snapshots.save`) give each type's EMA loss and stagnation over
the steps.
"""

from __future__ import annotations

import re

import numpy as np

from rock_jax import rock, storage
from rock_jax.analysis import census, stats
from rock_jax.rock import snapshots


def compare(
  early: census.TypeStats, late: census.TypeStats, groups: dict
) -> dict:
  """Per group: both checkpoints' per-type mean KL and the paired test.

  Types unseen at one of the checkpoints are dropped from the test.
  """
  out = {}
  for name, ids in groups.items():
    ids = np.asarray(ids, np.int64)
    before, after = early.mean_V[ids], late.mean_V[ids]
    out[name] = {
      "ids": ids,
      "early": before,
      "late": after,
      **stats.wilcoxon(before, after),
    }
  return out


def earliest_export(workdir: str) -> str:
  """The run's earliest intermediate export (a folder or URL under
  `workdir`), or '' if it wrote none."""
  found = []
  for path in storage.glob(workdir, "export_step_*"):
    match = re.fullmatch(r"export_step_(\d+)", storage.basename(path))
    if match and storage.isfile(storage.join(path, "config.json")):
      found.append((int(match.group(1)), path))
  return min(found)[1] if found else ""


def online(run_dir: str, groups: dict) -> dict:
  """Per-group medians of the tracker's mean loss and improvement over a run.

  Returns:
    {"steps": [...], <group>: {"median_loss": [...],
    "median_improvement": [...]}}; empty steps if the run saved none.
  """
  out = {"steps": []}
  for name in groups:
    out[name] = {"median_loss": [], "median_improvement": []}
  for path in snapshots.paths(run_dir):
    state = snapshots.load(path)
    out["steps"].append(int(state.step))
    mean = np.asarray(rock.mean_loss(state))
    gain = np.asarray(rock.improvement(state))
    seen = np.asarray(state.ema_count_V) > 0
    for name, ids in groups.items():
      ids = np.asarray(ids, np.int64)
      ids = ids[seen[ids]]
      out[name]["median_loss"].append(
        float(np.median(mean[ids])) if len(ids) else np.nan
      )
      out[name]["median_improvement"].append(
        float(np.median(gain[ids])) if len(ids) else np.nan
      )
  return out
