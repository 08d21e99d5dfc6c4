"""The default command on every XLA CPU code path of one machine.

XLA's CPU backend compiles for the host's instruction set, capped by
`--xla_cpu_max_isa`, so each cap is another numeric path: what another
user's CPU would compute. `run` first probes each path (a few supervised
steps of the embedded student, in a process of its own) to tell which caps
change the numerics here (a cap above the host's set is the host's path),
then runs the default command cold under each distinct path, each with its
own cache and work directory, and reads back what it kept: both models'
`sft.json` records and the run's `summary.json`.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import subprocess
import sys
import time

import jax
import numpy as np

from rock_jax import metrics
from rock_jax.data import builders, embedded_builder, embedded_task
from rock_jax.embedded import band as sft_band
from rock_jax.embedded import sft as embedded_sft
from rock_jax.train import session

# The caps `--xla_cpu_max_isa` takes, and the host's own best ("host").
ISAS = ("SSE4_2", "AVX", "AVX2", "AVX512", "host")
# Supervised steps the probe takes before reading the loss: by then the
# paths' losses differ in float32 (at step 20 AVX and AVX2 still agree
# there, though their weights do not).
PROBE_STEPS = 100
_REPO = os.path.dirname(os.path.dirname(os.path.dirname(__file__)))


def environment(isa: str) -> dict[str, str]:
  """This process's environment with XLA capped at `isa` ("host": none)."""
  env = dict(os.environ)
  flags = [
    f
    for f in env.get("XLA_FLAGS", "").split()
    if not f.startswith("--xla_cpu_max_isa")
  ]
  if isa != "host":
    flags.append(f"--xla_cpu_max_isa={isa}")
  env["XLA_FLAGS"] = " ".join(flags)
  env["JAX_PLATFORMS"] = "cpu"
  return env


def probe(config, data_root: str, steps: int = PROBE_STEPS) -> dict:
  """The embedded student's recipe for `steps` supervised steps.

  Run in the process whose numerics are probed. Returns the loss at the
  last step (exact, as a float) and a digest of the parameters' bytes:
  two paths with equal digests computed the same bits.
  """
  e = config.embedded
  dataset_dir = builders.prepare(
    "embedded",
    data_root,
    difficulty=e.difficulty,
    train_size=e.train_size,
    test_size=e.test_size,
  )
  loss, params = embedded_sft.first_steps(
    session.sft_spec(config, "student"),
    dataset_dir,
    embedded_builder.load_tokenizer(dataset_dir),
    "student",
    embedded_task.get_difficulty(e.difficulty).styles,
    steps,
  )
  digest = hashlib.sha256()
  for leaf in jax.tree.leaves(params):
    digest.update(np.asarray(leaf).tobytes())
  return {"loss": loss, "digest": digest.hexdigest()[:16]}


def _flags(config_file: str, overrides) -> list[str]:
  return [f"--config={config_file}"] + [
    f"--config.{key}={value}" for key, value in overrides.items()
  ]


_PROBE = """
import json, sys
from absl import flags
from ml_collections import config_flags
config = config_flags.DEFINE_config_file("config")
data_root = flags.DEFINE_string("data_root", None, "")
steps = flags.DEFINE_integer("steps", None, "")
flags.FLAGS(sys.argv)
from rock_jax.study import isa_paths
print(json.dumps(isa_paths.probe(config.value, data_root.value, steps.value)))
"""


def _probe_in(
  isa: str, config_flags: list[str], data_root: str, steps: int
) -> dict:
  out = subprocess.run(
    [
      sys.executable,
      "-c",
      _PROBE,
      *config_flags,
      f"--data_root={data_root}",
      f"--steps={steps}",
    ],
    env=environment(isa),
    capture_output=True,
    text=True,
    check=False,
  )
  if out.returncode:
    raise RuntimeError(
      f"the {isa} probe failed (exit {out.returncode}):\n{out.stderr[-3000:]}"
    )
  return json.loads(out.stdout.strip().splitlines()[-1])


def _kept(cache: str, role: str) -> dict | None:
  """What the path's `sft.json` of `role` records about the model kept."""
  found = sorted(
    glob.glob(os.path.join(cache, "models", f"{role}-*", "sft.json"))
  )
  if not found:
    return None
  with open(found[-1]) as f:
    record = json.load(f)
  return {
    "kept": sft_band.describe(record),
    "held_out_accuracy": record["held_out_accuracy"],
    "warning": record.get("warning"),
  }


_SUMMARY_KEYS = (
  "teacher_accuracy",
  "student_accuracy_before",
  "student_accuracy_after",
  "detection_precision",
  "detection_recall",
  "wall_s",
)


def _train_in(isa: str, config_flags: list[str], out: str) -> dict:
  """The default command, cold, under `isa`; what it kept and reached."""
  os.makedirs(out, exist_ok=True)
  env = environment(isa)
  env["ROCK_JAX_CACHE"] = os.path.join(out, "cache")
  workdir = os.path.join(out, "workdir")
  start = time.time()
  with open(os.path.join(out, "train.log"), "w") as log:
    code = subprocess.run(
      [
        sys.executable,
        os.path.join(_REPO, "launch", "train.py"),
        *config_flags,
        f"--workdir={workdir}",
      ],
      env=env,
      stdout=log,
      stderr=subprocess.STDOUT,
      check=False,
    ).returncode
  result = {"exit_code": code, "seconds": time.time() - start}
  for role in ("teacher", "student"):
    result[role] = _kept(env["ROCK_JAX_CACHE"], role)
  summary = os.path.join(workdir, "summary.json")
  if os.path.isfile(summary):
    with open(summary) as f:
      values = json.load(f)
    result["summary"] = {k: values.get(k) for k in _SUMMARY_KEYS}
  return result


def run(
  root: str,
  isas=ISAS,
  config_file: str = "configs/opd_rock.py",
  overrides=None,
  rerun_identical: bool = False,
  probe_only: bool = False,
  probe_steps: int = PROBE_STEPS,
) -> dict:
  """Probes, then runs the default command cold, on each path in `isas`.

  `config_file` (with its `:arg`) and `overrides` (`{key: value}`, as
  `--config.<key>=<value>`) are the command's. A path whose probe digest
  equals an earlier one's computes the same bits, so its run is that one's
  unless `rerun_identical`; `probe_only` runs none. Writes
  `<root>/paths.json` and returns it: per
  path the probe, which earlier path it is identical to, and the run's exit
  code, time, kept models and summary figures. A failed run is recorded,
  never raised: the check is that every path completes.
  """
  config_flags = _flags(config_file, overrides or {})
  probe_data = os.path.join(root, "probe_data")
  paths, by_digest = {}, {}
  for isa in isas:
    found = _probe_in(isa, config_flags, probe_data, probe_steps)
    same = by_digest.setdefault(found["digest"], isa)
    paths[isa] = {"probe": found, "identical_to": same if same != isa else None}
    print(
      f"{isa}: loss at step {probe_steps} {found['loss']!r}, digest "
      f"{found['digest']}" + (f" (identical to {same})" if same != isa else ""),
      flush=True,
    )
  for isa in isas:
    if probe_only or (paths[isa]["identical_to"] and not rerun_identical):
      continue
    print(f"{isa}: running the command cold", flush=True)
    paths[isa]["run"] = _train_in(isa, config_flags, os.path.join(root, isa))
    print(f"{isa}: {json.dumps(paths[isa]['run'])}", flush=True)
  result = {
    "command": config_flags,
    "probe_steps": probe_steps,
    "paths": paths,
  }
  metrics.write_json(os.path.join(root, "paths.json"), result)
  return result
