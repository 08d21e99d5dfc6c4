"""Student rollouts: prefill, then a compiled `lax.while_loop` KV-cache decode.

Legend: B batch (prompts x samples), P prompt length, N new tokens, V vocab,
D model width, L positions of one model call (P in prefill, then 1).
Prompts are left-padded; internally both the prompt length and the generation
budget are rounded up to a bucket, so calls of different lengths inside one
bucket reuse one compiled program. Nothing leaves the device per token.
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple, Sequence

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

from rock_jax import models
from rock_jax import sharding as shd
from rock_jax.models.config import ModelConfig
from rock_jax.sampling import Sampling, get_sampling

# Powers of two: at most log2(max length) programs per direction.
DEFAULT_BUCKETS = tuple(2**i for i in range(4, 17))


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


class _DecodeState(NamedTuple):
  """The decode loop's carry; column `step` of the [B, N] arrays is next."""

  step: jax.Array
  tokens_BxN: jax.Array
  logprobs_BxN: jax.Array
  sampling_logprobs_BxN: jax.Array
  mask_BxN: jax.Array
  done_B: jax.Array
  cache: Any
  logits_BxV: jax.Array


def _last_logits(hidden_BxLxD, head_DxV):
  """float32 next-token logits from the last position's hidden state."""
  return jnp.einsum(
    "bd,dv->bv",
    hidden_BxLxD[:, -1],
    head_DxV,
    preferred_element_type=jnp.float32,
  )


def _prefill(
  cfg, params, head_DxV, prompt_BxP, prompt_mask_BxP, pad_id, budget, sharder
):
  """Runs the prompts into a fresh cache: the state before the first token."""
  batch, prompt_len = prompt_BxP.shape
  cache = models.init_cache(cfg, batch, prompt_len + budget, sharder=sharder)
  hidden, cache = models.apply(
    cfg,
    params,
    prompt_BxP,
    attention_mask_BxL=prompt_mask_BxP,
    cache=cache,
    return_hidden=True,
    sharder=sharder,
  )
  zeros = jnp.zeros((batch, budget), jnp.float32)
  return _DecodeState(
    jnp.zeros((), jnp.int32),
    jnp.full((batch, budget), pad_id, jnp.int32),
    zeros,
    zeros,
    jnp.zeros((batch, budget), bool),
    jnp.zeros((batch,), bool),
    cache,
    _last_logits(hidden, head_DxV),
  )


def _with_prompt(prompt_BxP, prompt_mask_BxP, state: _DecodeState) -> Rollout:
  """The final loop state behind its prompts, as `[B, P + N]` arrays."""
  batch, prompt_len = prompt_BxP.shape
  pad = jnp.zeros((batch, prompt_len), jnp.float32)
  mask = state.mask_BxN
  return Rollout(
    tokens=jnp.concatenate(
      [prompt_BxP.astype(jnp.int32), state.tokens_BxN], axis=1
    ),
    prompt_mask=jnp.concatenate([prompt_mask_BxP, mask & False], axis=1),
    completion_mask=jnp.concatenate([prompt_mask_BxP & False, mask], axis=1),
    logprobs=jnp.concatenate([pad, state.logprobs_BxN], axis=1),
    sampling_logprobs=jnp.concatenate(
      [pad, state.sampling_logprobs_BxN], axis=1
    ),
  )


@functools.partial(
  jax.jit, static_argnames=("cfg", "sampling", "budget", "sharder")
)
def _generate(
  cfg: ModelConfig,
  params,
  prompt_BxP,
  prompt_mask_BxP,
  rng,
  max_new_tokens,
  stop_ids,
  logit_bias_V,
  pad_id,
  *,
  sampling: Sampling,
  budget: int,
  sharder,
):
  # Cast once, outside the loop: a per-step cast of [D, V] would re-read it.
  head_DxV = models.lm_head(cfg, params).astype(cfg.compute_dtype)
  init = _prefill(
    cfg, params, head_DxV, prompt_BxP, prompt_mask_BxP, pad_id, budget, sharder
  )

  def cond(state: _DecodeState):
    return (state.step < max_new_tokens) & ~jnp.all(state.done_B)

  def body(state: _DecodeState):
    step, logits = state.step, state.logits_BxV
    token, sampled = sampling.sample(
      logits + logit_bias_V[None], jax.random.fold_in(rng, step)
    )
    raw = jnp.take_along_axis(
      jax.nn.log_softmax(logits, axis=-1), token[:, None], axis=-1
    )[:, 0]
    live = ~state.done_B
    token = jnp.where(live, token, pad_id)
    tokens = state.tokens_BxN.at[:, step].set(token)
    logprobs = state.logprobs_BxN.at[:, step].set(jnp.where(live, raw, 0.0))
    sampled_lp = state.sampling_logprobs_BxN.at[:, step].set(
      jnp.where(live, sampled, 0.0)
    )
    mask = state.mask_BxN.at[:, step].set(live)
    done = state.done_B | jnp.any(token[:, None] == stop_ids[None], axis=1)
    hidden, cache = models.apply(
      cfg,
      params,
      token[:, None],
      attention_mask_BxL=live[:, None],
      cache=state.cache,
      return_hidden=True,
      sharder=sharder,
    )
    return _DecodeState(
      step + 1,
      tokens,
      logprobs,
      sampled_lp,
      mask,
      done,
      cache,
      _last_logits(hidden, head_DxV),
    )

  final = jax.lax.while_loop(cond, body, init)
  return _with_prompt(prompt_BxP, prompt_mask_BxP, final)


@functools.partial(jax.jit, static_argnames=("start", "width"))
def _crop(rollout: Rollout, start: int, width: int) -> Rollout:
  return jax.tree.map(lambda x: x[:, start : start + width], rollout)


