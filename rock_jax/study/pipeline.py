"""`run(config)`: every configured analysis of one run, and the report.

Loads the teacher and the analysed student once, decodes the analysis corpus
once (greedy, teacher-forced KL), then runs the analyses named in
`config.analysis.analyses`. Each writes `<out>/<name>.json` and its figures
and returns a report `Section`; `report.write` assembles them. The run's
workdir and the output folder may be local paths or `gs://` URLs.
"""

from __future__ import annotations

import json
import time

import ml_collections

from rock_jax import metrics as metrics_lib
from rock_jax import storage
from rock_jax.analysis import report
from rock_jax.config import fields, validate
from rock_jax.study import context as context_lib
from rock_jax.study import sections


def run(
  config: ml_collections.ConfigDict,
  workdir: str | None = None,
  extra_sections=(),
) -> dict:
  """Runs the configured analyses of a run and writes the report.

  Args:
    config: from `configs/analyze_rock.py`.
    workdir: overrides `config.workdir` (the analysed run's folder).
    extra_sections: callables `out_dir -> Section`, run after the analyses
      (they may read their JSON), appended to the report.

  Returns:
    {"out_dir", "report": {format: path}, analysis name: its JSON path,
    "seconds": {analysis name: wall seconds}}.
  """
  names = validate.analyses(config)
  workdir = storage.absolute(workdir) if workdir else fields.workdir(config)
  out_dir = storage.absolute(
    config.analysis.out_dir or storage.join(workdir, "analysis")
  )
  # A bad bucket or missing write permission shows before models load.
  storage.check_writable(out_dir, "analysis.out_dir")
  if names == ["freeze"]:
    ctx = context_lib.Context(config, out_dir, workdir)
  else:
    ctx = context_lib.open(config, workdir, out_dir)
  storage.makedirs(out_dir)
  print(f"analysis of {workdir} -> {out_dir}", flush=True)
  if ctx.session is not None:
    start = time.time()
    ctx = context_lib.with_census(ctx)
    print(f"corpus: {time.time() - start:.0f} s", flush=True)
  result = {"out_dir": out_dir, "seconds": {}}
  parts = []
  for name in names:
    start = time.time()
    numbers, section = sections.SECTIONS[name](ctx)
    path = ctx.path(f"{name}.json")
    metrics_lib.write_json(path, numbers)
    parts.append(section)
    result[name] = path
    result["seconds"][name] = time.time() - start
    print(f"{name}: {result['seconds'][name]:.0f} s -> {path}", flush=True)
  parts.extend(make(out_dir) for make in extra_sections)
  doc = report.Report(
    title=f"Rock-Token analysis of {storage.basename(workdir)}",
    preamble=sections.preamble(ctx),
    sections=tuple(parts),
  )
  formats = tuple(fields.parse_list(config.analysis.formats))
  result["report"] = report.write(doc, out_dir, formats)
  resolved = json.loads(config.to_json_best_effort())
  storage.write_text(
    ctx.path("analysis_config.json"), json.dumps(resolved, indent=2)
  )
  return result
