"""PNG figures for the analyses: bars, histograms, curves, scatters, boxes.

Every function draws on its own `matplotlib.figure.Figure` with an Agg canvas
rather than through pyplot: no global figure registry to leak into or close,
no interactive backend to pick, and plotting is safe from several threads.
Each writes one PNG (dpi 120, tight bounding box) to `path` (a file, created
with its parent folders, or a `gs://` URL) and returns `path`.

Inputs may be lists or NumPy arrays. Non-finite values are dropped (and, on
a log axis, non-positive ones too), so a diagnostic with a few NaNs still
plots; with nothing left the figure says "no data" instead of raising.
"""

from __future__ import annotations

import contextlib
import os

import numpy as np
from matplotlib import figure, ticker
from matplotlib.backends.backend_agg import FigureCanvasAgg

from rock_jax import storage
from rock_jax.analysis.report import format_number

_DPI = 120
_SIZE = (7.0, 4.5)


@contextlib.contextmanager
def _axes(path, *, title, xlabel, ylabel, size=_SIZE):
  fig = figure.Figure(figsize=size)
  FigureCanvasAgg(fig)
  ax = fig.add_subplot()
  ax.set_title(title)
  ax.set_xlabel(xlabel)
  ax.set_ylabel(ylabel)
  yield ax
  # Into a buffer, so a URL takes it too; a buffer has no name, so the
  # format is the one a file name would have given.
  kind = os.path.splitext(os.fspath(path))[1][1:].lower() or "png"
  with storage.open_for_write(path) as f:
    fig.savefig(f, format=kind, dpi=_DPI, bbox_inches="tight")


def _no_data(ax):
  ax.text(
    0.5,
    0.5,
    "no data",
    transform=ax.transAxes,
    ha="center",
    va="center",
    color="gray",
    fontsize=14,
  )


def _legend(ax):
  """A legend only where it tells series apart."""
  if len(ax.get_legend_handles_labels()[1]) > 1:
    ax.legend()


def _log_x(ax):
  """Log x axis labelled with plain numbers; the default 2x10^0, 3x10^0, ...
  on minor ticks run into each other on a horizontal axis."""
  ax.set_xscale("log")
  lo, hi = ax.get_xlim()
  plain = ticker.FuncFormatter(lambda v, _: f"{v:g}")
  ax.xaxis.set_major_formatter(plain)
  if hi < 10 * lo:
    ax.xaxis.set_minor_formatter(plain)
  elif hi < 1000 * lo:
    ax.xaxis.set_minor_locator(ticker.LogLocator(subs=(2, 5)))
    ax.xaxis.set_minor_formatter(plain)
  else:
    ax.xaxis.set_minor_formatter(ticker.NullFormatter())


def _values(values, *, positive=False) -> np.ndarray:
  """`values` as a flat float array of its plottable entries."""
  a = np.asarray(values, dtype=float).ravel()
  keep = np.isfinite(a)
  if positive:
    keep &= a > 0
  return a[keep]


def _columns(*columns, positive=()) -> list[np.ndarray]:
  """Equal-length columns restricted to rows plottable in all of them;
  `positive` names the column indices that sit on a log axis."""
  arrays = [np.asarray(c, dtype=float).ravel() for c in columns]
  sizes = {a.size for a in arrays}
  if len(sizes) > 1:
    raise ValueError(f"columns differ in length: {[a.size for a in arrays]}")
  keep = np.ones(arrays[0].shape, dtype=bool)
  for i, a in enumerate(arrays):
    keep &= np.isfinite(a)
    if i in positive:
      keep &= a > 0
  return [a[keep] for a in arrays]


def _token_label(label) -> str:
  """A token as its repr without quotes, so whitespace stays visible; an
  edge space (as in BPE's ' $' next to '$') shows as '␣'."""
  if not isinstance(label, str):
    return str(label)
  text = repr(label)[1:-1]
  core = text.strip(" ")
  if not core:
    return "␣" * len(text)
  start = text.index(core)
  return "␣" * start + core + "␣" * (len(text) - start - len(core))


