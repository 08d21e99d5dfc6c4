"""Student rollouts: `generate` -> `Rollout`.

Legend: B batch (prompts x samples), U distinct prompts, P prompt length,
N new tokens, V vocab.
Prompts are left-padded; internally both the prompt length and the generation
budget are rounded up to a bucket, so calls of different lengths inside one
bucket reuse one compiled program. Decoding runs in `slot_pool.run`:
one compiled loop over a pool of KV slots, nothing leaving the device per
token.
"""

from __future__ import annotations

import functools
from typing import Sequence

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

from rock_jax import sharding as shd
from rock_jax.models.config import ModelConfig
from rock_jax.sampler import slot_pool
from rock_jax.sampler.sampling import Sampling, get_sampling

# Powers of two: at most log2(max length) programs per direction.
DEFAULT_BUCKETS = tuple(2**i for i in range(4, 17))
# Tokens per KV page of the decode pool: a row reads its filled pages only.
DEFAULT_PAGE_SIZE = 128


@flax.struct.dataclass
class Rollout:
  """Prompt followed by completion, `[B, P + N]` each.

  Attributes:
    tokens: prompt (left-padded) then generated ids; after a stop token the
      row holds the pad id.
    prompt_mask: True on real prompt tokens.
    completion_mask: True on generated tokens up to and including the stop
      token.
    logprobs: the model's own log-softmax (temperature 1, unprocessed) of
      each generated token; 0 elsewhere.
    sampling_logprobs: log-probability under the distribution actually
      sampled from (temperature, top-k, top-p, logit bias); 0 for greedy.
  """

  tokens: jax.Array
  prompt_mask: jax.Array
  completion_mask: jax.Array
  logprobs: jax.Array
  sampling_logprobs: jax.Array

  @property
  def lengths(self) -> jax.Array:
    """Number of generated tokens per row (stop token included)."""
    return jnp.sum(self.completion_mask, axis=1)


def bucket(n: int, buckets: Sequence[int] | None) -> int:
  """The smallest bucket >= n (n itself when bucketing is off)."""
  if not buckets:
    return n
  for size in sorted(buckets):
    if size >= n:
      return size
  raise ValueError(
    f"length {n} exceeds the largest bucket {max(buckets)}; pass larger buckets"
  )


@functools.partial(jax.jit, static_argnames=("spec",))
def _generate(
  spec: slot_pool.DecodeSpec,
  params,
  prompt_UxP,
  prompt_mask_UxP,
  rng,
  max_new_tokens,
  stop_ids,
  logit_bias_V,
  pad_id,
):
  completions = slot_pool.run(
    spec,
    params,
    prompt_UxP,
    prompt_mask_UxP,
    rng,
    max_new_tokens,
    stop_ids,
    logit_bias_V,
    pad_id,
  )
  num_samples = spec.num_samples
  repeat = lambda x: jnp.repeat(x, num_samples, axis=0)
  prompt_RxP, prompt_mask_RxP = repeat(prompt_UxP), repeat(prompt_mask_UxP)
  rollout = _with_prompt(prompt_RxP, prompt_mask_RxP, completions)
  return rollout, completions.stats


def _with_prompt(prompt_BxP, prompt_mask_BxP, pool) -> Rollout:
  """The completions behind their prompts, as `[B, P + N]` arrays."""
  batch, prompt_len = prompt_BxP.shape
  pad = jnp.zeros((batch, prompt_len), jnp.float32)
  mask = pool.mask_RxN
  return Rollout(
    tokens=jnp.concatenate(
      [prompt_BxP.astype(jnp.int32), pool.tokens_RxN], axis=1
    ),
    prompt_mask=jnp.concatenate([prompt_mask_BxP, mask & False], axis=1),
    completion_mask=jnp.concatenate([prompt_mask_BxP & False, mask], axis=1),
    logprobs=jnp.concatenate([pad, pool.logprobs_RxN], axis=1),
    sampling_logprobs=jnp.concatenate(
      [pad, pool.sampling_logprobs_RxN], axis=1
    ),
  )