def _host_prompts(tokens, mask, num_samples, padded_len, pad_token_id, sharder):
  """Repeats host prompts per sample, left-pads them to the bucket, places
  them on the rollout layout."""
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
  tokens = np.repeat(tokens, num_samples, axis=0)
  mask = np.repeat(mask, num_samples, axis=0)
  extra = padded_len - tokens.shape[1]
  tokens = np.pad(tokens, ((0, 0), (extra, 0)), constant_values=pad_token_id)
  mask = np.pad(mask, ((0, 0), (extra, 0)))
  placement = (
    jax.devices()[0]
    if sharder is None
    else sharder.sharding((shd.BATCH, shd.LENGTH), tokens.shape)
  )
  return jax.device_put((tokens, mask), placement)


def _check_counts(prompt_mask_BxP, prompt_shape, max_new_tokens, num_samples):
  """Rejects empty budgets or sample counts and a mask of the wrong shape."""
  if max_new_tokens < 1:
    raise ValueError(f"max_new_tokens={max_new_tokens} must be >= 1")
  if num_samples < 1:
    raise ValueError(f"num_samples={num_samples} must be >= 1")
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
  """(prompt bucket, generation bucket), checked against the model's length."""
  padded_len = bucket(prompt_len, buckets)
  budget = bucket(max_new_tokens, buckets)
  if padded_len + budget > cfg.max_position_embeddings:
    raise ValueError(
      f"prompt bucket {padded_len} + generation bucket {budget} exceeds "
      f"max_position_embeddings={cfg.max_position_embeddings}"
    )
  return padded_len, budget


def _placed_prompts(
  tokens, mask, num_samples, padded_len, pad_token_id, sharder
):
  """Prompts on the rollout layout: global arrays as given, host ones built."""
  if not isinstance(tokens, jax.Array):
    return _host_prompts(
      tokens, mask, num_samples, padded_len, pad_token_id, sharder
    )
  # Already global (possibly spanning processes, see `sharding.to_global`):
  # nothing can be prepared on this host.
  prompt_len = tokens.shape[1]
  if padded_len != prompt_len or num_samples != 1:
    raise ValueError(
      f"jax.Array prompts must come bucketed (width {prompt_len} -> "
      f"{padded_len}) with num_samples=1 (got {num_samples}); repeat and "
      "pad them on the host first"
    )
  return tokens, mask


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
  sharder: shd.Sharder | None = None,
) -> Rollout:
  """Samples completions for a batch of left-padded prompts.

  Args:
    cfg, params: the student model.
    prompt_tokens_BxP, prompt_mask_BxP: left-padded prompts (mask True on
      real tokens; every row needs at least one), as host arrays, or as
      global `jax.Array`s already padded to their bucket (multi-process
      batches from `sharding.to_global`; then num_samples must be 1).
    rng: key; tokens depend only on it, not on the device count.
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
    sharder: the rollout mesh layout; prompts are split over the batch axes.

  Returns:
    A `Rollout` of `[B * num_samples, P + max_new_tokens]` arrays (bucketed
    widths with `crop=False`).
  """
  sampling = get_sampling(sampling)
  batch, prompt_len = prompt_tokens_BxP.shape
  _check_counts(
    prompt_mask_BxP, (batch, prompt_len), max_new_tokens, num_samples
  )
  stop_ids, logit_bias_V = _stops_and_bias(cfg, stop_token_ids, logit_bias_V)
  if pad_token_id is None:
    pad_token_id = cfg.pad_token_id if cfg.pad_token_id is not None else 0
  padded_len, budget = _bucketed(cfg, prompt_len, max_new_tokens, buckets)
  tokens, mask = _placed_prompts(
    prompt_tokens_BxP,
    prompt_mask_BxP,
    num_samples,
    padded_len,
    pad_token_id,
    sharder,
  )
  rollout = _generate(
    cfg,
    params,
    tokens,
    mask,
    rng,
    np.int32(max_new_tokens),
    stop_ids,
    logit_bias_V,
    np.int32(pad_token_id),
    sampling=sampling,
    budget=budget,
    sharder=sharder,
  )
  if not crop or (padded_len, budget) == (prompt_len, max_new_tokens):
    return rollout
  return _crop(rollout, padded_len - prompt_len, prompt_len + max_new_tokens)


def lower(
  cfg: ModelConfig,
  params,
  batch_size: int,
  prompt_len: int,
  max_new_tokens: int,
  sampling: str | Sampling = "greedy",
  *,
  buckets: Sequence[int] | None = DEFAULT_BUCKETS,
  sharder: shd.Sharder | None = None,
):
  """`generate`'s program lowered for abstract arguments, nothing allocated.

  `params` may be `jax.ShapeDtypeStruct`s (with shardings); the result's
  `.compile().memory_analysis()` is the rollout's memory per device, KV
  cache included. `batch_size` counts sequences (prompts x samples).
  """
  padded_len, budget = _bucketed(cfg, prompt_len, max_new_tokens, buckets)
  shape = (batch_size, padded_len)
  rows = (
    None
    if sharder is None
    else sharder.sharding((shd.BATCH, shd.LENGTH), shape)
  )
  stop_ids, logit_bias_V = _stops_and_bias(cfg, None, None)
  return _generate.lower(
    cfg,
    params,
    jax.ShapeDtypeStruct(shape, jnp.int32, sharding=rows),
    jax.ShapeDtypeStruct(shape, jnp.bool_, sharding=rows),
    jax.random.key(0),
    np.int32(max_new_tokens),
    stop_ids,
    logit_bias_V,
    np.int32(0),
    sampling=get_sampling(sampling),
    budget=budget,
    sharder=sharder,
  )
