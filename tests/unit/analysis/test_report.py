"""Figures and the Markdown/HTML report of `rock_jax.analysis`."""

import base64
import html.parser
import math
import re
import urllib.parse

import numpy as np
import pytest
from matplotlib import image

from rock_jax import storage
from rock_jax.analysis import plots, report

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
TOKENS = ["\n", "$", "\\frac", " **", "the", "$x$", "<s>", "a|b"]
NAN = float("nan")


def assert_png(path):
  """`path` is a PNG that matplotlib reads back as a real picture."""
  with open(path, "rb") as f:
    data = f.read()
  assert data.startswith(PNG_SIGNATURE)
  assert len(data) > 5_000
  pixels = image.imread(path)
  assert pixels.ndim == 3 and min(pixels.shape[:2]) > 100
  assert pixels.std() > 0


def test_bars_tokens_highlight_nan(tmp_path):
  path = str(tmp_path / "deep" / "er" / "bars.png")
  values = [3.0, 1.5, NAN, 0.2, 7, 2, 1, 4]
  highlight = [True, False, False, True, False, False, False, False]
  out = plots.bars(
    path,
    TOKENS,
    np.array(values),
    title="mean loss",
    ylabel="nats",
    highlight=highlight,
    log=True,
  )
  assert out == path
  assert_png(path)


def test_bars_empty_and_mismatch(tmp_path):
  assert_png(plots.bars(tmp_path / "e.png", [], [], title="t", ylabel="y"))
  assert_png(
    plots.bars(tmp_path / "n.png", ["$"], [NAN], title="t", ylabel="y")
  )
  with pytest.raises(ValueError, match="2 labels but 1 values"):
    plots.bars(tmp_path / "x.png", ["a", "b"], [1], title="t", ylabel="y")


@pytest.mark.parametrize("log_x", [False, True])
def test_histogram(tmp_path, log_x):
  rng = np.random.default_rng(0)
  groups = {
    "rocks $": np.append(rng.lognormal(1, 0.5, 200), [NAN, 0.0]),
    "others": list(rng.lognormal(0, 0.5, 300)),
    "empty": [],
  }
  path = plots.histogram(
    tmp_path / "h.png", groups, title="loss", xlabel="nats", log_x=log_x
  )
  assert_png(path)


def test_histogram_empty_and_constant(tmp_path):
  assert_png(plots.histogram(tmp_path / "e.png", {}, title="t", xlabel="x"))
  assert_png(
    plots.histogram(
      tmp_path / "c.png", {"one": [2.0, 2.0]}, title="t", xlabel="x", log_x=True
    )
  )
  assert_png(
    plots.histogram(
      tmp_path / "m.png",
      {"a": [1, 2], "b": [NAN]},
      title="t",
      xlabel="x",
      median_lines=False,
    )
  )


def test_curves(tmp_path):
  x = np.arange(1, 11)
  y = np.sqrt(x).astype(float)
  y[3] = NAN
  path = plots.curves(
    tmp_path / "c.png",
    {"mean": (x, y), "other": (list(x), list(x * 0.1))},
    title="persistence",
    xlabel="step",
    ylabel="loss",
    bands={"mean": (x, y - 0.5, y + 0.5), "alone": (x, x * 0.0, x * 0.05)},
    hline=(1.0, "baseline"),
    log_x=True,
    markers=False,
  )
  assert_png(path)
  assert_png(
    plots.curves(
      tmp_path / "e.png",
      {"a": ([], [])},
      title="t",
      xlabel="x",
      ylabel="y",
      hline=(0, "zero"),
    )
  )
  with pytest.raises(ValueError, match="differ in length"):
    plots.curves(
      tmp_path / "x.png",
      {"a": ([1, 2], [1])},
      title="t",
      xlabel="x",
      ylabel="y",
    )


def test_scatter(tmp_path):
  rng = np.random.default_rng(1)
  before = rng.lognormal(0, 1, 100)
  after = before * rng.uniform(0.5, 1.5, 100)
  after[0] = NAN
  path = plots.scatter(
    tmp_path / "s.png",
    {"rocks": (before, after), "none": ([], [])},
    title="before vs after",
    xlabel="before",
    ylabel="after",
    diagonal=True,
    log=True,
  )
  assert_png(path)
  assert_png(
    plots.scatter(
      tmp_path / "e.png", {}, title="t", xlabel="x", ylabel="y", diagonal=True
    )
  )


def test_violin_or_box(tmp_path):
  rng = np.random.default_rng(2)
  groups = {
    "rocks": np.append(rng.normal(3, 1, 50), NAN),
    "others": rng.normal(1, 1, 500).tolist(),
    "empty": [],
  }
  assert_png(
    plots.violin_or_box(tmp_path / "b.png", groups, title="t", ylabel="y")
  )
  assert_png(
    plots.violin_or_box(
      tmp_path / "l.png", {"a": [0.0, 1, 10]}, title="t", ylabel="y", log=True
    )
  )
  assert_png(
    plots.violin_or_box(tmp_path / "e.png", {"a": []}, title="t", ylabel="y")
  )


