"""The compiled decode loop behind `rollout.generate`: a pool of KV slots
(`run`, its static settings one `DecodeSpec`).

Legend: U distinct prompts, R = U x samples sequences, M slots, P prompt
bucket, N generation budget, V vocab, D model width.

Each distinct prompt is prefilled once; its keys and values are moved to the
front (no padding) and copied into a free slot whenever one of its samples
starts. Every step decodes the live slots only, as the smallest of a few
batch sizes that holds them, and reads only their filled KV pages
(`rock_jax.models.kernels.ragged`); a finished sequence frees its slot for
the next queued one. Sequence r's token t is drawn with key `fold_in(rng,
t)` as row r of the whole batch would be (`Sampling.sample`), so the tokens
do not depend on the slot count, the batch a step ran in or the device
count.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from rock_jax import models
from rock_jax import sharding as shd
from rock_jax.models.config import ModelConfig
from rock_jax.models.kernels import ragged
from rock_jax.sampler.sampling import Sampling


@dataclasses.dataclass(frozen=True, kw_only=True)
class DecodeSpec:
  """The static settings of one decode program (hashable: its jit key).

  Attributes:
    cfg: the decoding model.
    sampling: how each token is drawn.
    budget: the bucketed generation budget N (buffers' width).
    num_samples: completions per prompt.
    slots: KV slots decoding at once (M).
    page_size: tokens per KV page.
    sharder: the mesh layout, or None.
  """

  cfg: ModelConfig
  sampling: Sampling
  budget: int
  num_samples: int
  slots: int
  page_size: int
  sharder: Any = None


class RolloutStats(NamedTuple):
  """What a `generate` call computed (int32 scalars), for benchmarks.

  Attributes:
    steps: decode steps run.
    row_steps: rows computed over those steps (each step's bucket).
    kv_read: key positions read by decode attention per layer (whole pages).
    kv_filled: positions a row's step needs at least (its filled length),
      summed over the rows and steps that generated a token.
  """

  steps: jax.Array
  row_steps: jax.Array
  kv_read: jax.Array
  kv_filled: jax.Array


class _Pool(NamedTuple):
  """The decode loop's carry: M slots, R sequences of up to N tokens.

  A free slot has `seq_M = -1`. Slot m holds sequence `seq_M[m]` with
  `length_M[m]` keys (its prompt without padding, then `step_M[m]`
  generated tokens) and the logits of its next token.
  """

  kv: dict
  seq_M: jax.Array
  step_M: jax.Array
  length_M: jax.Array
  logits_MxV: jax.Array
  queued: jax.Array
  tokens_RxN: jax.Array
  logprobs_RxN: jax.Array
  sampling_logprobs_RxN: jax.Array
  mask_RxN: jax.Array
  stats: RolloutStats


class _Prompts(NamedTuple):
  """Each distinct prompt prefilled once: keys and values moved to the
  front of their rows (no padding), lengths and first-token logits."""

  kv: dict
  length_U: jax.Array
  logits_UxV: jax.Array


def _last_logits(hidden_BxD, head_DxV):
  """float32 next-token logits from final hidden states."""
  return jnp.einsum(
    "bd,dv->bv", hidden_BxD, head_DxV, preferred_element_type=jnp.float32
  )


def _prefill(cfg, params, head_DxV, prompt_UxP, prompt_mask_UxP, sharder):
  """Runs each distinct prompt once: its KV (left-aligned, `[N, K, U, P,
  h]`) and the logits of its first token."""
  count, prompt_len = prompt_UxP.shape
  cache = models.init_cache(cfg, count, prompt_len, sharder=sharder)
  hidden, cache = models.apply(
    cfg,
    params,
    prompt_UxP,
    attention_mask_BxL=prompt_mask_UxP,
    cache=cache,
    return_hidden=True,
    sharder=sharder,
  )
  length_U = jnp.sum(prompt_mask_UxP, axis=1, dtype=jnp.int32)
  # Left padding rotated to the back: a slot then holds its sequence from
  # position 0, so a row's keys are `[0, length)` and its RoPE position is
  # its slot position.
  ids_UxP = (jnp.arange(prompt_len)[None] + prompt_len - length_U[:, None]) % (
    prompt_len
  )

  def aligned(x_NxUxPxKxh):
    x = jnp.take_along_axis(x_NxUxPxKxh, ids_UxP[None, :, :, None, None], 2)
    return jnp.moveaxis(x, 3, 1)

  kv = {"k": aligned(cache.k_NxBxSxKxh), "v": aligned(cache.v_NxBxSxKxh)}
  return _Prompts(kv, length_U, _last_logits(hidden[:, -1], head_DxV))


def _refill(pool: _Pool, prompts: _Prompts, num_samples: int) -> _Pool:
  """Starts queued sequences in the free slots, in slot order."""
  total = pool.tokens_RxN.shape[0]
  free_M = pool.seq_M < 0
  seq_M = pool.queued + jnp.cumsum(free_M) - 1
  take_M = free_M & (seq_M < total)

  def start(pool: _Pool) -> _Pool:
    prompt_M = jnp.where(take_M, seq_M // num_samples, 0)
    kv = {}
    for name, pages in pool.kv.items():
      layers, kv_heads, slots, per_slot, size, dim = pages.shape
      flat = pages.reshape(layers, kv_heads, slots, per_slot * size, dim)
      source = prompts.kv[name][:, :, prompt_M]
      head = flat[:, :, :, : source.shape[3]]
      head = jnp.where(take_M[None, None, :, None, None], source, head)
      flat = jax.lax.dynamic_update_slice(flat, head, (0, 0, 0, 0, 0))
      kv[name] = flat.reshape(pages.shape)
    return pool._replace(
      kv=kv,
      seq_M=jnp.where(take_M, seq_M, pool.seq_M),
      step_M=jnp.where(take_M, 0, pool.step_M),
      length_M=jnp.where(take_M, prompts.length_U[prompt_M], pool.length_M),
      logits_MxV=jnp.where(
        take_M[:, None], prompts.logits_UxV[prompt_M], pool.logits_MxV
      ),
      queued=pool.queued + jnp.sum(take_M, dtype=jnp.int32),
    )

  return jax.lax.cond(jnp.any(take_M), start, lambda pool: pool, pool)


class _Settings(NamedTuple):
  """What every decode step reads besides the pool."""

  cfg: ModelConfig
  params: Any
  head_DxV: jax.Array
  rng: jax.Array
  max_new_tokens: jax.Array
  stop_ids: jax.Array
  logit_bias_V: jax.Array
  sampling: Sampling
  sharder: Any


def _decode_step(rows: int, run: _Settings, pool: _Pool):
  """One token for each live slot, computed as a batch of `rows` (the
  smallest bucket that holds them).

  Returns the pool with everything but its KV updated, and the new keys and
  values `[N, M, K, h]` with the slot each goes to (M: nowhere), padded to
  the pool's size so that every bucket returns the same shapes and the pool
  is written once, in place, outside the buckets' branches.
  """
  slots, total = pool.seq_M.shape[0], pool.tokens_RxN.shape[0]
  live_M = pool.seq_M >= 0
  slot_b = jnp.nonzero(live_M, size=rows, fill_value=0)[0]
  real_b = jnp.arange(rows) < jnp.sum(live_M)
  seq_b, step_b = pool.seq_M[slot_b], pool.step_M[slot_b]
  logits = pool.logits_MxV[slot_b]
  keys = jax.vmap(jax.random.fold_in, (None, 0))(run.rng, step_b)
  token, sampled = run.sampling.sample(
    logits + run.logit_bias_V[None], keys, seq_b
  )
  raw = jnp.take_along_axis(
    jax.nn.log_softmax(logits, axis=-1), token[:, None], axis=-1
  )[:, 0]
  out = (jnp.where(real_b, seq_b, total), step_b)
  stop_b = jnp.any(token[:, None] == run.stop_ids[None], axis=1)
  stop_b |= step_b + 1 >= run.max_new_tokens
  write_b = jnp.where(real_b, slot_b, slots)
  # Padding rows attend their own key only (no pages).
  length_b = jnp.where(real_b, pool.length_M[slot_b] + 1, 1)
  hidden, new_kv = models.decode_step(
    run.cfg,
    run.params,
    token,
    ragged.pool_step(pool.kv["k"], pool.kv["v"], slot_b, length_b),
    sharder=run.sharder,
  )
  size = pool.kv["k"].shape[4]
  pages = jnp.sum((length_b - 1 + size - 1) // size)
  stats = pool.stats
  pad = slots - rows
  new_kv = jax.tree.map(
    lambda x: jnp.pad(x, ((0, 0), (0, pad), (0, 0), (0, 0))), new_kv
  )
  write_M = jnp.pad(write_b, (0, pad), constant_values=slots)
  length_M = jnp.pad(length_b, (0, pad), constant_values=1)
  pool = pool._replace(
    seq_M=pool.seq_M.at[write_b].set(jnp.where(stop_b, -1, seq_b), mode="drop"),
    step_M=pool.step_M.at[write_b].add(1, mode="drop"),
    length_M=pool.length_M.at[write_b].add(1, mode="drop"),
    logits_MxV=pool.logits_MxV.at[write_b].set(
      _last_logits(hidden, run.head_DxV), mode="drop"
    ),
    tokens_RxN=pool.tokens_RxN.at[out].set(token, mode="drop"),
    logprobs_RxN=pool.logprobs_RxN.at[out].set(raw, mode="drop"),
    sampling_logprobs_RxN=pool.sampling_logprobs_RxN.at[out].set(
      sampled, mode="drop"
    ),
    mask_RxN=pool.mask_RxN.at[out].set(True, mode="drop"),
    stats=RolloutStats(
      stats.steps + 1,
      stats.row_steps + rows,
      stats.kv_read + (pages + rows - 1) // rows * rows * size,
      stats.kv_filled + jnp.sum(jnp.where(real_b, length_b, 0)),
    ),
  )
  return pool, new_kv, write_M, length_M


def _row_buckets(slots: int) -> tuple[int, ...]:
  """Step batch sizes: the pool, a quarter and a sixteenth of it, none
  below 4 rows; a pool under 16 slots runs whole.

  Each size is one more compiled decode step: three bound the compile time
  while a step's idle rows stay under three quarters of it (a few rows cost
  a decode step hardly more than one).
  """
  if slots < 16:
    return (slots,)
  return tuple(sorted({max(4, -(-slots // 4**k)) for k in range(3)}))


def _empty_pool(
  cfg, prompts: _Prompts, slots, total, budget, page_size, pad_id, sharder
):
  """A pool of free slots and output buffers for `total` sequences (tokens
  pre-filled with the pad id, what follows a stop)."""
  layers, kv_heads, _, prompt_len, dim = prompts.kv["k"].shape
  per_slot = -(-(prompt_len + budget) // page_size)
  shape = (layers, kv_heads, slots, per_slot, page_size, dim)
  kv = {
    name: shd.constrain(
      jnp.zeros(shape, prompts.kv[name].dtype), models.POOL_LOGICAL, sharder
    )
    for name in ("k", "v")
  }
  rows = lambda dtype, fill=0: shd.constrain(
    jnp.full((total, budget), fill, dtype), (shd.BATCH, shd.LENGTH), sharder
  )
  zero = jnp.zeros((), jnp.int32)
  return _Pool(
    kv=kv,
    seq_M=jnp.full((slots,), -1, jnp.int32),
    step_M=jnp.zeros((slots,), jnp.int32),
    length_M=jnp.zeros((slots,), jnp.int32),
    logits_MxV=jnp.zeros((slots, cfg.vocab_size), jnp.float32),
    queued=zero,
    tokens_RxN=rows(jnp.int32, pad_id),
    logprobs_RxN=rows(jnp.float32),
    sampling_logprobs_RxN=rows(jnp.float32),
    mask_RxN=rows(bool),
    stats=RolloutStats(zero, zero, zero, zero),
  )


def run(
  spec: DecodeSpec,
  params,
  prompt_UxP,
  prompt_mask_UxP,
  rng,
  max_new_tokens,
  stop_ids,
  logit_bias_V,
  pad_id,
):
  """Decodes `spec.num_samples` completions of each left-padded prompt
  (traced: call it inside `jax.jit` with `spec` static).

  Returns the final `_Pool`: `tokens_RxN`, `logprobs_RxN`,
  `sampling_logprobs_RxN`, `mask_RxN` (prompt-major rows) and `stats`.
  """
  cfg, sharder, num_samples = spec.cfg, spec.sharder, spec.num_samples
  # Cast once, outside the loop: a per-step cast of [D, V] would re-read it.
  head_DxV = models.lm_head(cfg, params).astype(cfg.compute_dtype)
  prompts = _prefill(
    cfg, params, head_DxV, prompt_UxP, prompt_mask_UxP, sharder
  )
  total = prompt_UxP.shape[0] * num_samples
  pool = _empty_pool(
    cfg,
    prompts,
    spec.slots,
    total,
    spec.budget,
    spec.page_size,
    pad_id,
    sharder,
  )
  settings = _Settings(
    cfg,
    params,
    head_DxV,
    rng,
    max_new_tokens,
    stop_ids,
    logit_bias_V,
    spec.sampling,
    sharder,
  )
  sizes = _row_buckets(spec.slots)
  steps = [functools.partial(_decode_step, rows, settings) for rows in sizes]

  def body(pool: _Pool) -> _Pool:
    live = jnp.sum(pool.seq_M >= 0)
    branch = jnp.searchsorted(jnp.asarray(sizes), live, side="left")
    pool, new_kv, write_M, length_M = jax.lax.switch(branch, steps, pool)
    kv = {
      name: ragged.write(pages, new_kv[name], write_M, length_M)
      for name, pages in pool.kv.items()
    }
    return _refill(pool._replace(kv=kv), prompts, num_samples)

  pool = _refill(pool, prompts, num_samples)
  return jax.lax.while_loop(lambda p: jnp.any(p.seq_M >= 0), body, pool)
