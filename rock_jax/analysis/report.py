"""One readable report from the analyses: Markdown and self-contained HTML.

The renderer knows nothing about which analyses exist. An analysis builds
`Section`s of prose, key numbers, `Table`s and `Figure`s (PNG files, e.g.
from `rock_jax.analysis.plots`), and `write` renders a `Report` of them into
a folder or a `gs://` URL.

Prose (titles, preamble, paragraphs, captions, column names, number keys) is
the author's: Markdown gets it verbatim, so it may use inline Markdown; HTML
gets it escaped, with `code spans` (single backticks) kept as code.

Data (table cells, number values) is escaped. Numbers go through
`format_number`. A text cell is shown as code when it contains a backtick,
`*`, `_`, `$`, a backslash, `<`, `&`, `[`, `]` or `~`, has leading or
trailing whitespace, or has a character that is not printable (newline,
tab, ...); whitespace and unprintable characters are shown through its
Python `repr` (with quotes, so an edge space is visible). Markdown has no
other way to stop tokens like `$x$`, `**` or `<s>` from rendering, and HTML
shows the same cells the same way, in monospace. `|` is escaped in Markdown
tables everywhere, code included.
"""

from __future__ import annotations

import base64
import dataclasses
import html
import math
import mimetypes
import numbers as numbers_lib
import os
import posixpath
import re
import urllib.parse

import numpy as np

from rock_jax import storage

FORMATS = ("markdown", "html")
_FILES = {"markdown": "report.md", "html": "report.html"}
_MARKUP = frozenset("`*_$\\<&[]~")


@dataclasses.dataclass(frozen=True, kw_only=True)
class Table:
  """A table; cells may be str, int, float, bool or None."""

  columns: tuple[str, ...]
  rows: tuple[tuple, ...]
  caption: str = ""

  def __post_init__(self):
    object.__setattr__(self, "columns", tuple(self.columns))
    object.__setattr__(self, "rows", tuple(tuple(r) for r in self.rows))
    for i, row in enumerate(self.rows):
      if len(row) != len(self.columns):
        raise ValueError(
          f"table row {i} has {len(row)} cells for "
          f"{len(self.columns)} columns: {row!r}"
        )


@dataclasses.dataclass(frozen=True, kw_only=True)
class Figure:
  """A PNG file, its path absolute (or a URL) or relative to the report
  folder."""

  path: str
  caption: str


@dataclasses.dataclass(frozen=True, kw_only=True)
class Section:
  """A titled part of the report; `numbers` are its key figures, shown first
  as "key: value"."""

  title: str
  paragraphs: tuple[str, ...] = ()
  tables: tuple[Table, ...] = ()
  figures: tuple[Figure, ...] = ()
  numbers: dict | None = None


@dataclasses.dataclass(frozen=True, kw_only=True)
class Report:
  """The whole report: a title, opening paragraphs and the sections."""

  title: str
  sections: tuple[Section, ...]
  preamble: tuple[str, ...] = ()


def format_number(x) -> str:
  """A cell value as text.

  Args:
    x: a number, bool, None or anything else.

  Returns:
    Floats with 3 significant digits below 1000 in magnitude (0.0123, 0.304,
    12.6) and as whole numbers with thousands separators above (85,120);
    ints as ints with separators; NaN "n/a"; None "—"; bools "yes"/"no";
    strings unchanged; anything else `str(x)`.
  """
  if x is None:
    return "—"
  if isinstance(x, str):
    return x
  # Before the int case: a bool is an int.
  if isinstance(x, (bool, np.bool_)):
    return "yes" if x else "no"
  if isinstance(x, numbers_lib.Integral):
    return f"{int(x):,}"
  if isinstance(x, numbers_lib.Real):
    x = float(x)
    if math.isnan(x):
      return "n/a"
    if x == 0:
      return "0"
    text = f"{x:.3g}"
    # 999.7 rounds up to "1e+03"; such values read better in full.
    if "e+" in text:
      return f"{x:,.0f}"
    return text
  return str(x)


def _is_markup(text: str) -> bool:
  return (
    text != text.strip()
    or not text.isprintable()
    or any(c in _MARKUP for c in text)
  )


def _shown(text: str) -> str:
  """A markup cell's text as displayed: its repr where whitespace matters."""
  if text != text.strip() or not text.isprintable():
    return repr(text)
  return text


def _md_code(text: str) -> str:
  """`text` as one Markdown code span, whatever backticks it contains."""
  fence = "`" * (max(map(len, re.findall("`+", text)), default=0) + 1)
  if text.startswith("`") or text.endswith("`"):
    text = f" {text} "
  return f"{fence}{text}{fence}"


def _md_cell(value) -> str:
  text = format_number(value)
  if _is_markup(text):
    text = _md_code(_shown(text))
  return text.replace("|", "\\|")


def _md_prose(text: str) -> str:
  """Prose on one line: a newline would end a table row or a list item."""
  return " ".join(text.split("\n"))


def _numeric(table: Table, column: int) -> bool:
  cells = [row[column] for row in table.rows if row[column] is not None]
  return bool(cells) and all(
    isinstance(c, numbers_lib.Real) and not isinstance(c, (bool, np.bool_))
    for c in cells
  )


