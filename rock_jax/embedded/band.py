"""Where the embedded models' supervised training stops: inside a
held-out accuracy band, on any CPU.

A weak model's greedy accuracy moves fast and unevenly with its step, and
the steps themselves differ between CPUs (XLA compiles for the host's
instruction set), so a single step can jump over the whole band on one
machine and not on another. `select` lands in the band all the same, and
when it cannot, keeps the state nearest it with a warning instead of
stopping the run.

`run` is the trainer's handle (`sft`): `spec`, `step`, `params`,
`loss`, `advance(to_step)`, `save()` and `restore(saved)`.
"""

from __future__ import annotations

import jax
import numpy as np
from absl import logging

# Measurements spent splitting a step that jumps over the band: the mixing
# weight ends within 2^-8 of where the accuracy crosses into it.
BISECTIONS = 8


def mix(below, above, weight: float):
  """Parameters `weight` of the way from `below` to `above` (host arrays)."""
  w = np.float32(weight)
  return jax.tree.map(
    lambda a, b: (a + w * (b - a)).astype(a.dtype), below, above
  )


def _distance(accuracy: float, band) -> float:
  """How far an accuracy lies outside the band (0 inside it)."""
  return max(band[0] - accuracy, accuracy - band[1], 0.0)


class _Closest:
  """The measured state nearest the band, kept in case none lands in it."""

  def __init__(self, band):
    self.band, self.distance = band, float("inf")
    self.params = self.kept = self.accuracy = None

  def offer(self, params, accuracy: float, kept: dict) -> None:
    distance = _distance(accuracy, self.band)
    if distance < self.distance:
      self.distance, self.accuracy, self.kept = distance, accuracy, kept
      self.params = jax.tree.map(np.array, params)


def _bisect(run, below, measure, role: str, closest: _Closest):
  """Mixes the states before and after a step that jumped over the band.

  The mixing weight `w` (the share of the later state) is bisected: below
  the band moves it up, above the band down, for at most `BISECTIONS`
  measurements. Returns `(params, kept, accuracy, tried)`: the first
  mixture inside the band (Nones when none is), and every `[weight,
  accuracy]` measured. Every mixture is offered to `closest`.
  """
  low, high = run.spec.accuracy_band
  from_step, (start, _) = below
  end = jax.tree.map(np.array, run.params)
  lo, hi, tried = 0.0, 1.0, []
  for _ in range(BISECTIONS):
    weight = (lo + hi) / 2
    params = mix(start, end, weight)
    accuracy = measure(params)
    tried.append([weight, accuracy])
    kept = {
      "step": run.step,
      "interpolation": {"from_step": from_step, "weight": weight},
    }
    print(
      f"{role}: {describe(kept)}, held-out greedy accuracy {accuracy:.3f} "
      f"(band [{low}, {high}])",
      flush=True,
    )
    closest.offer(params, accuracy, kept)
    if low <= accuracy <= high:
      return params, kept, accuracy, tried
    if accuracy < low:
      lo = weight
    else:
      hi = weight
  return None, None, None, tried


def select(run, measure, role: str) -> dict:
  """Trains until the held-out accuracy lies in the band; never fails.

  Measures every `eval_every` steps. A measurement past the band goes back
  to the last one below it and measures every step; a single step that
  still jumps over the band is split by mixing the parameters before and
  after it (`_bisect`). When nothing lands in the band (the schedule ends
  below it, or the mixtures straddle it), the measured state nearest the
  band is kept with a warning: the embedded models' preparation must finish
  on any CPU, whose numerics move the trajectory. Leaves the kept
  parameters in `run.params` and returns the record of
  `sft.train_sft`.
  """
  spec = run.spec
  low, high = spec.accuracy_band
  stride = spec.eval_every or spec.steps
  below, measured, closest = run.save(), [], _Closest(spec.accuracy_band)
  record = {"measured": measured}
  while True:
    run.advance(min(run.step + stride, spec.steps))
    accuracy = measure(run.params)
    measured.append([run.step, accuracy])
    print(
      f"{role}: step {run.step}, loss {run.loss:.4f}, held-out greedy "
      f"accuracy {accuracy:.3f} (band [{low}, {high}])",
      flush=True,
    )
    if low <= accuracy <= high:
      return {"step": run.step, "held_out_accuracy": accuracy, **record}
    closest.offer(run.params, accuracy, {"step": run.step})
    if accuracy < low and run.step < spec.steps:
      below = run.save()
    elif accuracy > high and stride > 1 and spec.eval_every:
      # Past the band between two measurements: measure every step instead.
      run.restore(below)
      stride = 1
    elif accuracy > high:
      params, kept, mixed, record["bisection"] = _bisect(
        run, below, measure, role, closest
      )
      if params is not None:
        run.params = jax.device_put(params)
        return {**kept, "held_out_accuracy": mixed, **record}
      break
    else:
      break
  run.params = jax.device_put(closest.params)
  where = "after the schedule" if accuracy < low else "over one step"
  warning = (
    f"embedded.{role}: no held-out greedy accuracy in "
    f"embedded.{role}.accuracy_band={tuple(spec.accuracy_band)} {where}; "
    f"kept the nearest, {closest.accuracy:.3f} at {describe(closest.kept)}. "
    f"Runs start from a model outside the band: widen it or change "
    f"embedded.{role}.steps / learning_rate"
  )
  logging.warning("%s", warning)
  return {
    **closest.kept,
    "held_out_accuracy": closest.accuracy,
    "warning": warning,
    **record,
  }


def describe(kept: dict) -> str:
  """Which state a record kept: `step 330`, or a mixture of two steps."""
  mixed = kept.get("interpolation")
  if not mixed:
    return f"step {kept['step']}"
  return (
    f"steps {mixed['from_step']}->{kept['step']} mixed at weight "
    f"{mixed['weight']:.4f}"
  )
