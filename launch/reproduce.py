"""The paper's Rock-Token study on the embedded task, on one CPU machine.

  python launch/reproduce.py                  # ./workdir/reproduce
  python launch/reproduce.py --root=/tmp/rep --seeds=0,1,2
  python launch/reproduce.py --variants=uniform,guarded_freeze
  python launch/reproduce.py --root=gs://my-bucket/reproduce
  # The same study under another XLA CPU code path (other numerics):
  python launch/reproduce.py --root=workdir/reproduce_sse42 --isa=SSE4_2
  # Do their conclusions agree? (writes <root>/comparison/report.md)
  python launch/reproduce.py \
      --compare=default=workdir/reproduce,SSE4_2=workdir/reproduce_sse42

  # The same study on the long-tailed task variant:
  python launch/reproduce.py --root=workdir/long_tail --difficulty=long_tail
  # Does freezing rocks train faster? (a learning-rate sweep)
  python launch/reproduce.py --study=speedup --root=workdir/speedup
  # Both follow-ups docs/reproduction.md quotes, under one root:
  python launch/reproduce.py --study=open_questions --root=workdir/open

Trains uniform OPD, the paper's Rock-Freeze, the default guarded Rock-Freeze
(and its fallback without reference answers), soft λ = 0.5 and a
frequency-matched random freeze over the seeds (`rock_jax.study.reproduce.
VARIANTS`; teacher and student are trained once and cached),
then runs every analysis on the first uniform run and writes
<root>/report/report.md and report.html; the runs live in <root>/runs/. The
root may be a local folder or a gs:// URL. Finished runs (with a
summary.json) are reused, so a re-run resumes. All the work is in
`rock_jax.study.reproduce.run`, `rock_jax.study.compare.compare` and
`rock_jax.study.open_questions`.
"""

import os

from absl import app, flags

_ROOT = flags.DEFINE_string(
  "root", "workdir/reproduce", "Output folder or gs:// URL."
)
_SEEDS = flags.DEFINE_list(
  "seeds",
  ["0", "1", "2", "3", "4"],
  "Training seeds (the speed-up sweep's own default: 0, 1, 2).",
)
_VARIANTS = flags.DEFINE_list(
  "variants",
  [],
  "Variants of the paper's study to train, by name (uniform, rock_freeze, "
  "guarded_freeze, loss_guarded_freeze, soft_rock, random_freeze); empty: "
  "all. The analyses read the first uniform run, so the list must hold "
  "uniform.",
)
_COMPILE_CACHE = flags.DEFINE_string(
  "compile_cache",
  "auto",
  "JAX's persistent compilation cache: auto (under $ROCK_JAX_CACHE or "
  "~/.cache/rock_jax, keyed on the code), a folder or gs:// URL, or off.",
)
_ISA = flags.DEFINE_enum(
  "isa",
  "",
  ["", "SSE4_2", "AVX", "AVX2", "AVX512"],
  "Caps the instruction set XLA's CPU backend compiles for "
  "(--xla_cpu_max_isa); empty: the host's best. Another cap gives other "
  "numerics: a cross-machine check on one machine. Use its own --root.",
)
_STUDY = flags.DEFINE_enum(
  "study",
  "paper",
  ["paper", "speedup", "open_questions"],
  "paper: the paper's study (above). speedup: the learning-rate sweep of "
  "uniform OPD, Rock-Freeze and its variants (rock_jax.study.speedup) into "
  "<root>/report. open_questions: both questions docs/reproduction.md "
  "leaves open: the paper's study on the long-tailed task variant (seed 0) "
  "in <root>/long_tail and the sweep in <root>/speedup.",
)
_DIFFICULTY = flags.DEFINE_string(
  "difficulty",
  "default",
  "embedded.difficulty of every run, e.g. long_tail (rare content tokens).",
)
_WORKERS = flags.DEFINE_integer(
  "workers", 2, "Training processes side by side in the speed-up sweep."
)
_COMPARE = flags.DEFINE_list(
  "compare",
  [],
  "label=root pairs of finished reproductions: compare their conclusions "
  "instead of running, into <root>/comparison.",
)


def _roots(items) -> dict[str, str]:
  roots = {}
  for item in items:
    label, sep, root = item.partition("=")
    if not sep or not label or not root:
      raise app.UsageError(
        f"--compare item {item!r}: expected label=root, e.g. "
        "default=workdir/reproduce"
      )
    roots[label] = root
  if len(roots) < 2:
    raise app.UsageError(
      f"--compare={','.join(items)}: expected at least two label=root pairs"
    )
  return roots


def _variants(variants):
  if not _VARIANTS.value:
    return variants
  names = [v[0] for v in variants]
  unknown = sorted(set(_VARIANTS.value) - set(names))
  if unknown or "uniform" not in _VARIANTS.value:
    raise app.UsageError(
      f"--variants={','.join(_VARIANTS.value)}: expected names from "
      f"{names}, uniform among them (the analyses read its first run)"
    )
  return tuple(v for v in variants if v[0] in _VARIANTS.value)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  try:
    seeds = [int(s) for s in _SEEDS.value]
  except ValueError:
    raise app.UsageError(
      f"--seeds={','.join(_SEEDS.value)}: expected integers"
    ) from None
  roots = _roots(_COMPARE.value) if _COMPARE.value else None
  if _ISA.value:
    # Read when JAX starts its CPU backend, i.e. before the imports below.
    flags_now = os.environ.get("XLA_FLAGS", "").split()
    os.environ["XLA_FLAGS"] = " ".join(
      [*flags_now, f"--xla_cpu_max_isa={_ISA.value}"]
    )
  from rock_jax.config import runtime

  runtime.setup(compile_cache=_COMPILE_CACHE.value)
  from rock_jax import storage
  from rock_jax.data import embedded_task
  from rock_jax.study import compare, open_questions, reproduce

  if _DIFFICULTY.value not in embedded_task.DIFFICULTIES:
    raise app.UsageError(
      f"--difficulty={_DIFFICULTY.value}: expected one of "
      f"{sorted(embedded_task.DIFFICULTIES)}"
    )
  if roots:
    out = storage.join(_ROOT.value, "comparison")
    result = compare.compare(roots, out)
    for variant, same in result["agree"].items():
      print(f"{variant}: {'agree' if same else 'DISAGREE'}", flush=True)
    reports = [result["report"]]
  elif _STUDY.value == "paper":
    result = reproduce.run(
      _ROOT.value,
      seeds,
      variants=_variants(reproduce.VARIANTS),
      difficulty=_DIFFICULTY.value,
    )
    reports = [result["report"]]
  elif _STUDY.value == "speedup":
    # The sweep's own seeds (0, 1, 2) unless --seeds is given.
    grid = {"seeds": tuple(seeds)} if _SEEDS.present else {}
    reports = [
      open_questions.speedup_study(
        _ROOT.value, _DIFFICULTY.value, _WORKERS.value, **grid
      )
    ]
  else:
    reports = open_questions.run(_ROOT.value, _WORKERS.value)
  for paths in reports:
    for fmt, path in paths.items():
      print(f"{fmt} report: {path}", flush=True)


if __name__ == "__main__":
  app.run(main)
