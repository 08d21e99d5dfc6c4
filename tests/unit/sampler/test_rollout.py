"""Rollouts (rock_jax.rollout) and sampling settings (rock_jax.sampling)."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import rollout_reference
import scipy.stats
import torch
from hf_helpers import make_model

from rock_jax import models
from rock_jax import sharding as shd
from rock_jax.models import hf
from rock_jax.sampler import rollout
from rock_jax.sampler.sampling import Sampling, row_gumbel

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
  # The sampler itself on many copies of one prompt's next-token logits
  # (`generate` draws through it; its rows are checked against the static
  # loop below).
  tokens, mask = _prompts(batch=1, seed=5)
  logits = models.apply(CFG, params, tokens, attention_mask_BxL=mask)[:, -1]
  bias = np.zeros(CFG.vocab_size, np.float32) if bias is None else bias
  drawn, _ = jax.jit(sampling.sample)(
    jnp.broadcast_to(logits + bias[None], (rows, CFG.vocab_size)),
    jax.random.key(6),
  )
  counts = np.bincount(np.asarray(drawn), minlength=CFG.vocab_size)
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
  stops = dict(stop_token_ids=(7,), logit_bias_V=_eos_bias())
  single = rollout.generate(
    CFG, params, tokens, mask, jax.random.key(8), 7, sampling, **stops
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
    slots=3,
    sharder=sharder,
    **stops,
  )
  assert len(multi.tokens.sharding.device_set) == 8
  assert len(set(np.asarray(single.lengths).tolist())) > 1
  np.testing.assert_array_equal(single.tokens, multi.tokens)
  np.testing.assert_allclose(single.logprobs, multi.logprobs, atol=1e-5)


def test_global_array_prompts_equal_host_prompts(params, monkeypatch):
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

  # Placed at the bucket's width, they are not fetched to the host and put
  # back (the transfer guard does not see CPU fetches, so the host path is
  # made to fail instead).
  def fetched(*_):
    raise AssertionError("placed prompts went through the host")

  monkeypatch.setattr(rollout, "_host_prompts", fetched)
  again = rollout.generate(
    CFG, params, *placed, jax.random.key(1), 5, sampling, sharder=sharder
  )
  np.testing.assert_array_equal(again.tokens, host.tokens)
  monkeypatch.undo()
  # A single-process jax.Array of any width is taken like a host array.
  short = _prompts(batch=8, length=6)
  np.testing.assert_array_equal(
    rollout.generate(
      CFG, params, *jax.device_put(short), jax.random.key(1), 5, sampling
    ).tokens,
    rollout.generate(
      CFG, params, *short, jax.random.key(1), 5, sampling
    ).tokens,
  )


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
  with pytest.raises(ValueError, match=r"slots=0 must be >= 1"):
    rollout.generate(CFG, params, tokens, mask, jax.random.key(0), 2, slots=0)
  with pytest.raises(ValueError, match=r"page_size=0 must be a positive int"):
    rollout.generate(
      CFG, params, tokens, mask, jax.random.key(0), 2, page_size=0
    )
  limit = CFG.max_position_embeddings
  with pytest.raises(
    ValueError,
    match=rf"prompt length 6 \+ max_new_tokens={limit - 5} exceeds the "
    rf"model's max_position_embeddings={limit}",
  ):
    rollout.generate(CFG, params, tokens, mask, jax.random.key(0), limit - 5)


def test_sampler_rows_are_rows_of_one_categorical_draw():
  # Row r of a step is drawn exactly as row r of `jax.random.categorical`
  # over the whole batch, so it does not depend on the rows beside it.
  logits = 3 * jax.random.normal(jax.random.key(0), (9, CFG.vocab_size))
  key = jax.random.fold_in(jax.random.key(1), 4)
  whole = jax.random.categorical(key, logits)
  rows = jnp.array([8, 0, 3, 3])
  part, _ = Sampling(temperature=1.0).sample(logits[rows], key, rows)
  np.testing.assert_array_equal(part, np.asarray(whole)[np.asarray(rows)])
  np.testing.assert_array_equal(
    row_gumbel(jnp.broadcast_to(key, (4,)), rows, CFG.vocab_size),
    np.asarray(jax.random.gumbel(key, logits.shape))[np.asarray(rows)],
  )


def _eos_bias(strength=3.5):
  # Eos likely enough that rows stop at scattered steps inside the budget.
  bias = np.zeros(CFG.vocab_size, np.float32)
  bias[7] = strength
  return bias


def _assert_same_rollout(ours, ref):
  np.testing.assert_array_equal(ours.tokens, ref.tokens)
  np.testing.assert_array_equal(ours.completion_mask, ref.completion_mask)
  np.testing.assert_array_equal(ours.prompt_mask, ref.prompt_mask)
  for name in ("logprobs", "sampling_logprobs"):
    np.testing.assert_allclose(
      getattr(ours, name), getattr(ref, name), rtol=1e-5, atol=1e-5
    )


@pytest.mark.parametrize(
  "sampling, eos, num_samples, slot_counts, page_size",
  [
    ("greedy", 0.2, 1, (None,), 4),
    # 18 sequences: steps compacted to 5 or 4 rows; 4 slots refilled.
    (Sampling(temperature=1.0, top_p=0.9), 3.5, 6, (None, 4), 8),
  ],
)
def test_pool_equals_the_static_loop(
  params, sampling, eos, num_samples, slot_counts, page_size
):
  # Whatever the pool size (refilled slots, compacted steps) and page size,
  # every sequence gets the static loop's tokens and log-probs.
  tokens, mask = _prompts(batch=3, seed=11)
  common = dict(
    num_samples=num_samples, stop_token_ids=(7,), logit_bias_V=_eos_bias(eos)
  )
  ref, _ = rollout_reference.generate(
    CFG, params, tokens, mask, jax.random.key(5), 20, sampling, **common
  )
  # Rows end at different steps (some at the budget).
  assert len(set(np.asarray(ref.lengths).tolist())) > 2
  for slots in slot_counts:
    ours = rollout.generate(
      CFG,
      params,
      tokens,
      mask,
      jax.random.key(5),
      20,
      sampling,
      buckets=None,
      slots=slots,
      page_size=page_size,
      return_stats=True,
      **common,
    )
    ours, stats = ours
    _assert_same_rollout(ours, ref)
    if slots is None and len(ref.lengths) >= 16:
      # The tail ran in compacted steps.
      assert int(stats.row_steps) < len(ref.lengths) * int(stats.steps)


def test_stats_count_live_rows_and_filled_pages(params):
  tokens, mask = _prompts(batch=3, seed=11)
  out, stats = rollout.generate(
    CFG,
    params,
    tokens,
    mask,
    jax.random.key(5),
    20,
    "greedy",
    stop_token_ids=(7,),
    logit_bias_V=_eos_bias(0.2),
    buckets=None,
    page_size=4,
    return_stats=True,
  )
  lengths = np.asarray(out.lengths)
  prompt = mask.sum(1)
  # Row r's step t attends its prompt and t + 1 generated keys.
  filled = sum(
    int(p) * int(n) + int(n) * (int(n) + 1) // 2
    for p, n in zip(prompt, lengths, strict=True)
  )
  assert int(stats.kv_filled) == filled
  assert int(stats.steps) == lengths.max()
  # Whole pages, never the unfilled rest of a slot (prompt + budget).
  assert filled <= int(stats.kv_read) < filled + int(stats.row_steps) * 4
  assert int(stats.row_steps) == 3 * lengths.max()
