"""The unrolled Threefry-2x32 (rock_jax.sampler.threefry)."""

import jax
import jax.extend
import jax.numpy as jnp
import numpy as np

from rock_jax.sampler import threefry


def _words(rng, shape):
  words = rng.integers(0, 2**32, shape, dtype=np.uint64).astype(np.uint32)
  # The extremes, where the additions and rotations wrap.
  words.flat[:2] = (0, 2**32 - 1)
  return jnp.asarray(words)


def test_bits_equal_jax_primitive():
  rng = np.random.default_rng(0)
  args = [_words(rng, (7, 337)) for _ in range(4)]
  expected = jax.jit(jax.extend.random.threefry2x32_p.bind)(*args)
  got = jax.jit(threefry.threefry2x32)(*args)
  for e, g in zip(expected, got):
    assert g.dtype == jnp.uint32
    np.testing.assert_array_equal(np.asarray(g), np.asarray(e))


def test_bits_equal_jax_random_bits():
  # Row r of a [R, V] draw is the hash of counters r * V + v under the key:
  # the construction `sampling.row_gumbel` relies on.
  key = jax.random.key(3)
  rows, vocab = 4, 33
  data = jax.random.key_data(key)
  counters = jnp.arange(rows * vocab, dtype=jnp.uint32)
  k1, k2 = (jnp.full(counters.shape, data[i], jnp.uint32) for i in (0, 1))
  bits1, bits2 = threefry.threefry2x32(
    k1, k2, jnp.zeros_like(counters), counters
  )
  expected = jax.random.bits(key, (rows, vocab), jnp.uint32)
  np.testing.assert_array_equal(
    np.asarray(bits1 ^ bits2).reshape(rows, vocab), np.asarray(expected)
  )
