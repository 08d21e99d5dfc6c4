"""Decode attention over a slot pool (rock_jax.models.decode)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rock_jax.models.kernels import ragged as decode

# 2 layers; 5 slots of 4 pages of 8 keys; GQA with 2 query heads per kv head.
N, K, H, DIM, SLOTS, PAGES, SIZE = 2, 2, 4, 16, 5, 4, 8
# Lengths (the new key included): the new key alone, a partial page, a page
# boundary, the whole slot; slots out of order and repeated.
SLOTS_B = [3, 0, 3, 4, 1, 2]
LENGTHS_B = [1, 6, 9, 32, 17, 24]


def _inputs(dtype, seed=0):
  keys = iter(jax.random.split(jax.random.key(seed), 5))
  shape = (N, K, SLOTS, PAGES, SIZE, DIM)
  b = len(SLOTS_B)
  pool_k, pool_v = (jax.random.normal(next(keys), shape, dtype) for _ in "kv")
  q = jax.random.normal(next(keys), (b, H, DIM), dtype)
  new_k, new_v = (
    jax.random.normal(next(keys), (b, K, DIM), dtype) for _ in "kv"
  )
  return q, new_k, new_v, pool_k, pool_v


def _reference(q, new_k, new_v, pool_k, pool_v, layer, scale):
  """float64 NumPy: the slot's keys [0, length - 1), then the new key."""
  q, new_k, new_v, pool_k, pool_v = (
    np.asarray(x, np.float64) for x in (q, new_k, new_v, pool_k, pool_v)
  )
  flat_k = pool_k[layer].reshape(K, SLOTS, PAGES * SIZE, DIM)
  flat_v = pool_v[layer].reshape(K, SLOTS, PAGES * SIZE, DIM)
  out = np.zeros(q.shape)
  for i, (slot, length) in enumerate(zip(SLOTS_B, LENGTHS_B, strict=True)):
    for head in range(H):
      kv = head // (H // K)
      keys = np.concatenate(
        [flat_k[kv, slot, : length - 1], new_k[i, kv][None]]
      )
      values = np.concatenate(
        [flat_v[kv, slot, : length - 1], new_v[i, kv][None]]
      )
      s = keys @ q[i, head] * scale
      p = np.exp(s - s.max())
      out[i, head] = p @ values / p.sum()
  return out


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_ragged_equals_the_float64_reference(dtype):
  q, new_k, new_v, pool_k, pool_v = _inputs(dtype)
  pool = decode.pool_step(
    pool_k, pool_v, jnp.array(SLOTS_B), jnp.array(LENGTHS_B)
  )
  attend = jax.jit(decode.ragged_attention, static_argnames="scale")
  for layer in range(N):
    out = attend(q, new_k, new_v, pool, layer, scale=DIM**-0.5)
    assert out.dtype == dtype and out.shape == q.shape
    ref = _reference(q, new_k, new_v, pool_k, pool_v, layer, DIM**-0.5)
    if dtype == jnp.float32:
      np.testing.assert_allclose(np.asarray(out), ref, rtol=1e-5, atol=1e-5)
    else:
      # bf16 inputs, float32 accumulation: the output's own bf16 rounding
      # (a relative 2**-8) dominates.
      np.testing.assert_allclose(
        np.asarray(out, np.float64), ref, rtol=2**-7, atol=2**-7
      )


def test_write_puts_each_key_at_its_slot_and_position_and_drops_padding():
  _, _, _, pool_k, _ = _inputs(jnp.float32)
  new = jax.random.normal(jax.random.key(9), (N, 3, K, DIM))
  # Rows 0 and 1 write (length 9: position 8, page 1; length 1: position 0);
  # row 2 pads the step (write slot out of range).
  out = decode.write(
    pool_k, new, jnp.array([2, 0, SLOTS]), jnp.array([9, 1, 4])
  )
  out = np.asarray(out).reshape(N, K, SLOTS, -1, DIM)
  expected = np.asarray(pool_k).reshape(N, K, SLOTS, -1, DIM).copy()
  expected[:, :, 2, 8] = np.asarray(new)[:, 0]
  expected[:, :, 0, 0] = np.asarray(new)[:, 1]
  np.testing.assert_array_equal(out, expected)