def _is_absolute(path: str) -> bool:
  return storage.is_url(path) or os.path.isabs(path)


def _figure_file(fig: Figure, out_dir: str) -> str:
  """The figure's file or URL, checked to exist."""
  if _is_absolute(fig.path):
    path = fig.path
  else:
    path = storage.join(out_dir, fig.path)
  if not storage.isfile(path):
    raise FileNotFoundError(
      f"figure file {fig.path!r} (caption {fig.caption!r}) not found"
      + ("" if _is_absolute(fig.path) else f" in {out_dir!r}")
    )
  return path


def _link(path: str, out_dir: str) -> str:
  """`path` relative to the report folder where one can lead to the other;
  else as it is (a local figure beside a report in a bucket, another
  bucket's URL)."""
  if not storage.is_url(path) and not storage.is_url(out_dir):
    return os.path.relpath(path, out_dir).replace(os.sep, "/")
  if storage.is_url(path) and storage.is_url(out_dir):
    # Within one bucket, object names are /-separated paths.
    bucket, _, name = path.partition("://")[2].partition("/")
    root, _, folder = out_dir.partition("://")[2].partition("/")
    same = path.partition("://")[0] == out_dir.partition("://")[0]
    if same and bucket == root:
      return posixpath.relpath(f"/{name}", f"/{folder}")
  return path


def _md_table(table: Table) -> list[str]:
  lines = []
  if table.caption:
    lines += [f"*{_md_prose(table.caption)}*", ""]
  header = [_md_prose(c).replace("|", "\\|") for c in table.columns]
  rule = [
    "---:" if _numeric(table, i) else "---" for i in range(len(table.columns))
  ]
  lines.append("| " + " | ".join(header) + " |")
  lines.append("| " + " | ".join(rule) + " |")
  for row in table.rows:
    lines.append("| " + " | ".join(_md_cell(c) for c in row) + " |")
  return lines


def _md_figure(fig: Figure, out_dir: str) -> list[str]:
  link = _link(_figure_file(fig, out_dir), out_dir)
  if storage.is_url(link):
    # The scheme keeps its colon; in a path a colon would read as one.
    scheme, _, rest = link.partition("://")
    link = f"{scheme}://{urllib.parse.quote(rest)}"
  else:
    link = urllib.parse.quote(link)
  alt = re.sub(r"([\[\]\\])", r"\\\1", _md_prose(fig.caption))
  caption = _md_prose(fig.caption).replace("*", "\\*")
  return [f"![{alt}]({link})", "", f"*{caption}*"]


def to_markdown(report: Report, out_dir) -> str:
  """The report as GitHub Markdown.

  Args:
    report: what to render.
    out_dir: the folder the Markdown file will live in; image links are
      made relative to it.

  Returns:
    The Markdown text.

  Raises:
    FileNotFoundError: a figure file does not exist.
  """
  out_dir = os.fspath(out_dir)
  blocks = [[f"# {_md_prose(report.title)}"]]
  blocks += [[p] for p in report.preamble]
  for section in report.sections:
    blocks.append([f"## {_md_prose(section.title)}"])
    if section.numbers:
      blocks.append(
        [
          f"- **{_md_prose(str(key))}**: {_md_cell(value)}"
          for key, value in section.numbers.items()
        ]
      )
    blocks += [[p] for p in section.paragraphs]
    blocks += [_md_table(t) for t in section.tables]
    blocks += [_md_figure(f, out_dir) for f in section.figures]
  return "\n\n".join("\n".join(block) for block in blocks) + "\n"


_CSS = """
body {
  font-family: system-ui, -apple-system, "Segoe UI", Helvetica, Arial,
    sans-serif;
  line-height: 1.5; color: #1f2328; max-width: 1000px;
  margin: 2em auto; padding: 0 1em;
}
h1 { border-bottom: 2px solid #d0d7de; padding-bottom: 0.3em; }
h2 { border-bottom: 1px solid #d0d7de; padding-bottom: 0.2em;
  margin-top: 2em; }
nav ol { padding-left: 1.5em; }
table { border-collapse: collapse; margin: 1em 0; font-size: 0.92em; }
caption { caption-side: top; text-align: left; font-style: italic;
  padding-bottom: 0.3em; }
th, td { border: 1px solid #d0d7de; padding: 0.3em 0.7em;
  vertical-align: top; }
th { background: #eaeef2; text-align: left; }
tbody tr:nth-child(even) { background: #f6f8fa; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
code, td.tok { font-family: ui-monospace, SFMono-Regular, Menlo, Consolas,
  monospace; }
p code { background: #eff1f3; padding: 0 0.2em; border-radius: 3px; }
td.tok { white-space: pre; }
dl.numbers { display: grid; grid-template-columns: max-content auto;
  gap: 0.2em 1em; background: #f6f8fa; padding: 0.7em 1em;
  border-radius: 6px; }
dl.numbers dt { font-weight: 600; }
dl.numbers dd { margin: 0; }
figure { margin: 1.5em 0; }
figure img { max-width: 100%; height: auto; }
figcaption { font-style: italic; color: #57606a; }
"""