@pytest.mark.parametrize(
  "x, text",
  [
    (0.0123, "0.0123"),
    (0.30412, "0.304"),
    (12.62, "12.6"),
    (-12.62, "-12.6"),
    (999.7, "1,000"),
    (85120.4, "85,120"),
    (85120, "85,120"),
    (7, "7"),
    (np.int64(42), "42"),
    (np.float32(0.5), "0.5"),
    (3.0, "3"),
    (0.0, "0"),
    (1.234e-6, "1.23e-06"),
    (NAN, "n/a"),
    (math.inf, "inf"),
    (None, "—"),
    (True, "yes"),
    (np.bool_(False), "no"),
    ("text", "text"),
  ],
)
def test_format_number(x, text):
  assert report.format_number(x) == text


@pytest.fixture
def sample(tmp_path):
  """A report with token tables and two figures, one path absolute, one
  relative to the report folder `tmp_path / "out"`."""
  out = tmp_path / "out"
  absolute = plots.bars(
    str(tmp_path / "figs" / "bars.png"),
    TOKENS,
    range(len(TOKENS)),
    title="t",
    ylabel="y",
  )
  plots.histogram(
    out / "img" / "h.png", {"a": [1, 2, 3]}, title="t", xlabel="x"
  )
  table = report.Table(
    columns=("token", "count", "R", "planted"),
    rows=tuple(
      (tok, 1000 * i, 0.5 / (i + 1), i % 2 == 0) for i, tok in enumerate(TOKENS)
    )
    + (("`code`", None, NAN, None),),
    caption="Top rocks",
  )
  sections = (
    report.Section(
      title="Census",
      paragraphs=("Rocks are <script>alert(1)</script> hard.",),
      tables=(table,),
      figures=(
        report.Figure(path=absolute, caption="Bars"),
        report.Figure(path="img/h.png", caption="Histogram"),
      ),
      numbers={"rocks": 12, "share": 0.0123, "top": "$"},
    ),
    report.Section(title="Empty section"),
  )
  rep = report.Report(
    title="Rock report", sections=sections, preamble=("Run `abc`.",)
  )
  return rep, str(out), {"Bars": absolute, "Histogram": str(out / "img/h.png")}


def table_lines(markdown):
  return [line for line in markdown.splitlines() if line.startswith("| ")]


def test_markdown(sample):
  rep, out, _ = sample
  md = report.to_markdown(rep, out)
  assert md.startswith("# Rock report\n")
  assert "## Census" in md and "## Empty section" in md
  rows = table_lines(md)
  assert len(rows) == 2 + len(TOKENS) + 1
  for row in rows:
    # Escaped pipes are inside cells; 4 columns need 5 unescaped ones.
    assert len(re.findall(r"(?<!\\)\|", row)) == 5, row
  assert rows[1] == "| --- | ---: | ---: | --- |"
  cells = [row.split(" | ")[0][2:] for row in rows[2:]]
  assert cells == [
    "`'\\n'`",
    "`$`",
    "`\\frac`",
    "`' **'`",
    "the",
    "`$x$`",
    "`<s>`",
    "a\\|b",
    "`` `code` ``",
  ]
  assert "| `$` | 1,000 | 0.25 | no |" in md
  assert "| `` `code` `` | — | n/a | — |" in md
  # Tokens like "$" appear only inside code spans.
  assert "$" not in re.sub(r"(`+).+?\1", "", md)
  assert "- **top**: `$`" in md and "- **share**: 0.0123" in md
  assert "![Bars](../figs/bars.png)\n\n*Bars*" in md
  assert "![Histogram](img/h.png)" in md
  assert out not in md


class Checker(html.parser.HTMLParser):
  """Collects image sources and ids; fails on unbalanced tags."""

  VOID = {"meta", "img", "br", "hr", "link"}

  def __init__(self):
    super().__init__()
    self.stack, self.images, self.ids, self.links = [], [], set(), []

  def handle_starttag(self, tag, attrs):
    attrs = dict(attrs)
    if tag == "img":
      self.images.append(attrs["src"])
    if "id" in attrs:
      self.ids.add(attrs["id"])
    if tag == "a":
      self.links.append(attrs["href"])
    if tag not in self.VOID:
      self.stack.append(tag)

  def handle_endtag(self, tag):
    assert self.stack and self.stack.pop() == tag, tag


