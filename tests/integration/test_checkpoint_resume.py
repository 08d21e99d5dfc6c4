"""A checkpointing loop in a subprocess (tests/helpers/checkpoint_loop.py):
killed mid-run or stopped by SIGTERM, then resumed, equal to an
uninterrupted one."""

import os
import pathlib
import signal
import subprocess
import sys

import numpy as np
import run_helpers
from run_helpers import assert_trees_equal

LOOP = pathlib.Path(__file__).parents[1] / "helpers" / "checkpoint_loop.py"


def child_env():
  env = dict(os.environ)
  env["JAX_PLATFORMS"] = "cpu"
  env["XLA_FLAGS"] = run_helpers.xla_flags(8, env.get("XLA_FLAGS"))
  return env


def start_loop(directory, num_steps, save_every, sleep, out):
  args = [str(a) for a in (directory, num_steps, save_every, sleep, out)]
  return subprocess.Popen(
    [sys.executable, str(LOOP), *args],
    stdout=subprocess.PIPE,
    stderr=subprocess.DEVNULL,
    text=True,
    env=child_env(),
  )


def read_until(proc, prefix):
  """Reads the child's lines until one starts with `prefix`; returns it."""
  for line in proc.stdout:
    if line.startswith(prefix):
      return line.strip()
  raise AssertionError(f"child exited ({proc.wait()}) before {prefix!r}")


def uninterrupted(tmp_path, num_steps):
  """The loop's final params when nothing stops it, from its own process
  (as the interrupted runs are: same flags and devices, and no state of
  this test process involved)."""
  out = str(tmp_path / "uninterrupted.npz")
  assert finish(tmp_path / "uninterrupted", num_steps, out)[-1] == "done"
  return dict(np.load(out))


def finish(directory, num_steps, out):
  """Runs the loop to completion; returns its output lines."""
  result = subprocess.run(
    [sys.executable, str(LOOP), str(directory), str(num_steps), "5", "0", out],
    capture_output=True,
    text=True,
    env=child_env(),
    timeout=120,
  )
  assert result.returncode == 0, result.stderr[-3000:]
  return result.stdout.splitlines()


def test_sigkill_mid_run_then_resume_matches_uninterrupted(tmp_path):
  directory, out = tmp_path / "ckpt", str(tmp_path / "final.npz")
  proc = start_loop(directory, 40, 5, 0.05, out)
  # Kill right after the step-15 save was handed to the background writer.
  read_until(proc, "saved 15")
  proc.kill()
  assert proc.wait() == -signal.SIGKILL
  # Usually the step-15 write is still in flight here: it is left as an
  # uncommitted "15.orbax-checkpoint-tmp" directory that restore ignores.

  lines = finish(directory, 40, out)
  resumed = int(lines[0].split()[1])
  assert lines[0].startswith("resumed") and resumed in (10, 15), lines[:2]
  assert lines[-1] == "done"
  assert sorted(p.name for p in directory.iterdir()) == ["35", "40"]
  final = dict(np.load(out))
  assert_trees_equal(final, uninterrupted(tmp_path, 40))


def test_sigterm_saves_at_the_stop_step_and_resumes(tmp_path):
  directory, out = tmp_path / "ckpt", str(tmp_path / "final.npz")
  # save_every is far away: the only checkpoint is the preemption one.
  proc = start_loop(directory, 10_000, 1000, 0.02, out)
  read_until(proc, "step 3")
  proc.send_signal(signal.SIGTERM)
  stopped = int(read_until(proc, "stopped").split()[1])
  assert proc.wait(timeout=60) == 0
  assert sorted(int(p.name) for p in directory.iterdir()) == [stopped]

  lines = finish(directory, stopped + 3, out)
  assert lines[0] == f"resumed {stopped}"
  assert lines[-1] == "done"
  final = dict(np.load(out))
  assert_trees_equal(final, uninterrupted(tmp_path, stopped + 3))
