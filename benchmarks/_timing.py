"""Shared helpers for benchmarks: interleaved median timing and JSON output.

CPU timings swing by 2x between runs, but ratios from interleaved repetitions
(ABAB...) within one process are stable to about 10%, so
every benchmark compares candidates round-robin and reports medians.
"""

import json
import statistics
import time

import jax


def interleaved_medians(fns, repeats=5, warmup=1):
  """Median wall time of each zero-argument callable, run round-robin.

  Args:
    fns: dict name -> callable returning JAX arrays (blocked on before the
      clock stops, so asynchronous dispatch is timed to completion).
    repeats: timed rounds; each round runs every callable once, in order.
    warmup: untimed rounds first (compilation, caches).

  Returns:
    dict name -> median seconds.
  """
  times = {name: [] for name in fns}
  for round_index in range(warmup + repeats):
    for name, fn in fns.items():
      start = time.perf_counter()
      jax.block_until_ready(fn())
      elapsed = time.perf_counter() - start
      if round_index >= warmup:
        times[name].append(elapsed)
  return {name: statistics.median(ts) for name, ts in times.items()}


def print_result(result):
  """Prints the benchmark's result as one JSON line (its last output)."""
  print(json.dumps(result, sort_keys=True), flush=True)