@functools.partial(jax.jit, static_argnames=("start", "width"))
def _crop(rollout: Rollout, start: int, width: int) -> Rollout:
  return jax.tree.map(lambda x: x[:, start : start + width], rollout)


def _host_prompts(tokens, mask, padded_len, pad_token_id, sharder):
  """Left-pads host prompts to the bucket and places them on the rollout
  layout."""
  # Prepared on the host so that new prompt lengths inside a bucket compile
  # nothing (device-side padding would, per shape).
  tokens = np.asarray(tokens, np.int32)
  mask = np.asarray(mask, bool)
  if not mask.any(axis=1).all():
    raise ValueError(
      "every prompt row needs at least one True in "
      "prompt_mask_BxP; empty rows: "
      f"{np.flatnonzero(~mask.any(axis=1)).tolist()}"
    )
  extra = padded_len - tokens.shape[1]
  tokens = np.pad(tokens, ((0, 0), (extra, 0)), constant_values=pad_token_id)
  mask = np.pad(mask, ((0, 0), (extra, 0)))
  return jax.device_put((tokens, mask), _placement(sharder, tokens.shape))


def _placement(sharder, shape) -> jax.sharding.Sharding:
  """Where the decode loop takes `[B, P]` prompts."""
  if sharder is None:
    return jax.sharding.SingleDeviceSharding(jax.devices()[0])
  return sharder.sharding((shd.BATCH, shd.LENGTH), shape)


def _check_counts(
  prompt_mask_BxP, prompt_shape, max_new_tokens, num_samples, slots
):
  """Rejects empty budgets, sample or slot counts and a mask of the wrong
  shape."""
  if max_new_tokens < 1:
    raise ValueError(f"max_new_tokens={max_new_tokens} must be >= 1")
  if num_samples < 1:
    raise ValueError(f"num_samples={num_samples} must be >= 1")
  if slots is not None and slots < 1:
    raise ValueError(
      f"slots={slots} must be >= 1 (None: one slot per sequence)"
    )
  if prompt_mask_BxP.shape != prompt_shape:
    raise ValueError(
      f"prompt_mask_BxP shape {prompt_mask_BxP.shape} != "
      f"prompt_tokens_BxP shape {prompt_shape}"
    )


def _stops_and_bias(cfg: ModelConfig, stop_token_ids, logit_bias_V):
  """The int32 stop ids and the checked float32 [V] bias, defaults filled."""
  stops = cfg.eos_token_id if stop_token_ids is None else stop_token_ids
  # -1 never matches a sampled token; it keeps the stop array non-empty.
  stop_ids = np.asarray(tuple(stops) or (-1,), np.int32)
  if logit_bias_V is None:
    logit_bias_V = np.zeros((cfg.vocab_size,), np.float32)
  logit_bias_V = np.asarray(logit_bias_V, np.float32)
  if logit_bias_V.shape != (cfg.vocab_size,):
    raise ValueError(
      f"logit_bias_V shape {logit_bias_V.shape} != "
      f"(vocab_size,) = ({cfg.vocab_size},)"
    )
  return stop_ids, logit_bias_V


def _bucketed(cfg: ModelConfig, prompt_len, max_new_tokens, buckets):
  """(prompt bucket, generation bucket), checked against the model's length.

  A sequence sits in its slot without padding, so positions only reach
  `prompt_len + max_new_tokens`, whatever the buckets.
  """
  if prompt_len + max_new_tokens > cfg.max_position_embeddings:
    raise ValueError(
      f"prompt length {prompt_len} + max_new_tokens={max_new_tokens} exceeds "
      f"the model's max_position_embeddings={cfg.max_position_embeddings}"
    )
  return bucket(prompt_len, buckets), bucket(max_new_tokens, buckets)


