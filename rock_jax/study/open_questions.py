"""The two questions the paper's study leaves open on the embedded task.

1. Where could a speed-up come from? (`speedup`: the learning-rate sweep of
   `rock_jax.study.speedup`, read by `rock_jax.study.speedup_report`.)
2. Do rocks look like the paper's next to rare, badly predicted content
   tokens? (`long_tail`: the paper's study on the long-tailed task variant,
   whose solutions carry a unit word drawn from a long tail of rare types.)

`run` does both under one root; docs/reproduction.md quotes its reports.
"""

from __future__ import annotations

import time

from rock_jax import storage
from rock_jax.analysis import report
from rock_jax.study import reproduce, speedup, speedup_report

# The long-tailed variant has ~400 observed types instead of ~37: wider
# comparison groups and knockout pool than the default embedded analysis.
LONG_TAIL_ANALYSIS = dict(high_kl_k=20, random_k=20, knockout_candidates=60)
LONG_TAIL_VARIANTS = reproduce.VARIANTS[:2]


def speedup_study(
  root: str,
  difficulty: str = "default",
  workers: int = 2,
  settings: speedup.Settings | None = None,
  **grid,
) -> dict[str, str]:
  """Trains (or reuses) the sweep under `root` and writes its report into
  `<root>/report`; returns the report's paths. `settings` (default: the
  sweep's on `difficulty`) and `grid` (`arms`, `learning_rates`, `seeds`)
  narrow it; tests use tiny ones."""
  start = time.time()
  root = storage.absolute(root)
  settings = settings or speedup.Settings(difficulty=difficulty)
  speedup.train_runs(root, settings, workers=workers, **grid)
  found, section = speedup_report.run(root, settings, **grid)
  doc = report.Report(
    title="Does freezing Rock Tokens train faster?",
    sections=(section,),
    preamble=(
      f"Embedded task ({settings.difficulty}), {settings.steps} steps per "
      f"run, rock set selected at step {settings.warmup_steps}, greedy "
      f"accuracy on {settings.eval_examples} test problems every "
      f"{settings.eval_every} steps. The {found['runs']} runs' wall times "
      f"add up to {found['run_wall_s'] / 60:.0f} min ({workers} trained side "
      f"by side); this invocation took {time.time() - start:.0f} s.",
    ),
  )
  return report.write(doc, storage.join(root, "report"))


def long_tail(root: str, seeds=(0,)) -> dict[str, str]:
  """The paper's study on the long-tailed variant; returns the report's
  paths (`<root>/report`)."""

  def widen(config):
    config.analysis.update(LONG_TAIL_ANALYSIS)

  result = reproduce.run(
    root,
    seeds,
    variants=LONG_TAIL_VARIANTS,
    analysis_overrides=widen,
    difficulty="long_tail",
  )
  return result["report"]


def run(root: str, workers: int = 2) -> list[dict[str, str]]:
  """Both studies: `<root>/long_tail` and `<root>/speedup`."""
  start = time.time()
  reports = [
    long_tail(storage.join(root, "long_tail")),
    speedup_study(storage.join(root, "speedup"), workers=workers),
  ]
  print(f"open questions: {time.time() - start:.0f} s", flush=True)
  return reports
