"""The rollout loop as it was before the slot pool: the reference of
`tests/test_rollout.py` and the baseline of `benchmarks/rollout_long.py`.

Every row decodes in one `lax.while_loop` until the last row stops, each
step attending over the whole preallocated cache (prompt + budget).
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from rock_jax import models
from rock_jax.models.config import ModelConfig
from rock_jax.sampler.rollout import Rollout
from rock_jax.sampler.sampling import Sampling, get_sampling


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
  return _with_prompt(prompt_BxP, prompt_mask_BxP, final), final.step


def generate(
  cfg,
  params,
  prompt_tokens_BxP,
  prompt_mask_BxP,
  rng,
  max_new_tokens,
  sampling="greedy",
  *,
  num_samples=1,
  stop_token_ids=None,
  logit_bias_V=None,
  pad_token_id=0,
  budget=None,
  sharder=None,
):
  """The static loop on host prompts (repeated per sample here); returns
  `(rollout, steps run)` with `P + budget` columns (default: no bucket)."""
  tokens = np.repeat(np.asarray(prompt_tokens_BxP, np.int32), num_samples, 0)
  mask = np.repeat(np.asarray(prompt_mask_BxP, bool), num_samples, 0)
  stops = cfg.eos_token_id if stop_token_ids is None else stop_token_ids
  if logit_bias_V is None:
    logit_bias_V = np.zeros((cfg.vocab_size,), np.float32)
  return _generate(
    cfg,
    params,
    tokens,
    mask,
    rng,
    np.int32(max_new_tokens),
    np.asarray(tuple(stops) or (-1,), np.int32),
    np.asarray(logit_bias_V, np.float32),
    np.int32(pad_token_id),
    sampling=get_sampling(sampling),
    budget=budget or max_new_tokens,
    sharder=sharder,
  )