def _html_prose(text: str) -> str:
  """Escaped prose, its `code spans` (which escaping leaves alone) kept."""
  return re.sub(r"`([^`]+)`", r"<code>\1</code>", html.escape(text))


def _html_cell(value, tag: str = "td", numeric: bool = False) -> str:
  text = format_number(value)
  if _is_markup(text):
    return f'<{tag} class="tok">{html.escape(_shown(text))}</{tag}>'
  cls = ' class="num"' if numeric else ""
  return f"<{tag}{cls}>{html.escape(text)}</{tag}>"


def _html_table(table: Table) -> list[str]:
  numeric = [_numeric(table, i) for i in range(len(table.columns))]
  lines = ["<table>"]
  if table.caption:
    lines.append(f"<caption>{_html_prose(table.caption)}</caption>")
  header = "".join(f"<th>{_html_prose(c)}</th>" for c in table.columns)
  lines += [f"<thead><tr>{header}</tr></thead>", "<tbody>"]
  for row in table.rows:
    cells = "".join(
      _html_cell(c, numeric=n) for c, n in zip(row, numeric, strict=True)
    )
    lines.append(f"<tr>{cells}</tr>")
  lines += ["</tbody>", "</table>"]
  return lines


def _html_figure(fig: Figure, out_dir: str) -> list[str]:
  path = _figure_file(fig, out_dir)
  data = base64.b64encode(storage.read_bytes(path)).decode("ascii")
  mime = mimetypes.guess_type(path)[0] or "image/png"
  return [
    "<figure>",
    f'<img src="data:{mime};base64,{data}" alt="{html.escape(fig.caption)}">',
    f"<figcaption>{_html_prose(fig.caption)}</figcaption>",
    "</figure>",
  ]


def to_html(report: Report, out_dir) -> str:
  """The report as one self-contained HTML5 page (figures embedded).

  Args:
    report: what to render.
    out_dir: the folder relative figure paths are resolved against.

  Returns:
    The HTML text: inline CSS, every figure a base64 data URI, a table of
    contents linking to the sections.

  Raises:
    FileNotFoundError: a figure file does not exist.
  """
  out_dir = os.fspath(out_dir)
  title = html.escape(report.title)
  lines = [
    "<!DOCTYPE html>",
    '<html lang="en">',
    "<head>",
    '<meta charset="utf-8">',
    '<meta name="viewport" content="width=device-width, initial-scale=1">',
    f"<title>{title}</title>",
    f"<style>{_CSS}</style>",
    "</head>",
    "<body>",
    f"<h1>{_html_prose(report.title)}</h1>",
  ]
  lines += [f"<p>{_html_prose(p)}</p>" for p in report.preamble]
  if report.sections:
    lines += ["<nav>", "<h2>Contents</h2>", "<ol>"]
    lines += [
      f'<li><a href="#section-{i}">{_html_prose(s.title)}</a></li>'
      for i, s in enumerate(report.sections, 1)
    ]
    lines += ["</ol>", "</nav>"]
  for i, section in enumerate(report.sections, 1):
    lines += [
      f'<section id="section-{i}">',
      f"<h2>{_html_prose(section.title)}</h2>",
    ]
    if section.numbers:
      lines.append('<dl class="numbers">')
      for key, value in section.numbers.items():
        lines.append(f"<dt>{_html_prose(str(key))}</dt>")
        lines.append(_html_cell(value, tag="dd"))
      lines.append("</dl>")
    lines += [f"<p>{_html_prose(p)}</p>" for p in section.paragraphs]
    for table in section.tables:
      lines += _html_table(table)
    for fig in section.figures:
      lines += _html_figure(fig, out_dir)
    lines.append("</section>")
  lines += ["</body>", "</html>"]
  return "\n".join(lines) + "\n"


_RENDERERS = {"markdown": to_markdown, "html": to_html}


def write(report: Report, out_dir, formats=FORMATS) -> dict[str, str]:
  """Writes `report.md` and/or `report.html` into `out_dir`.

  Everything is rendered before anything is written, so a bad format or a
  missing figure leaves no partial report behind.

  Args:
    report: what to render.
    out_dir: the report folder (created if needed) or `gs://` URL; relative
      figure paths are relative to it.
    formats: some of `FORMATS`, ("markdown", "html").

  Returns:
    {format: path of the file written}.

  Raises:
    ValueError: an unknown format.
    FileNotFoundError: a figure file does not exist.
  """
  if isinstance(formats, str):
    formats = (formats,)
  for fmt in formats:
    if fmt not in _RENDERERS:
      raise ValueError(
        f"unknown report format {fmt!r}; allowed values: {FORMATS}"
      )
  out_dir = os.fspath(out_dir)
  texts = {fmt: _RENDERERS[fmt](report, out_dir) for fmt in formats}
  storage.makedirs(out_dir)
  paths = {}
  for fmt, text in texts.items():
    paths[fmt] = storage.join(out_dir, _FILES[fmt])
    storage.write_text(paths[fmt], text)
  return paths
