"""`launch/train.py` in subprocesses: one killed after a checkpoint, two
joined on loopback, and the environment they run in."""

import os
import socket
import subprocess
import sys
import time

from run_helpers import ROOT, tiny_overrides, xla_flags

from rock_jax import storage


def start_and_wait_for_a_checkpoint(assets, steps, workdir, **overrides):
  """Starts `launch/train.py` in a subprocess and waits until step 2 is
  committed; returns the process and whether that happened."""
  settings = {**tiny_overrides(assets, steps), **overrides}
  command = [
    sys.executable,
    str(ROOT / "launch" / "train.py"),
    f"--config={ROOT / 'configs' / 'opd_rock.py'}",
    f"--workdir={workdir}",
    *[f"--config.{k}={v}" for k, v in settings.items()],
  ]
  proc = subprocess.Popen(
    command, env=cpu_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
  )
  # Orbax renames a finished step into place on disk; on Cloud Storage,
  # which has no rename, it marks the step with commit_success.txt last.
  first = storage.join(str(workdir), "checkpoints", "2")
  if storage.is_url(first):
    first = storage.join(first, "commit_success.txt")
  deadline = time.time() + 240
  while proc.poll() is None and time.time() < deadline:
    if storage.exists(first):
      break
    time.sleep(0.1)
  return proc, storage.exists(first)


def cpu_env():
  env = dict(os.environ)
  env["XLA_FLAGS"] = xla_flags(8, env.get("XLA_FLAGS"))
  env["JAX_PLATFORMS"] = "cpu"
  return env


def launch_two_processes(assets, workdir, port, **extra):
  """`launch/train.py` as 2 processes x 4 CPU devices on loopback."""
  env = cpu_env()
  env["XLA_FLAGS"] = xla_flags(4, env["XLA_FLAGS"])
  procs = []
  for i in range(2):
    overrides = {
      **tiny_overrides(assets, 6),
      "distributed.coordinator_address": f"127.0.0.1:{port}",
      "distributed.num_processes": 2,
      "distributed.process_id": i,
      **extra,
    }
    command = [
      sys.executable,
      str(ROOT / "launch" / "train.py"),
      f"--config={ROOT / 'configs' / 'opd_rock.py'}",
      f"--workdir={workdir}",
      *[f"--config.{k}={v}" for k, v in overrides.items()],
    ]
    procs.append(
      subprocess.Popen(
        command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
      )
    )
  return procs


def free_port():
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]
