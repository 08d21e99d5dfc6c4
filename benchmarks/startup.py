"""Start-up: seconds from process start to the first completed OPD step.

  python benchmarks/startup.py                      # the embedded default
  python benchmarks/startup.py --config.train.batch_size=16 ...

Starts `launch/train.py` (the embedded default, plus any `--config.*`
given here) twice in fresh work directories sharing one fresh persistent
compilation cache: cold (empty cache), then warm (the programs the cold start
wrote). Each start is timed from spawning the process to the moment its first
step's metrics reach `metrics.jsonl` (loading, data, both models, the
evaluation before training and step 1 included), then stopped with SIGTERM.
The data and the embedded models are prepared first, untimed (minutes the
first time, cached in the rock_jax cache folder after).

Keys of the JSON line:
  cold_s, warm_s: seconds to the first step, cold and warm.
  warm_over_cold: their ratio (goal <= 0.4).
  cold_entries: programs the cold start wrote to the cache.
  warm_new_entries: programs the warm start had to compile and write (0: it
    loaded every cached program).
"""

import argparse
import json
import pathlib
import signal
import subprocess
import sys
import tempfile
import time

from _timing import print_result

ROOT = pathlib.Path(__file__).parents[1]
TRAIN = ROOT / "launch" / "train.py"
CONFIG = ROOT / "configs" / "opd_rock.py"


def _prepare(overrides):
  """The data and models the config names, prepared in this process."""
  from absl import flags  # noqa: PLC0415 (after the arguments are read)
  from ml_collections import config_flags  # noqa: PLC0415

  from rock_jax.train import session  # noqa: PLC0415

  holder = config_flags.DEFINE_config_file("config", lock_config=True)
  flags.FLAGS([sys.argv[0], f"--config={CONFIG}", *overrides])
  session.prepare(holder.value)


def _entries(cache: pathlib.Path) -> int:
  return sum(1 for p in cache.rglob("*") if p.is_file())


def time_to_first_step(workdir, cache, overrides, timeout_s):
  """Seconds from spawning `launch/train.py` to its first step's metrics."""
  command = [
    sys.executable,
    str(TRAIN),
    f"--config={CONFIG}",
    f"--workdir={workdir}",
    f"--config.compile_cache={cache}",
    "--config.train.log_every=1",
    *overrides,
  ]
  metrics = pathlib.Path(workdir) / "logs" / "metrics.jsonl"
  start = time.time()
  proc = subprocess.Popen(command, stdout=subprocess.DEVNULL)
  try:
    while time.time() - start < timeout_s:
      if proc.poll() is not None:
        raise RuntimeError(f"{command} exited with {proc.returncode}")
      if metrics.exists() and any(
        "kl/unweighted" in json.loads(line)
        for line in metrics.read_text().splitlines()
        if line.strip()
      ):
        return time.time() - start
      time.sleep(0.05)
    raise TimeoutError(f"no first step within {timeout_s} s: {command}")
  finally:
    # A stop request: the run saves a checkpoint and exits.
    if proc.poll() is None:
      proc.send_signal(signal.SIGTERM)
    proc.wait()


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument("--timeout_s", type=float, default=3600)
  args, overrides = parser.parse_known_args()
  if any(not o.startswith("--config.") for o in overrides):
    parser.error(f"unexpected arguments: {overrides}")
  _prepare(overrides)
  with tempfile.TemporaryDirectory() as tmp:
    tmp = pathlib.Path(tmp)
    cache = tmp / "compile_cache"
    result = {}
    result["cold_s"] = time_to_first_step(
      tmp / "cold", cache, overrides, args.timeout_s
    )
    result["cold_entries"] = _entries(cache)
    result["warm_s"] = time_to_first_step(
      tmp / "warm", cache, overrides, args.timeout_s
    )
    result["warm_new_entries"] = _entries(cache) - result["cold_entries"]
  result["warm_over_cold"] = result["warm_s"] / result["cold_s"]
  print_result(result)


if __name__ == "__main__":
  main()
