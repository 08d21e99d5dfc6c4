"""Token sampling settings: greedy, temperature, top-k, top-p.

Legend: B batch, V vocab. One frozen (hashable) settings object, so it can be
a static argument of the compiled decode loop; named presets in `SAMPLERS`.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from rock_jax.sampler import threefry

# From this many ids on, `Sampling.sample` draws in two stages
# (`two_stage_sample`): one noise value per id, threefry's counters then two
# logs, is most of a decode step's work at a 150k vocabulary. Below it the
# one-stage draw stays, and with it the tokens of earlier runs.
TWO_STAGE_FROM = 16384
# Ids per block of the two-stage draw: about the square root of the
# vocabularies it serves, so both stages draw a few hundred values per row.
BLOCK = 512


@dataclasses.dataclass(frozen=True, kw_only=True)
class Sampling:
  """How the next token is chosen from the logits.

  Attributes:
    temperature: 0 means greedy (argmax); otherwise logits are divided by it.
    top_k: keep only the k most likely tokens (0: no limit).
    top_p: keep the smallest set of most likely tokens whose probability
      reaches p (1.0: no limit). Applied after temperature and top-k.
  """

  temperature: float = 1.0
  top_k: int = 0
  top_p: float = 1.0

  def __post_init__(self):
    if self.temperature < 0:
      raise ValueError(
        f"Sampling.temperature={self.temperature} must be >= 0 (0: greedy)"
      )
    if self.top_k < 0:
      raise ValueError(f"Sampling.top_k={self.top_k} must be >= 0 (0: off)")
    if not 0 < self.top_p <= 1:
      raise ValueError(f"Sampling.top_p={self.top_p} must be in (0, 1]")

  @property
  def greedy(self) -> bool:
    return self.temperature == 0

  def processed_logits(self, logits_BxV: jax.Array) -> jax.Array:
    """Float32 logits of the distribution actually sampled from.

    Tokens outside top-k / top-p get -inf. For greedy decoding this is the
    raw logits (the argmax is taken on them).
    """
    logits = logits_BxV.astype(jnp.float32)
    if self.greedy:
      return logits
    logits = logits / self.temperature
    if self.top_k:
      kth = jax.lax.top_k(logits, self.top_k)[0][:, -1:]
      logits = jnp.where(logits < kth, -jnp.inf, logits)
    if self.top_p < 1:
      sorted_desc = -jnp.sort(-logits, axis=-1)
      probs = jax.nn.softmax(sorted_desc, axis=-1)
      # A token is kept while the mass strictly before it is below p, so the
      # most likely token always survives.
      mass_before = jnp.cumsum(probs, axis=-1) - probs
      kept = jnp.where(mass_before < self.top_p, sorted_desc, jnp.inf)
      threshold = jnp.min(kept, axis=-1, keepdims=True)
      logits = jnp.where(logits < threshold, -jnp.inf, logits)
    return logits

  def sample(self, logits_BxV: jax.Array, rng: jax.Array, rows_B=None):
    """Draws one token per row.

    Args:
      logits_BxV: the raw next-token logits.
      rng: one key, or a `[B]` array of keys (one per row).
      rows_B: each row's index in the batch it stands for (default
        `arange(B)`): row i draws exactly what row `rows_B[i]` of
        `jax.random.categorical(key, logits_RxV)` would, for any R (from
        `TWO_STAGE_FROM` ids on, what row `rows_B[i]` of
        `two_stage_sample` would), so a sequence's tokens do not depend on
        which rows share its step.

    Returns:
      `(tokens_B, logprobs_B)`: int32 token ids and their log-probability
      under the processed distribution (0 for greedy: a point mass).
    """
    logits = self.processed_logits(logits_BxV)
    if self.greedy:
      tokens = argmax(logits)
      return tokens, jnp.zeros(tokens.shape, jnp.float32)
    batch, vocab = logits.shape
    if rows_B is None:
      rows_B = jnp.arange(batch)
    keys_B = jnp.broadcast_to(rng, (batch,))
    if vocab >= TWO_STAGE_FROM:
      return two_stage_sample(logits, keys_B, rows_B)
    noise = row_gumbel(keys_B, rows_B, vocab)
    tokens = argmax(logits + noise)
    logprobs = jnp.take_along_axis(
      jax.nn.log_softmax(logits, axis=-1), tokens[:, None], axis=-1
    )[:, 0]
    return tokens, logprobs


def two_stage_sample(logits_BxV, keys_B, rows_B, block: int = BLOCK):
  """`(tokens_B, logprobs_B)` drawn from `softmax(logits_BxV)` in two
  Gumbel-max stages: a block of `block` consecutive ids by its probability
  mass, then an id inside that block by its logit. The product of the two
  choices' probabilities is the id's, so the draw is exact; it takes
  V / block + block noise values per row instead of V.

  Row i's noise is row `rows_B[i]` of one `[R, V / block + block]` draw
  under `keys_B[i]` (`row_gumbel`), so a sequence's tokens do not depend on
  which rows share its step.
  """
  batch, vocab = logits_BxV.shape
  count = -(-vocab // block)
  blocks_BxKxC = jnp.pad(
    logits_BxV, ((0, 0), (0, count * block - vocab)), constant_values=-jnp.inf
  ).reshape(batch, count, block)
  # Finite: sampling keeps at least the most likely id.
  top_B = jnp.max(logits_BxV, axis=-1)
  mass_BxK = jnp.sum(jnp.exp(blocks_BxKxC - top_B[:, None, None]), axis=-1)
  noise = row_gumbel(keys_B, rows_B, count + block)
  # A block without mass is -inf here and never drawn.
  chosen_B = argmax(jnp.log(mass_BxK) + noise[:, :count])
  inside_BxC = jnp.take_along_axis(
    blocks_BxKxC, chosen_B[:, None, None], axis=1
  )[:, 0]
  index_B = argmax(inside_BxC + noise[:, count:])
  logit_B = jnp.take_along_axis(inside_BxC, index_B[:, None], axis=-1)[:, 0]
  tokens = chosen_B * block + index_B
  # Shifted first, as log_softmax does: the difference of two large logits
  # is exact, a large log-normaliser's rounding is not.
  return tokens, (logit_B - top_B) - jnp.log(jnp.sum(mass_BxK, axis=-1))


def argmax(x_BxV: jax.Array) -> jax.Array:
  """int32 `[B]`: `jnp.argmax(x_BxV, axis=-1)`, the first maximum (the first
  NaN if any), as two plain reductions. XLA's CPU backend runs argmax as one
  reduction over (value, index) pairs that does not vectorise, with the
  noise that feeds it fused in: a max and a min run about 4x faster."""
  top_Bx1 = jnp.max(x_BxV, axis=-1, keepdims=True)
  # A NaN maximum equals nothing; argmax then points at the first NaN.
  hit = (x_BxV == top_Bx1) | (jnp.isnan(top_Bx1) & jnp.isnan(x_BxV))
  index = jnp.arange(x_BxV.shape[-1], dtype=jnp.int32)
  return jnp.min(jnp.where(hit, index, x_BxV.shape[-1]), axis=-1)


def row_gumbel(keys_B: jax.Array, rows_B: jax.Array, vocab: int) -> jax.Array:
  """float32 `[B, V]`: row `rows_B[i]` of `jax.random.gumbel(keys_B[i],
  (R, V))`, computed for that row alone.

  Threefry's partitionable bits (JAX's default) give element n of an array
  the counter n, whatever the array's shape, so row r of an `[R, V]` draw
  is the threefry of counters `r * V + v`: the same for every R.
  """
  data = jax.random.key_data(keys_B)
  index = rows_B.astype(jnp.uint32)[:, None] * jnp.uint32(vocab)
  low = index + jnp.arange(vocab, dtype=jnp.uint32)[None]
  # Counters above 2**32 would need the high word; R * V stays far below.
  high = jnp.zeros_like(low)
  k1, k2 = (jnp.broadcast_to(data[:, i, None], low.shape) for i in (0, 1))
  bits1, bits2 = threefry.threefry2x32(k1, k2, high, low)
  # `jax.random.uniform`'s float construction: 23 random mantissa bits.
  floats = (
    jax.lax.bitcast_convert_type(
      ((bits1 ^ bits2) >> 9) | jnp.uint32(0x3F800000), jnp.float32
    )
    - 1.0
  )
  tiny = jnp.finfo(jnp.float32).tiny
  uniform = jnp.maximum(tiny, floats * (1.0 - tiny) + tiny)
  return -jnp.log(-jnp.log(uniform))


SAMPLERS = {
  "greedy": Sampling(temperature=0.0),
  "temperature": Sampling(temperature=1.0),
}


def get_sampling(sampling: str | Sampling) -> Sampling:
  """A `Sampling` from a preset name or an instance."""
  if isinstance(sampling, Sampling):
    return sampling
  if sampling not in SAMPLERS:
    raise ValueError(
      f"unknown sampling {sampling!r}; available: "
      f"{sorted(SAMPLERS)} or a rock_jax.sampler.Sampling"
    )
  return SAMPLERS[sampling]
