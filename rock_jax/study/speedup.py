"""Does freezing rocks train faster? A learning-rate sweep on the embedded task.

The paper reports Rock-Freeze reaching uniform OPD's accuracy 1.7× faster in
wall clock (v2: 1.4×). Freezing skips no computation, so a speed-up can only
come from the optimisation: the rocks' share of the gradient under global-norm
clipping, the normaliser (the reference code's Σwℓ/Σw per sequence scales the
remaining tokens up), or shorter rollouts. Each arm (`ARMS`) is therefore
trained at every learning rate of `LEARNING_RATES` over the seeds and compared
at its own best rate: the one that reaches the target accuracy in the fewest
steps. `rock_jax.study.speedup_report` reads the runs.

Runs are short (`Settings`: 200 steps, the rock set selected at step 50,
graded every 20 steps) and trained by `workers` processes side by side;
finished runs (with a summary.json) are reused, so a sweep resumes.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import multiprocessing
import time

import jax
import ml_collections

from rock_jax import storage
from rock_jax.config import presets
from rock_jax.train import session


@dataclasses.dataclass(frozen=True)
class Arm:
  """One training recipe of the sweep.

  Attributes:
    name: the runs' name prefix.
    label: how the report names it.
    lam: weight of the rock set (1: uniform OPD, 0: Rock-Freeze).
    normalize: `loss.normalize` ("tokens": Σwℓ/N; "sequence_weights": the
      reference code's per-sequence Σwℓ/Σw).
    clip_norm: `optim.clip_norm` (0: no clipping).
    protect: `rock.protect` ("answers": the rock-aware guard that never
      freezes a token of the reference answers).
  """

  name: str
  label: str
  lam: float
  normalize: str = "tokens"
  clip_norm: float = 1.0
  protect: str = ""


BASELINE = "uniform"
ARMS = (
  Arm(BASELINE, "uniform OPD", 1.0),
  Arm("uniform_noclip", "uniform OPD, no clipping", 1.0, clip_norm=0.0),
  Arm("freeze", "Rock-Freeze", 0.0),
  Arm(
    "freeze_seqw",
    "Rock-Freeze, Σwℓ/Σw per sequence",
    0.0,
    normalize="sequence_weights",
  ),
  Arm("freeze_noclip", "Rock-Freeze, no clipping", 0.0, clip_norm=0.0),
  Arm("guarded_freeze", "answer-guarded Rock-Freeze", 0.0, protect="answers"),
)
LEARNING_RATES = (2.5e-4, 5e-4, 1e-3, 2e-3, 4e-3)
SEEDS = (0, 1, 2)


@dataclasses.dataclass(frozen=True)
class Settings:
  """What every run of the sweep shares.

  Attributes:
    steps: updates per run.
    warmup_steps: uniform updates before the rock set is selected.
    eval_every, eval_examples: the graded greedy evaluations that place the
      target crossing.
    difficulty: the embedded task's `embedded.difficulty`.
    overrides: more config fields, flattened (`{"train.batch_size": 8}`),
      applied last; a tuple of pairs, so the settings stay hashable.
  """

  steps: int = 200
  warmup_steps: int = 50
  eval_every: int = 20
  eval_examples: int = 128
  difficulty: str = "default"
  overrides: tuple[tuple[str, object], ...] = ()


def run_name(arm: Arm, lr: float, seed: int) -> str:
  return f"{arm.name}_lr{lr:g}_seed{seed}"


def run_config(
  arm: Arm, lr: float, seed: int, root: str, settings: Settings
) -> ml_collections.ConfigDict:
  """The training config of one run of the sweep."""
  c = presets.base("", run_name(arm, lr, seed))
  c.seed = seed
  c.workdir = storage.join(root, "runs", c.name)
  presets.embedded_difficulty(c, settings.difficulty)
  presets.paper_freeze(c)
  c.rock.lam = arm.lam
  c.rock.protect = arm.protect
  c.rock.warmup_steps = settings.warmup_steps
  c.loss.normalize = arm.normalize
  c.optim.clip_norm = arm.clip_norm
  c.optim.learning_rate = lr
  t = c.train
  t.steps = settings.steps
  t.eval_every = settings.eval_every
  t.eval_examples = settings.eval_examples
  t.checkpoint_every = settings.steps
  t.export = False
  t.log_samples = 0
  c.update_from_flattened_dict(dict(settings.overrides))
  return c


def grid(arms=ARMS, learning_rates=LEARNING_RATES, seeds=SEEDS):
  """Every (arm, lr, seed), arms innermost: runs that share a seed and a rate
  train side by side, so their seconds see the same machine load."""
  return [(a, lr, s) for s in seeds for lr in learning_rates for a in arms]


def _done(workdir: str) -> bool:
  return storage.isfile(storage.join(workdir, "summary.json"))


def _start_worker(root: str) -> None:
  """A worker process's settings, once before its first run."""
  from rock_jax.config import runtime  # noqa: PLC0415

  runtime.setup()
  # The sampler's and the evaluator's programs do not depend on the arm or
  # the rate: compiled once for the whole sweep.
  jax.config.update("jax_compilation_cache_dir", storage.join(root, "xla"))
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)


def _train(arm, lr, seed, root, settings) -> float:
  """Trains one run; returns its seconds."""
  from rock_jax import train  # noqa: PLC0415 (each worker imports JAX)

  start = time.time()
  train.run(run_config(arm, lr, seed, root, settings))
  return time.time() - start


def train_runs(
  root: str,
  settings: Settings = Settings(),
  *,
  arms=ARMS,
  learning_rates=LEARNING_RATES,
  seeds=SEEDS,
  workers: int = 2,
) -> list[str]:
  """Trains (or reuses) every run of the grid; returns their workdirs."""
  todo, workdirs = [], []
  for arm, lr, seed in grid(arms, learning_rates, seeds):
    c = run_config(arm, lr, seed, root, settings)
    workdirs.append(c.workdir)
    if _done(c.workdir):
      print(f"{c.name}: done already, reused", flush=True)
    else:
      todo.append((arm, lr, seed))
  if not todo:
    return workdirs
  # Before the workers start, so that they only read the cache.
  session.prepare(run_config(*todo[0], root, settings))
  if workers == 1:
    for job in todo:
      seconds = _train(*job, root, settings)
      print(f"{run_name(*job)}: {seconds:.0f} s", flush=True)
    return workdirs
  # JAX is not fork-safe: workers start fresh interpreters.
  context = multiprocessing.get_context("spawn")
  with concurrent.futures.ProcessPoolExecutor(
    workers, context, initializer=_start_worker, initargs=(root,)
  ) as pool:
    futures = {pool.submit(_train, *job, root, settings): job for job in todo}
    for future in concurrent.futures.as_completed(futures):
      print(
        f"{run_name(*futures[future])}: {future.result():.0f} s", flush=True
      )
  return workdirs
