"""Rollouts (rock_jax.rollout) and sampling settings (rock_jax.sampling)."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats
import torch
from hf_helpers import make_model

from rock_jax import models, rollout
from rock_jax import sharding as shd
from rock_jax.models import hf
from rock_jax.sampling import Sampling

CFG = models.ModelConfig(
  model_type="qwen3",
  vocab_size=300,
  hidden_size=64,
  intermediate_size=128,
  num_layers=2,
  num_heads=4,
  num_kv_heads=2,
  head_dim=16,
  qk_norm=True,
  eos_token_id=(7,),
  pad_token_id=0,
)


@pytest.fixture(scope="module")
def params():
  return models.init(CFG, jax.random.key(0))


def _prompts(batch=3, length=6, seed=0):
  rng = np.random.default_rng(seed)
  tokens = rng.integers(10, CFG.vocab_size, (batch, length)).astype(np.int32)
  mask = np.ones((batch, length), bool)
  mask[1:2, :2] = False  # one left-padded row when batch > 1
  tokens[~mask] = 0
  return tokens, mask


def _argmax_by_recompute(params, tokens, mask, steps, stop_ids=()):
  """Reference: full forward over the whole sequence at every step."""
  tokens, mask = np.array(tokens), np.array(mask)
  done = np.zeros(len(tokens), bool)
  for _ in range(steps):
    logits = np.asarray(
      models.apply(CFG, params, tokens, attention_mask_BxL=mask)
    )[:, -1]
    nxt = np.where(done, 0, logits.argmax(-1))
    tokens = np.concatenate([tokens, nxt[:, None]], 1)
    mask = np.concatenate([mask, ~done[:, None]], 1)
    done |= np.isin(nxt, stop_ids)
  return tokens


def test_greedy_equals_argmax_by_full_recomputation(params):
  tokens, mask = _prompts()
  out = rollout.generate(
    CFG, params, tokens, mask, jax.random.key(1), 9, stop_token_ids=()
  )
  assert out.tokens.shape == (3, 6 + 9)
  np.testing.assert_array_equal(
    out.tokens, _argmax_by_recompute(params, tokens, mask, 9)
  )
  assert np.asarray(out.completion_mask)[:, 6:].all()
  assert not np.asarray(out.completion_mask)[:, :6].any()
  np.testing.assert_array_equal(out.prompt_mask[:, :6], mask)


def test_logprobs_equal_log_softmax_of_a_full_forward(params):
  tokens, mask = _prompts(seed=1)
  out = rollout.generate(
    CFG,
    params,
    tokens,
    mask,
    jax.random.key(2),
    8,
    Sampling(temperature=0.8, top_k=50),
    stop_token_ids=(),
  )
  full_mask = np.asarray(out.prompt_mask | out.completion_mask)
  logits = models.apply(CFG, params, out.tokens, attention_mask_BxL=full_mask)
  logp = np.asarray(jax.nn.log_softmax(logits[:, :-1]))
  chosen = np.take_along_axis(logp, np.asarray(out.tokens)[:, 1:, None], -1)[
    ..., 0
  ]
  gen = np.asarray(out.completion_mask)[:, 1:]
  np.testing.assert_allclose(
    np.asarray(out.logprobs)[:, 1:][gen], chosen[gen], atol=1e-5
  )
  # The sampler's own log-probs follow the processed distribution.
  processed = jax.nn.log_softmax(
    Sampling(temperature=0.8, top_k=50).processed_logits(
      logits[:, 5].astype(jnp.float32)
    )
  )
  np.testing.assert_allclose(
    out.sampling_logprobs[:, 6],
    np.take_along_axis(
      np.asarray(processed), np.asarray(out.tokens)[:, 6:7], -1
    )[:, 0],
    atol=1e-5,
  )


def test_stop_token_ends_rows_and_masks_the_rest(params):
  tokens, mask = _prompts(seed=2)
  free = rollout.generate(
    CFG, params, tokens, mask, jax.random.key(3), 10, stop_token_ids=()
  )
  stop = int(np.asarray(free.tokens)[0, 8])  # row 0's third generated token
  out = rollout.generate(
    CFG, params, tokens, mask, jax.random.key(3), 10, stop_token_ids=(stop,)
  )
  row = np.asarray(out.tokens)[0]
  first = 6 + int(np.argmax(row[6:] == stop))
  np.testing.assert_array_equal(
    row[: first + 1], np.asarray(free.tokens)[0, : first + 1]
  )
  assert (row[first + 1 :] == 0).all()
  cmask = np.asarray(out.completion_mask)[0]
  assert cmask[6 : first + 1].all() and not cmask[first + 1 :].any()
  assert int(out.lengths[0]) == first + 1 - 6
  assert (np.asarray(out.logprobs)[0, first + 1 :] == 0).all()


def test_default_stop_is_config_eos(params):
  tokens, mask = _prompts(seed=3)
  bias = np.zeros(CFG.vocab_size, np.float32)
  bias[7] = 1e4  # force eos as the first token
  out = rollout.generate(
    CFG, params, tokens, mask, jax.random.key(4), 5, logit_bias_V=bias
  )
  np.testing.assert_array_equal(out.lengths, [1, 1, 1])
  assert (np.asarray(out.tokens)[:, 6] == 7).all()


def test_matches_transformers_greedy_generate(tmp_path):
  model = make_model(
    "qwen3", str(tmp_path), seed=3, eos_token_id=5, pad_token_id=0
  )
  cfg, p = hf.load(str(tmp_path))
  tokens, mask = _prompts(seed=4)
  ours = rollout.generate(cfg, p, tokens, mask, jax.random.key(0), 12)
  with torch.no_grad():
    ref = model.generate(
      input_ids=torch.from_numpy(tokens.astype(np.int64)),
      attention_mask=torch.from_numpy(mask.astype(np.int64)),
      max_new_tokens=12,
      do_sample=False,
      eos_token_id=5,
      pad_token_id=0,
    )
  ref = ref.numpy()
  assert ref.shape[1] <= 6 + 12
  ours = np.asarray(ours.tokens)[:, : ref.shape[1]]
  np.testing.assert_array_equal(ours, ref)


def _one_step_counts(params, sampling, bias=None, rows=6000):
  tokens, mask = _prompts(batch=1, seed=5)
  out = rollout.generate(
    CFG,
    params,
    tokens,
    mask,
    jax.random.key(6),
    1,
    sampling,
    num_samples=rows,
    stop_token_ids=(),
    logit_bias_V=bias,
  )
  counts = np.bincount(np.asarray(out.tokens)[:, -1], minlength=CFG.vocab_size)
  logits = models.apply(CFG, params, tokens, attention_mask_BxL=mask)[:, -1]
  return counts, logits


def _chi_square_p(counts, logits, sampling):
  # float64 softmax of the processed logits, as the reference distribution.
  z = np.asarray(sampling.processed_logits(logits), np.float64)[0]
  probs = np.exp(z - z.max())
  probs /= probs.sum()
  support = probs > 0
  assert counts[~support].sum() == 0
  expected = probs * counts.sum()
  # Pool rare outcomes so every chi-square cell expects at least 5 draws.
  big = expected >= 5
  f_obs = np.append(counts[big], counts[support & ~big].sum())
  f_exp = np.append(expected[big], expected[support & ~big].sum())
  keep = f_exp > 0
  return scipy.stats.chisquare(f_obs[keep], f_exp[keep]).pvalue


@pytest.mark.parametrize(
  "sampling",
  [
    Sampling(temperature=1.0),
    Sampling(temperature=0.5),
    Sampling(temperature=1.0, top_k=4),
    Sampling(temperature=0.7, top_p=0.6),
    Sampling(temperature=1.0, top_k=20, top_p=0.9),
  ],
)
def test_sample_frequencies_match_the_distribution(params, sampling):
  # Make the tiny model's next-token distribution peaked enough to test.
  sharp = jax.tree.map(lambda x: x * 3, params)
  counts, logits = _one_step_counts(sharp, sampling)
  assert _chi_square_p(counts, logits, sampling) > 1e-3


def test_chi_square_detects_the_wrong_temperature(params):
  sharp = jax.tree.map(lambda x: x * 3, params)
  counts, logits = _one_step_counts(sharp, Sampling(temperature=1.0))
  assert _chi_square_p(counts, logits, Sampling(temperature=0.8)) < 1e-6


def test_banned_token_never_appears(params):
  sharp = jax.tree.map(lambda x: x * 3, params)
  counts, _ = _one_step_counts(sharp, Sampling(temperature=1.0))
  favourite = int(np.argmax(counts))
  bias = np.zeros(CFG.vocab_size, np.float32)
  bias[favourite] = -np.inf
  banned, _ = _one_step_counts(sharp, Sampling(temperature=1.0), bias)
  assert counts[favourite] > 100 and banned[favourite] == 0
  tokens, mask = _prompts()
  greedy = rollout.generate(
    CFG, params, tokens, mask, jax.random.key(0), 6, stop_token_ids=()
  )
  target = int(np.asarray(greedy.tokens)[0, 6])
  bias = np.zeros(CFG.vocab_size, np.float32)
  bias[target] = -np.inf
  banned = rollout.generate(
    CFG,
    params,
    tokens,
    mask,
    jax.random.key(0),
    6,
    stop_token_ids=(),
    logit_bias_V=bias,
  )
  assert target not in np.asarray(banned.tokens)[:, 6:]


def test_one_and_eight_devices_give_identical_tokens(params):
  tokens, mask = _prompts(batch=8, seed=7)
  sampling = Sampling(temperature=1.0, top_p=0.95)
  single = rollout.generate(
    CFG, params, tokens, mask, jax.random.key(8), 7, sampling, stop_token_ids=()
  )
  sharder = shd.Sharder(
    shd.make_mesh([("data", 2), ("fsdp", 4)]), shd.FSDP_RULES
  )
  sharded_params = jax.device_put(params, models.param_shardings(CFG, sharder))
  multi = rollout.generate(
    CFG,
    sharded_params,
    tokens,
    mask,
    jax.random.key(8),
    7,
    sampling,
    stop_token_ids=(),
    sharder=sharder,
  )
  assert len(multi.tokens.sharding.device_set) == 8
  np.testing.assert_array_equal(single.tokens, multi.tokens)
  np.testing.assert_allclose(single.logprobs, multi.logprobs, atol=1e-5)


def test_global_array_prompts_equal_host_prompts(params):
  # The trainer assembles prompts from process-local rows
  # (`sharding.to_global`) and passes the global arrays as they are.
  tokens, mask = _prompts(batch=8, length=16, seed=3)
  sharder = shd.Sharder(
    shd.make_mesh([("data", 2), ("fsdp", 4)]), shd.FSDP_RULES
  )
  sampling = Sampling(temperature=1.0)
  host = rollout.generate(
    CFG, params, tokens, mask, jax.random.key(1), 5, sampling, sharder=sharder
  )
  placed = shd.to_global((tokens, mask), sharder.sharding((shd.BATCH, None)))
  device = rollout.generate(
    CFG, params, *placed, jax.random.key(1), 5, sampling, sharder=sharder
  )
  np.testing.assert_array_equal(device.tokens, host.tokens)
  np.testing.assert_array_equal(shd.to_local(device.tokens), host.tokens)
  short = shd.to_global(_prompts(batch=8, length=6), placed[0].sharding)
  with pytest.raises(ValueError, match=r"bucketed \(width 6 -> 16\)"):
    rollout.generate(CFG, params, *short, jax.random.key(1), 5)


def _count_compiles(fn):
  events = []
  listener = lambda event, *_, **__: (
    events.append(event)
    if (event == "/jax/core/compile/backend_compile_duration")
    else None
  )
  jax.monitoring.register_event_duration_secs_listener(listener)
  try:
    fn()
  finally:
    jax.monitoring.unregister_event_duration_listener(listener)
  return len(events)


def test_new_lengths_inside_a_bucket_do_not_recompile(params):
  gen = functools.partial(
    rollout.generate,
    CFG,
    params,
    rng=jax.random.key(0),
    stop_token_ids=(),
    crop=False,
  )
  first = gen(*_prompts(length=5), max_new_tokens=9)
  assert first.tokens.shape == (3, 16 + 16)
  compiles = _count_compiles(
    lambda: jax.block_until_ready(gen(*_prompts(length=11), max_new_tokens=14))
  )
  assert compiles == 0
  assert (
    _count_compiles(lambda: gen(*_prompts(length=17), max_new_tokens=9)) >= 1
  )  # next bucket


def test_bad_arguments_are_named(params):
  tokens, mask = _prompts()
  with pytest.raises(ValueError, match="max_new_tokens=0"):
    rollout.generate(CFG, params, tokens, mask, jax.random.key(0), 0)
  with pytest.raises(ValueError, match=r"logit_bias_V shape \(5,\)"):
    rollout.generate(
      CFG, params, tokens, mask, jax.random.key(0), 2, logit_bias_V=np.zeros(5)
    )
  empty = mask.copy()
  empty[2] = False
  with pytest.raises(ValueError, match=r"empty rows: \[2\]"):
    rollout.generate(CFG, params, tokens, empty, jax.random.key(0), 2)
  with pytest.raises(ValueError, match="unknown sampling 'nucleus'"):
    rollout.generate(CFG, params, tokens, mask, jax.random.key(0), 2, "nucleus")
  with pytest.raises(ValueError, match=r"Sampling.top_p=0 must be in"):
    Sampling(top_p=0)
