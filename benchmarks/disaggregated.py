"""Disaggregated OPD: the teacher off the student's devices, rollouts ahead.

Memory: the student's train step on a 4-device `fsdp` mesh of fake CPU
devices at Qwen3-4B's shapes (2 of its 36 layers, float32 parameters,
bfloat16 compute, remat) against a teacher at Qwen3-8B's shapes (2 of 36
layers, bfloat16), 8 sequences of 128 + 1,024 positions. Compiled only
(abstract arguments): the bytes each student device holds (the step's
arguments plus XLA's temp) with the teacher's parameters scored inside the
step (`teacher.rules=replicated`, the default) against the teacher's
completion hidden states and head sent from its own devices
(`teacher.devices`). Deterministic.

Speed: the embedded default (`configs/opd_rock.py`, its cached models) for
`--steps` steps on 2 fake CPU devices, the student on device 0 and the
rollouts on device 1: lockstep (`rollout.staleness=0`) against rollouts one
step ahead (`staleness=1`), interleaved repeats, the median of the
steady-state steps per second (the loop's logged windows after the first).
A CPU's cores are shared by its fake devices, so this shows what the
pipeline costs and gains on one machine, not what separate chips give.

Keys of the JSON line:
  student_device_gib_inline, student_device_gib_apart: arguments + temp per
    student device, teacher scored inside the step or on its own devices.
  teacher_gib_on_student_devices: the teacher's parameters per student
    device when scored inside the step (0 when apart).
  stale_over_lockstep_steps_per_s: median steady-state steps per second with
    staleness 1 over lockstep (both with rollout.devices).
"""

import os

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=4")

import argparse  # noqa: E402
import json  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402

import jax  # noqa: E402
import numpy as np  # noqa: E402
from _timing import print_result  # noqa: E402
from long_context import QWEN3_4B_2L  # noqa: E402

from rock_jax import sharding as shd  # noqa: E402
from rock_jax.opd import (
  optim,
  train_state,  # noqa: E402
)
from rock_jax.opd.batch import OPDBatch, TeacherScores
from rock_jax.opd.train_step import Sharders, StepConfig, make_train_step
from rock_jax.train import compiled_plan  # noqa: E402

QWEN3_8B_2L = QWEN3_4B_2L.replace(
  hidden_size=4096,
  intermediate_size=12288,
  tie_word_embeddings=False,
  param_dtype="bfloat16",
)
B, P, N = 8, 128, 1024
GIB = 2**30
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def student_device_bytes(apart: bool) -> tuple[int, int]:
  """(arguments + temp, teacher parameters) per student device."""
  mesh = shd.make_mesh([("data", 1), ("fsdp", 4)], jax.devices()[:4])
  student = shd.Sharder(mesh, shd.get_rules("fsdp"))
  teacher = shd.Sharder(mesh, shd.get_rules("replicated"))
  optimizer = optim.make_optimizer(
    learning_rate=1e-5, total_steps=100, warmup_steps=1
  )
  params = compiled_plan.abstract_params(QWEN3_4B_2L, student)
  state = train_state.abstract(params, optimizer, QWEN3_4B_2L.vocab_size)
  rows = student.sharding((shd.BATCH, shd.LENGTH))
  tokens = jax.ShapeDtypeStruct((B, P + N), np.int32, sharding=rows)
  mask = jax.ShapeDtypeStruct((B, P + N), bool, sharding=rows)
  completion = jax.ShapeDtypeStruct((B, N), bool, sharding=rows)
  batch = OPDBatch(tokens, mask, tokens, mask, completion)
  if apart:
    E, V = QWEN3_8B_2L.hidden_size, QWEN3_8B_2L.vocab_size
    # Replicated on the student's mesh, as the trainer sends it.
    head = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
    teacher_arg = TeacherScores(
      jax.ShapeDtypeStruct((B, N, E), np.dtype("bfloat16"), sharding=rows),
      jax.ShapeDtypeStruct((E, V), np.dtype("bfloat16"), sharding=head),
    )
    teacher_params = 0
  else:
    teacher_arg = compiled_plan.abstract_params(QWEN3_8B_2L, teacher)
    teacher_params = compiled_plan.device_bytes(teacher_arg)
  cfg = StepConfig(student=QWEN3_4B_2L, teacher=QWEN3_8B_2L)
  step = make_train_step(
    cfg,
    optimizer,
    state_shardings=train_state.shardings(state),
    teacher_shardings=jax.tree.map(lambda x: x.sharding, teacher_arg),
    batch_sharding=rows,
    sharders=Sharders(student, teacher),
  )
  compiled = step.lower(state, teacher_arg, batch, None).compile()
  temp = compiled.memory_analysis().temp_size_in_bytes
  resident = compiled_plan.device_bytes((state, teacher_arg, batch))
  return resident + temp, teacher_params


def _run(staleness: int, steps: int, workdir: str) -> list[float]:
  """Steady-state steps per second of one embedded run (a subprocess with 2
  fake devices)."""
  env = dict(os.environ)
  env["XLA_FLAGS"] = "--xla_force_host_platform_device_count=2"
  command = [
    sys.executable,
    os.path.join(ROOT, "launch", "train.py"),
    f"--config={os.path.join(ROOT, 'configs', 'opd_rock.py')}",
    f"--workdir={workdir}",
    "--config.rollout.devices=1:2",
    f"--config.rollout.staleness={staleness}",
    f"--config.train.steps={steps}",
    f"--config.train.log_every={steps // 4}",
    "--config.train.eval_every=0",
    "--config.train.eval_examples=32",
    "--config.train.export=False",
    "--config.train.checkpoint_every=100000",
  ]
  subprocess.run(command, env=env, check=True, capture_output=True)
  with open(os.path.join(workdir, "logs", "metrics.jsonl")) as f:
    lines = [json.loads(x) for x in f]
  return [x["perf/steps_per_s"] for x in lines if "perf/steps_per_s" in x][1:]


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument("--steps", type=int, default=80)
  parser.add_argument("--repeats", type=int, default=3)
  args = parser.parse_args()

  inline, teacher = student_device_bytes(apart=False)
  apart, _ = student_device_bytes(apart=True)
  ratios = []
  with tempfile.TemporaryDirectory() as tmp:
    for r in range(args.repeats):
      rates = {}
      for staleness in (0, 1):
        rates[staleness] = statistics.median(
          _run(staleness, args.steps, os.path.join(tmp, f"{r}_{staleness}"))
        )
      ratios.append(rates[1] / rates[0])
      print(f"repeat {r}: steps/s {rates}", flush=True)
  print_result(
    {
      "student_device_gib_inline": round(inline / GIB, 2),
      "student_device_gib_apart": round(apart / GIB, 2),
      "teacher_gib_on_student_devices": round(teacher / GIB, 2),
      "stale_over_lockstep_steps_per_s": round(statistics.median(ratios), 3),
    }
  )


if __name__ == "__main__":
  main()