def bars(
  path,
  labels,
  values,
  *,
  title,
  ylabel,
  highlight=None,
  log=False,
  legend=("other", "highlighted"),
):
  """Vertical bar chart of one value per token.

  Args:
    path: PNG file to write.
    labels: token texts, shown as their `repr` without quotes (a newline reads
      `\\n`) and never parsed as mathtext, so `$` and backslashes are literal.
    values: one height per label; bars with a non-finite value are dropped.
    title: figure title.
    ylabel: y-axis label.
    highlight: optional bools, one per label; those bars get another colour
      and a legend entry (e.g. planted ground-truth rocks).
    log: logarithmic y axis.
    legend: the legend names of the plain and the highlighted bars.

  Returns:
    `path`.
  """
  labels = [_token_label(label) for label in labels]
  values = np.asarray(values, dtype=float).ravel()
  if len(labels) != values.size:
    raise ValueError(f"{len(labels)} labels but {values.size} values")
  marked = np.zeros(values.size, dtype=bool)
  if highlight is not None:
    marked = np.asarray(list(highlight), dtype=bool).ravel()
    if marked.size != values.size:
      raise ValueError(f"{marked.size} highlight flags but {values.size} bars")
  keep = np.isfinite(values)
  labels = [label for label, k in zip(labels, keep, strict=True) if k]
  values, marked = values[keep], marked[keep]
  width = min(30.0, max(_SIZE[0], 0.3 * len(labels) + 1.5))
  with _axes(
    path, title=title, xlabel="token", ylabel=ylabel, size=(width, _SIZE[1])
  ) as ax:
    if not labels:
      _no_data(ax)
    else:
      x = np.arange(len(labels))
      for mask, color, name in (
        (~marked, "C0", legend[0]),
        (marked, "C3", legend[1]),
      ):
        if mask.any():
          ax.bar(x[mask], values[mask], color=color, label=name)
      ax.set_xticks(
        x,
        labels,
        rotation=60,
        ha="right",
        rotation_mode="anchor",
        fontsize=8,
        family="monospace",
        parse_math=False,
        usetex=False,
      )
      ax.set_xlim(-0.6, len(labels) - 0.4)
      if log:
        ax.set_yscale("log")
      _legend(ax)
  return path


def histogram(
  path, groups, *, title, xlabel, bins=30, log_x=False, median_lines=True
):
  """Overlaid histograms, one per group, on shared bins.

  Args:
    path: PNG file to write.
    groups: name -> values; groups with no plottable value are skipped.
    title: figure title.
    xlabel: x-axis label.
    bins: number of bins spanning all groups together.
    log_x: log-spaced bins over the positive values, on a log x axis.
    median_lines: a dashed line at each group's median, its value given in
      the legend as "name (median=…)".

  Returns:
    `path`.
  """
  data = {}
  for name, values in groups.items():
    values = _values(values, positive=log_x)
    if values.size:
      data[name] = values
  with _axes(path, title=title, xlabel=xlabel, ylabel="count") as ax:
    if not data:
      _no_data(ax)
    else:
      every = np.concatenate(list(data.values()))
      lo, hi = every.min(), every.max()
      if log_x:
        if lo == hi:
          lo, hi = lo / 2, hi * 2
        edges = np.geomspace(lo, hi, bins + 1)
      else:
        edges = np.histogram_bin_edges(every, bins=bins)
      handles, names = [], []
      for i, (name, values) in enumerate(data.items()):
        color = f"C{i % 10}"
        _, _, patches = ax.hist(
          values, bins=edges, alpha=0.5, histtype="stepfilled", color=color
        )
        if median_lines:
          median = float(np.median(values))
          line = ax.axvline(median, color=color, linestyle="--", linewidth=1.5)
          handles.append((patches[0], line))
          names.append(f"{name} (median={format_number(median)})")
        else:
          handles.append(patches[0])
          names.append(name)
      if log_x:
        _log_x(ax)
      # With median lines even one group needs the legend for the value.
      if median_lines or len(data) > 1:
        ax.legend(handles, names)
  return path


