"""Token draws (rock_jax.sampler.sampling): the two-stage draw at large
vocabularies against the softmax it samples, and the argmax every draw
takes."""

import jax
import jax.numpy as jnp
import numpy as np
import scipy.stats

from rock_jax.sampler import sampling
from rock_jax.sampler.sampling import Sampling, two_stage_sample


def _logits(vocab=37, seed=0):
  """Logits with a few ids masked out (-inf), as top-k leaves them."""
  logits = 1.5 * np.random.default_rng(seed).normal(size=vocab)
  logits[[3, 17, 36]] = -np.inf
  return jnp.asarray(logits, jnp.float32)


def test_two_stage_draws_the_softmax_distribution():
  # 37 ids in blocks of 8 (the last one padded): 40,000 rows of one draw
  # against the softmax, float64.
  logits = _logits()
  rows = 40000
  tokens, logprobs = two_stage_sample(
    jnp.broadcast_to(logits, (rows, 37)),
    jnp.broadcast_to(jax.random.key(5), (rows,)),
    jnp.arange(rows),
    block=8,
  )
  tokens = np.asarray(tokens)
  z = np.asarray(logits, np.float64)
  p = np.exp(z - z.max())
  p /= p.sum()
  counts = np.bincount(tokens, minlength=37)
  assert counts[p == 0].sum() == 0
  kept = p > 0
  result = scipy.stats.chisquare(counts[kept], rows * p[kept])
  assert result.pvalue > 1e-3, result
  np.testing.assert_allclose(logprobs, np.log(p[tokens]), rtol=1e-6)


def test_two_stage_rows_do_not_depend_on_their_neighbours():
  logits = 2 * jax.random.normal(jax.random.key(0), (9, 50))
  keys = jnp.broadcast_to(jax.random.key(1), (9,))
  whole, whole_lp = two_stage_sample(logits, keys, jnp.arange(9), block=16)
  rows = jnp.array([8, 0, 3, 3])
  part, part_lp = two_stage_sample(logits[rows], keys[:4], rows, block=16)
  np.testing.assert_array_equal(part, np.asarray(whole)[np.asarray(rows)])
  np.testing.assert_array_equal(part_lp, np.asarray(whole_lp)[np.asarray(rows)])


def test_sample_draws_in_two_stages_from_the_threshold():
  # At TWO_STAGE_FROM ids the sampler's draw is the two-stage one (and its
  # log-prob the processed distribution's); below it, one Gumbel-max draw.
  vocab = sampling.TWO_STAGE_FROM
  logits = 4 * jax.random.normal(jax.random.key(2), (6, vocab))
  key, rows = jax.random.key(3), jnp.arange(6)
  tokens, logprobs = Sampling(temperature=0.5).sample(logits, key, rows)
  expected, _ = two_stage_sample(
    logits / 0.5, jnp.broadcast_to(key, (6,)), rows
  )
  np.testing.assert_array_equal(tokens, expected)
  reference = jax.nn.log_softmax(logits / 0.5, axis=-1)
  np.testing.assert_allclose(
    logprobs, reference[jnp.arange(6), tokens], rtol=1e-5, atol=1e-6
  )
  small, _ = Sampling(temperature=0.5).sample(logits[:, :-1], key, rows)
  gumbel = jax.random.categorical(key, logits[:, :-1] / 0.5)
  np.testing.assert_array_equal(small, gumbel)


def test_argmax_equals_jnp_argmax_with_ties_infinities_and_nans():
  rng = np.random.default_rng(0)
  # Small integers: many ties per row, and the first must win.
  x = rng.integers(0, 4, (64, 37)).astype(np.float32)
  x[1] = -np.inf
  x[2, 5:] = np.inf
  x[3, [7, 9]] = np.nan
  x[4] = np.nan
  got = jax.jit(sampling.argmax)(jnp.asarray(x))
  assert got.dtype == jnp.int32
  np.testing.assert_array_equal(got, jnp.argmax(jnp.asarray(x), axis=-1))
