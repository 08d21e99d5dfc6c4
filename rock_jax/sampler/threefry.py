"""Threefry-2x32, the hash behind JAX's default keys, as straight-line code.

JAX lowers its `threefry2x32` primitive on CPU as a loop of five iterations
(to keep compile times down), which XLA runs as a few dozen small kernels
per call: in a decode loop that draws a `[B, V]` row of noise per token,
about a quarter of a decode step at the embedded task's size. Unrolled, the
hash is one fused elementwise kernel; on other backends this is the lowering
JAX itself uses there. The bits are the primitive's, exactly.
"""

from __future__ import annotations

import jax
import numpy as np

# The 2x32 variant's rotations, four rounds each, alternating.
_ROTATIONS = ((13, 15, 26, 6), (17, 29, 16, 24))
# Skein's key-schedule parity constant.
_PARITY = np.uint32(0x1BD11BDA)


def _rotate_left(x: jax.Array, bits: int) -> jax.Array:
  return (x << np.uint32(bits)) | (x >> np.uint32(32 - bits))


def threefry2x32(key1, key2, count1, count2) -> tuple[jax.Array, jax.Array]:
  """The two uint32 words of Threefry-2x32 (20 rounds) of the counters
  `(count1, count2)` under the key `(key1, key2)`: what
  `jax.extend.random.threefry2x32_p.bind(key1, key2, count1, count2)`
  returns. All four are uint32 arrays of one shape."""
  keys = (key1, key2, key1 ^ key2 ^ _PARITY)
  x1, x2 = count1 + keys[0], count2 + keys[1]
  for i in range(5):
    for bits in _ROTATIONS[i % 2]:
      x1 = x1 + x2
      x2 = _rotate_left(x2, bits) ^ x1
    x1 = x1 + keys[(i + 1) % 3]
    x2 = x2 + keys[(i + 2) % 3] + np.uint32(i + 1)
  return x1, x2