def curves(
  path,
  series,
  *,
  title,
  xlabel,
  ylabel,
  bands=None,
  hline=None,
  log_x=False,
  markers=True,
):
  """Line plot, one line per series, with optional shaded bands.

  Args:
    path: PNG file to write.
    series: name -> (x, y).
    title: figure title.
    xlabel: x-axis label.
    ylabel: y-axis label.
    bands: name -> (x, low, high) shaded between low and high; a band named
      like a series takes that series' colour and shares its legend entry.
    hline: optional (y, label) horizontal reference line.
    log_x: logarithmic x axis (points with x <= 0 are dropped).
    markers: mark each point.

  Returns:
    `path`.
  """
  positive = (0,) if log_x else ()
  colors = {}
  drawn = False
  with _axes(path, title=title, xlabel=xlabel, ylabel=ylabel) as ax:
    for name, (x, y) in series.items():
      color = colors[name] = f"C{len(colors) % 10}"
      x, y = _columns(x, y, positive=positive)
      if x.size:
        ax.plot(
          x,
          y,
          color=color,
          marker="o" if markers else None,
          markersize=3,
          label=name,
        )
        drawn = True
    for name, (x, low, high) in (bands or {}).items():
      own = name in colors
      color = colors[name] if own else f"C{len(colors) % 10}"
      colors.setdefault(name, color)
      x, low, high = _columns(x, low, high, positive=positive)
      if x.size:
        ax.fill_between(
          x,
          low,
          high,
          color=color,
          alpha=0.2,
          linewidth=0,
          label=None if own else name,
        )
        drawn = True
    if not drawn:
      _no_data(ax)
    else:
      if hline is not None:
        y, label = hline
        ax.axhline(y, color="gray", linestyle=":", linewidth=1.2, label=label)
      if log_x:
        _log_x(ax)
      _legend(ax)
  return path


def scatter(path, groups, *, title, xlabel, ylabel, diagonal=False, log=False):
  """Scatter plot, one colour per group.

  Args:
    path: PNG file to write.
    groups: name -> (x, y).
    title: figure title.
    xlabel: x-axis label.
    ylabel: y-axis label.
    diagonal: draw y = x across the data range (before/after comparisons).
    log: logarithmic x and y axes (non-positive points are dropped).

  Returns:
    `path`.
  """
  positive = (0, 1) if log else ()
  points = []
  with _axes(path, title=title, xlabel=xlabel, ylabel=ylabel) as ax:
    for i, (name, (x, y)) in enumerate(groups.items()):
      x, y = _columns(x, y, positive=positive)
      if x.size:
        ax.scatter(x, y, s=12, alpha=0.6, color=f"C{i % 10}", label=name)
        points += [x, y]
    if not points:
      _no_data(ax)
    else:
      if diagonal:
        every = np.concatenate(points)
        span = [every.min(), every.max()]
        ax.plot(
          span, span, color="gray", linestyle="--", linewidth=1, label="y = x"
        )
      if log:
        _log_x(ax)
        ax.set_yscale("log")
      _legend(ax)
  return path


def violin_or_box(path, groups, *, title, ylabel, log=False):
  """Box plot per group (median line, quartile box, whiskers, outliers).

  Groups are told apart by their tick labels, "name (n=…)", which also give
  each group's size; an empty group keeps its tick with n=0.

  Args:
    path: PNG file to write.
    groups: name -> values.
    title: figure title.
    ylabel: y-axis label.
    log: logarithmic y axis (non-positive values are dropped).

  Returns:
    `path`.
  """
  data = {name: _values(v, positive=log) for name, v in groups.items()}
  with _axes(path, title=title, xlabel="group", ylabel=ylabel) as ax:
    if not any(v.size for v in data.values()):
      _no_data(ax)
    else:
      ax.boxplot(
        list(data.values()),
        tick_labels=[f"{name}\n(n={v.size:,})" for name, v in data.items()],
        medianprops=dict(color="C3", linewidth=1.5),
      )
      if log:
        ax.set_yscale("log")
  return path
