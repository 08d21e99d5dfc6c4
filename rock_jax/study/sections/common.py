"""Helpers the sections share: group labels and NaN-safe summaries."""

from __future__ import annotations

import numpy as np

from rock_jax.analysis import report

GROUP_NAMES = {
  "rock": "rock",
  "high_kl_rare": "rare high-KL",
  "random": "random",
}


def median(x) -> float:
  """Median ignoring NaN; NaN (without a warning) when nothing is left."""
  x = _finite(x)
  return float(np.median(x)) if x.size else float("nan")


def mean(x) -> float:
  """Mean ignoring NaN; NaN (without a warning) when nothing is left."""
  x = _finite(x)
  return float(np.mean(x)) if x.size else float("nan")


def _finite(x) -> np.ndarray:
  x = np.asarray(x, np.float64)
  return x[~np.isnan(x)]


def figure(ctx, plot, name: str, *args, caption: str, **kwargs):
  """A report figure: `plot(<out_dir>/<name>, *args, **kwargs)`, captioned."""
  return report.Figure(
    path=plot(ctx.path(name), *args, **kwargs), caption=caption
  )