def _placed_prompts(tokens, mask, padded_len, pad_token_id, sharder):
  """Prompts on the rollout layout, padded to their bucket."""
  if _in_place(tokens, padded_len, sharder) and _in_place(
    mask, padded_len, sharder
  ):
    # Already padded and laid out (the training loop's prompts): not
    # fetched to the host and put back.
    return tokens, mask
  if isinstance(tokens, jax.Array) and not tokens.is_fully_addressable:
    # Spans processes (see `sharding.to_global`): nothing can be prepared
    # on this host.
    if tokens.shape[1] != padded_len:
      raise ValueError(
        f"multi-process jax.Array prompts must come padded to their bucket "
        f"(width {tokens.shape[1]} -> {padded_len}); pad them on each host "
        "first"
      )
    return tokens, mask
  return _host_prompts(
    jax.device_get(tokens),
    jax.device_get(mask),
    padded_len,
    pad_token_id,
    sharder,
  )


def _in_place(x, padded_len, sharder) -> bool:
  """Whether `x` is a `jax.Array` of the bucket's width on the rollout
  layout."""
  return (
    isinstance(x, jax.Array)
    and x.shape[1] == padded_len
    and x.sharding.is_equivalent_to(_placement(sharder, x.shape), x.ndim)
  )


def _slot_count(slots, sequences):
  """The pool size: `slots` (at most one per sequence), default all."""
  return sequences if slots is None else min(slots, sequences)


def generate(
  cfg: ModelConfig,
  params,
  prompt_tokens_BxP,
  prompt_mask_BxP,
  rng: jax.Array,
  max_new_tokens: int,
  sampling: str | Sampling = "greedy",
  *,
  num_samples: int = 1,
  stop_token_ids: Sequence[int] | None = None,
  logit_bias_V: jax.Array | None = None,
  pad_token_id: int | None = None,
  buckets: Sequence[int] | None = DEFAULT_BUCKETS,
  crop: bool = True,
  slots: int | None = None,
  page_size: int = DEFAULT_PAGE_SIZE,
  sharder: shd.Sharder | None = None,
  return_stats: bool = False,
):
  """Samples completions for a batch of left-padded prompts.

  Each distinct prompt is prefilled once; its samples then decode in a pool
  of `slots` KV slots, each step computing only the live sequences (in the
  smallest power-of-two batch that holds them) and reading only their
  filled KV pages (`rock_jax.models.kernels.ragged`); a finished sequence's
  slot starts the next queued one. Tokens depend on `rng` alone, not on the
  slot or device count.

  Args:
    cfg, params: the student model.
    prompt_tokens_BxP, prompt_mask_BxP: left-padded prompts (mask True on
      real tokens; every row needs at least one), as host arrays or
      `jax.Array`s of any width; multi-process global arrays
      (`sharding.to_global`) must come padded to their bucket. Arrays of
      the bucket's width on the rollout layout are taken as they are (and
      their rows not checked); others pass through the host.
    rng: key; sequence r's token t is drawn as row r of step t's
      `jax.random.categorical(fold_in(rng, t), logits_RxV)` would be.
    max_new_tokens: generation budget per row.
    sampling: "greedy", "temperature", or a `Sampling(temperature, top_k,
      top_p)`.
    num_samples: completions per prompt; rows come prompt-major
      (prompt 0's samples first).
    stop_token_ids: ids that end a row (kept, inside the completion mask);
      default `cfg.eos_token_id`.
    logit_bias_V: float32 `[V]` added to the logits before sampling at every
      step; -inf bans a token.
    pad_token_id: written after a stop; default `cfg.pad_token_id` or 0.
    buckets: allowed padded lengths for prompts and budgets (None: exact
      lengths, one compilation per shape).
    crop: return exactly `P + max_new_tokens` columns. Shapes inside one
      bucket share the decode program; the crop itself is a trivial slice
      compiled once per output width. With False, arrays keep the bucketed
      width `bucket(P) + bucket(max_new_tokens)` (prompt left-padded further),
      which is what a training loop with static shapes wants.
    slots: KV slots decoding at once (bounds the KV memory); default one per
      sequence (`B * num_samples`).
    page_size: tokens per KV page, the granularity of decode reads.
    sharder: the rollout mesh layout; prompts are split over the batch axes.
    return_stats: also return a `RolloutStats`.

  Returns:
    A `Rollout` of `[B * num_samples, P + max_new_tokens]` arrays (bucketed
    widths with `crop=False`); with `return_stats`, `(rollout, stats)`.
  """
  sampling = get_sampling(sampling)
  batch, prompt_len = prompt_tokens_BxP.shape
  _check_counts(
    prompt_mask_BxP, (batch, prompt_len), max_new_tokens, num_samples, slots
  )
  check_page_size(page_size)
  stop_ids, logit_bias_V = _stops_and_bias(cfg, stop_token_ids, logit_bias_V)
  if pad_token_id is None:
    pad_token_id = cfg.pad_token_id if cfg.pad_token_id is not None else 0
  padded_len, budget = _bucketed(cfg, prompt_len, max_new_tokens, buckets)
  tokens, mask = _placed_prompts(
    prompt_tokens_BxP, prompt_mask_BxP, padded_len, pad_token_id, sharder
  )
  spec = slot_pool.DecodeSpec(
    cfg=cfg,
    sampling=sampling,
    budget=budget,
    num_samples=num_samples,
    slots=_slot_count(slots, batch * num_samples),
    page_size=page_size,
    sharder=sharder,
  )
  rollout, stats = _generate(
    spec,
    params,
    tokens,
    mask,
    rng,
    np.int32(max_new_tokens),
    stop_ids,
    logit_bias_V,
    np.int32(pad_token_id),
  )
  if crop and (padded_len, budget) != (prompt_len, max_new_tokens):
    rollout = _crop(
      rollout, padded_len - prompt_len, prompt_len + max_new_tokens
    )
  return (rollout, stats) if return_stats else rollout