def test_html(sample):
  rep, out, files = sample
  page = report.to_html(rep, out)
  checker = Checker()
  checker.feed(page)
  checker.close()
  assert checker.stack == []
  assert page.startswith("<!DOCTYPE html>")
  assert "<style>" in page and "max-width: 1000px" in page
  assert page.count("data:image/png;base64,") == 2
  for src, name in zip(checker.images, ["Bars", "Histogram"], strict=True):
    with open(files[name], "rb") as f:
      assert base64.b64decode(src.split(",", 1)[1]) == f.read()
  assert "<script>" not in page
  assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
  assert '<td class="tok">&#x27;\\n&#x27;</td>' in page
  assert '<td class="tok">&lt;s&gt;</td>' in page
  assert '<td class="num">1,000</td>' in page
  assert "Run <code>abc</code>." in page
  assert [link[1:] for link in checker.links] == ["section-1", "section-2"]
  assert {"section-1", "section-2"} <= checker.ids


def test_write(sample):
  rep, out, _ = sample
  paths = report.write(rep, out)
  assert set(paths) == {"markdown", "html"}
  with open(paths["markdown"], encoding="utf-8") as f:
    assert f.read() == report.to_markdown(rep, out)
  with open(paths["html"], encoding="utf-8") as f:
    assert f.read() == report.to_html(rep, out)
  assert report.write(rep, out, formats=("html",)) == {"html": paths["html"]}


def test_write_errors(sample, tmp_path):
  rep, out, _ = sample
  with pytest.raises(ValueError, match=r"'pdf'.*\('markdown', 'html'\)"):
    report.write(rep, out, formats=("markdown", "pdf"))
  missing = report.Report(
    title="t",
    sections=(
      report.Section(
        title="s",
        figures=(report.Figure(path="nope/gone.png", caption="Lost plot"),),
      ),
    ),
  )
  fresh = tmp_path / "fresh"
  with pytest.raises(FileNotFoundError, match=r"nope/gone\.png.*Lost plot"):
    report.write(missing, fresh)
  assert not fresh.exists()


def test_table_rejects_ragged_rows():
  with pytest.raises(ValueError, match="row 1 has 1 cells for 2 columns"):
    report.Table(columns=("a", "b"), rows=((1, 2), (3,)))


def test_bar_labels_show_edge_spaces_and_escapes():
  assert plots._token_label(" $") == "␣$"
  assert plots._token_label("$") == "$"
  assert plots._token_label(" **\n") == "␣**\\n"
  assert plots._token_label("  ") == "␣␣"
  assert plots._token_label(7) == "7"


def test_figures_and_report_in_a_gs_folder(gcs, tmp_path):
  out = storage.join(gcs, "out")
  kwargs = dict(title="t", ylabel="y", highlight=[True, False, False])
  url = plots.bars(
    storage.join(out, "bars.png"), TOKENS[:3], [3, 1, 2], **kwargs
  )
  local = plots.bars(
    str(tmp_path / "bars.png"), TOKENS[:3], [3, 1, 2], **kwargs
  )
  with open(local, "rb") as f:
    assert storage.read_bytes(url) == f.read()  # The same PNG, byte for byte.
  plots.histogram(
    storage.join(out, "img", "h.png"), {"a": [1, 2, 3]}, title="t", xlabel="x"
  )
  beside = plots.histogram(
    storage.join(gcs, "figs", "b.png"), {"b": [1, 2]}, title="t", xlabel="x"
  )
  figures = (
    report.Figure(path=url, caption="URL in the folder"),
    report.Figure(path="img/h.png", caption="relative"),
    report.Figure(path=beside, caption="URL beside the folder"),
    report.Figure(path=local, caption="local file"),
  )
  rep = report.Report(
    title="R", sections=(report.Section(title="S", figures=figures),)
  )
  paths = report.write(rep, out)
  assert paths == {
    "markdown": storage.join(out, "report.md"),
    "html": storage.join(out, "report.html"),
  }
  markdown = storage.read_text(paths["markdown"])
  assert re.findall(r"\]\(([^)]+)\)", markdown) == [
    "bars.png",
    "img/h.png",
    "../figs/b.png",
    urllib.parse.quote(local),  # No relative way from a bucket to a disk.
  ]
  page = storage.read_text(paths["html"])
  for path in (url, storage.join(out, "img", "h.png"), beside, local):
    data = base64.b64encode(storage.read_bytes(path)).decode()
    assert f"data:image/png;base64,{data}" in page
  lost = report.Report(
    title="R",
    sections=(
      report.Section(
        title="S", figures=(report.Figure(path="gone.png", caption="Lost"),)
      ),
    ),
  )
  # Another bucket's figure is linked by its URL, the scheme's colon kept.
  assert report._link("gs://other/a b.png", out) == "gs://other/a b.png"
  other = report.Report(
    title="R",
    sections=(
      report.Section(
        title="S", figures=(report.Figure(path=url, caption="elsewhere"),)
      ),
    ),
  )
  assert f"]({url})" in report.to_markdown(other, "gs://other/out")
  fresh = storage.join(gcs, "fresh")
  with pytest.raises(FileNotFoundError, match=rf"gone\.png.*Lost.*{fresh}"):
    report.write(lost, fresh)
  assert not storage.exists(fresh)