def check_page_size(page_size: int, field: str = "page_size"):
  """Raises a ValueError unless `page_size` is a positive int."""
  if not isinstance(page_size, int) or page_size < 1:
    raise ValueError(f"{field}={page_size!r} must be a positive int")


def lower(
  cfg: ModelConfig,
  params,
  batch_size: int,
  prompt_len: int,
  max_new_tokens: int,
  sampling: str | Sampling = "greedy",
  *,
  num_samples: int = 1,
  slots: int | None = None,
  page_size: int = DEFAULT_PAGE_SIZE,
  buckets: Sequence[int] | None = DEFAULT_BUCKETS,
  sharder: shd.Sharder | None = None,
):
  """`generate`'s program lowered for abstract arguments, nothing allocated.

  `params` may be `jax.ShapeDtypeStruct`s (with shardings); the result's
  `.compile().memory_analysis()` is the rollout's memory per device, KV
  pool included. `batch_size` counts prompts.
  """
  padded_len, budget = _bucketed(cfg, prompt_len, max_new_tokens, buckets)
  shape = (batch_size, padded_len)
  rows = (
    None
    if sharder is None
    else sharder.sharding((shd.BATCH, shd.LENGTH), shape)
  )
  stop_ids, logit_bias_V = _stops_and_bias(cfg, None, None)
  spec = slot_pool.DecodeSpec(
    cfg=cfg,
    sampling=get_sampling(sampling),
    budget=budget,
    num_samples=num_samples,
    slots=_slot_count(slots, batch_size * num_samples),
    page_size=page_size,
    sharder=sharder,
  )
  return _generate.lower(
    spec,
    params,
    jax.ShapeDtypeStruct(shape, jnp.int32, sharding=rows),
    jax.ShapeDtypeStruct(shape, jnp.bool_, sharding=rows),
    jax.random.key(0),
    np.int32(max_new_tokens),
    stop_ids,
    logit_bias_V,
    np.int32(0),
  )
