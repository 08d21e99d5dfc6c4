"""The OPD train step (rock_jax.train_step) against a naive reference."""

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from step_helpers import PS, PT, STUDENT, TEACHER, N
from step_helpers import opd_batch as _batch

from rock_jax import models, rock
from rock_jax import sharding as shd
from rock_jax.models import lora
from rock_jax.opd import optim, train_state, train_step
from rock_jax.opd.batch import TeacherScores
from rock_jax.opd.train_step import Sharders, StepConfig, make_train_step


def _setup(lam=0.5, refresh_every=0, rock_k=100, **step_kwargs):
  student = models.init(STUDENT, jax.random.key(0))
  teacher = models.init(TEACHER, jax.random.key(1))
  optimizer = optim.make_optimizer(
    learning_rate=1e-2, total_steps=10, warmup_steps=1
  )
  policy = rock.Policy(
    lam=lam,
    selection=rock.Selection(k=rock_k),
    refresh_every=refresh_every,
  )
  cfg = StepConfig(
    student=STUDENT, teacher=TEACHER, rock=policy, chunk_size=8, **step_kwargs
  )
  return student, teacher, optimizer, cfg


def _completion_log_probs(params, teacher, batch):
  """Both models' full log-softmax at the completion's positions."""
  s_logits = models.apply(
    STUDENT,
    params,
    batch.student_tokens_BxS,
    attention_mask_BxL=batch.student_mask_BxS,
  )[:, PS - 1 : PS - 1 + N]
  t_logits = models.apply(
    TEACHER,
    teacher,
    batch.teacher_tokens_BxU,
    attention_mask_BxL=batch.teacher_mask_BxU,
  )[:, PT - 1 : PT - 1 + N]
  return jax.nn.log_softmax(s_logits), jax.nn.log_softmax(t_logits)


def _naive_loss(params, teacher, batch, rock_mask_V, lam):
  """Full logits, log-softmax and KL written out directly."""
  log_s, log_t = _completion_log_probs(params, teacher, batch)
  kl = jnp.sum(jnp.exp(log_s) * (log_s - log_t), -1)
  emitted = batch.student_tokens_BxS[:, PS:]
  mask = batch.completion_mask_BxN
  w = jnp.where(rock_mask_V[emitted], lam, 1.0) * mask
  return jnp.sum(w * kl) / jnp.sum(mask), kl


def test_one_step_equals_naive_reference():
  student, teacher, optimizer, cfg = _setup(lam=0.5)
  batch = _batch()
  rock_mask = np.zeros(STUDENT.vocab_size, bool)
  rock_mask[np.asarray(batch.completion_BxN)[0, :3]] = True
  state = train_state.create(student, optimizer, STUDENT.vocab_size)
  state = state.replace(rock=state.rock.replace(rock_mask_V=rock_mask))
  step = make_train_step(cfg, optimizer)
  new_state, metrics = step(state, teacher, batch, rock_mask)

  fresh = train_state.create(student, optimizer, STUDENT.vocab_size)
  (loss, kl), grads = jax.jit(jax.value_and_grad(_naive_loss, has_aux=True))(
    student, teacher, batch, rock_mask, 0.5
  )
  s, c = metrics["loss/opd"]
  np.testing.assert_allclose(s / c, loss, rtol=1e-5)
  updates, _ = optimizer.update(grads, fresh.opt_state, student)
  expected = jax.tree.map(lambda p, u: p + u, student, updates)
  jax.tree.map(
    lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6),
    new_state.params,
    expected,
  )
  mask = np.asarray(batch.completion_mask_BxN)
  emitted = np.asarray(batch.completion_BxN)
  np.testing.assert_array_equal(
    new_state.rock.total_count_V,
    np.bincount(emitted[mask], minlength=STUDENT.vocab_size),
  )
  share = metrics["rock/token_share"]
  assert float(share[0]) == rock_mask[emitted][mask].sum()
  assert float(share[1]) == mask.sum()
  kl_sum = np.asarray(kl)[mask].sum()
  np.testing.assert_allclose(metrics["kl/unweighted"][0], kl_sum, rtol=1e-5)
  assert int(new_state.step) == 1


def _count_compiles(fn):
  events = []

  def listener(event, *_, **__):
    if event == "/jax/core/compile/backend_compile_duration":
      events.append(event)

  jax.monitoring.register_event_duration_secs_listener(listener)
  try:
    jax.block_until_ready(fn())
  finally:
    jax.monitoring.unregister_event_duration_listener(listener)
  return len(events)


def test_three_steps_compile_once():
  student, teacher, optimizer, cfg = _setup(refresh_every=1, rock_k=4)
  state = train_state.create(student, optimizer, STUDENT.vocab_size)
  step = make_train_step(cfg, optimizer)
  state, _ = step(state, teacher, _batch(0), None)

  def two_more():
    s = state
    for seed in (1, 2):
      s, m = step(s, teacher, _batch(seed), None)
    return s, m

  assert _count_compiles(two_more) == 0


def test_eight_devices_equal_one_after_three_steps():
  student, teacher, optimizer, cfg = _setup(refresh_every=1, rock_k=4)
  single = train_state.create(student, optimizer, STUDENT.vocab_size)
  step = make_train_step(cfg, optimizer)
  for seed in range(3):
    single, _ = step(single, teacher, _batch(seed), None)

  mesh = shd.make_mesh([("data", 2), ("fsdp", 4)])
  s_sharder = shd.Sharder(mesh, shd.FSDP_RULES)
  t_sharder = shd.Sharder(mesh, shd.REPLICATED_RULES)
  sharded_student = jax.device_put(
    student, models.param_shardings(STUDENT, s_sharder)
  )
  t_shardings = models.param_shardings(TEACHER, t_sharder)
  sharded_teacher = jax.device_put(teacher, t_shardings)
  state = train_state.create(sharded_student, optimizer, STUDENT.vocab_size)
  batch_sharding = s_sharder.sharding((shd.BATCH, shd.LENGTH))
  sharded_step = make_train_step(
    cfg,
    optimizer,
    state_shardings=train_state.shardings(state),
    teacher_shardings=t_shardings,
    batch_sharding=batch_sharding,
    sharders=Sharders(s_sharder, t_sharder),
  )
  for seed in range(3):
    batch = jax.device_put(_batch(seed), batch_sharding)
    state, _ = sharded_step(state, sharded_teacher, batch, None)
  assert not state.params["embedding"].sharding.is_fully_replicated
  # Adam's moments are laid out like the parameters, not replicated.
  moments = [x for x in jax.tree.leaves(state.opt_state) if x.ndim == 4]
  assert moments and all(
    x.sharding.spec == state.params["layers"]["attn"]["q_kernel"].sharding.spec
    for x in moments
    if x.shape == state.params["layers"]["attn"]["q_kernel"].shape
  )
  assert all(x.sharding.shard_shape(x.shape) != x.shape for x in moments)
  jax.tree.map(
    lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5),
    state.params,
    single.params,
  )
  np.testing.assert_array_equal(state.rock.rock_mask_V, single.rock.rock_mask_V)


def test_lam_one_is_uniform_and_freeze_drops_rock_gradient():
  student, teacher, optimizer, _ = _setup()
  batch = _batch()
  everything = np.ones(STUDENT.vocab_size, bool)
  state = train_state.create(student, optimizer, STUDENT.vocab_size)
  state = state.replace(rock=state.rock.replace(rock_mask_V=everything))
  frozen = make_train_step(
    StepConfig(student=STUDENT, teacher=TEACHER, rock=rock.Policy(lam=0.0)),
    optimizer,
  )
  new_state, metrics = frozen(state, teacher, batch, everything)
  assert float(metrics["loss/opd"][0]) == 0.0
  assert float(metrics["train/grad_norm"][0]) == 0.0
  assert float(metrics["train/clipped"][0]) == 0.0
  jax.tree.map(np.testing.assert_array_equal, new_state.params, student)


@pytest.mark.parametrize("clip_norm", [0.0, 1e-6, 1e6])
def test_clipped_counts_steps_whose_gradient_exceeds_the_clip(clip_norm):
  student, teacher, optimizer, _ = _setup()
  state = train_state.create(student, optimizer, STUDENT.vocab_size)
  step = make_train_step(
    StepConfig(student=STUDENT, teacher=TEACHER, clip_norm=clip_norm),
    optimizer,
  )
  _, metrics = step(state, teacher, _batch(), None)
  norm = float(metrics["train/grad_norm"][0])
  assert norm > 1e-6
  want = float(0 < clip_norm < norm)
  assert float(metrics["train/clipped"][0]) == want


def test_vocabulary_mismatch_is_rejected():
  with pytest.raises(
    ValueError, match="vocab_size=97 != student vocab_size=96"
  ):
    StepConfig(student=STUDENT, teacher=TEACHER.replace(vocab_size=97))


def test_stage_one_loss_mixes_forward_kl_and_cross_entropy():
  # kd_ratio = 0.5 with forward KL: the paper's Stage-1 per-token loss.
  student, teacher, optimizer, cfg = _setup(
    lam=1.0, kind="forward_kl", kd_ratio=0.5
  )
  batch = _batch()
  state = train_state.create(student, optimizer, STUDENT.vocab_size)
  _, metrics = make_train_step(cfg, optimizer)(state, teacher, batch, None)

  log_s, log_t = (
    np.asarray(x, np.float64)
    for x in _completion_log_probs(student, teacher, batch)
  )
  forward = np.sum(np.exp(log_t) * (log_t - log_s), -1)
  emitted = np.asarray(batch.completion_BxN)
  ce = -np.take_along_axis(log_s, emitted[..., None], -1)[..., 0]
  mask = np.asarray(batch.completion_mask_BxN)
  expected = np.sum((0.5 * forward + 0.5 * ce) * mask) / mask.sum()
  s, c = metrics["loss/opd"]
  np.testing.assert_allclose(s / c, expected, rtol=1e-5)


def _steps(cfg, optimizer, student, teacher, count=2, **jit_kwargs):
  state = train_state.create(student, optimizer, STUDENT.vocab_size)
  step = make_train_step(cfg, optimizer, **jit_kwargs)
  for seed in range(count):
    state, metrics = step(state, teacher, _batch(seed), None)
  return state, metrics


def test_micro_batches_equal_the_full_batch():
  # SGD with momentum: an update linear in the gradient, so the comparison
  # sees the gradients' float32 round-off as it is (Adam divides each element
  # by its own magnitude, which blows up the relative round-off of gradient
  # elements near zero).
  # Per-sequence normalisation: the denominator counts sequences, which
  # four micro-batches of two split between them.
  student, teacher, _, cfg = _setup(
    refresh_every=1, rock_k=4, normalize="sequence_weights"
  )
  optimizer = optax.sgd(1e-1, momentum=0.9)
  full, full_metrics = _steps(cfg, optimizer, student, teacher)
  cfg_micro = dataclasses.replace(cfg, micro_batch_size=2)
  state, metrics = _steps(cfg_micro, optimizer, student, teacher)
  jax.tree.map(
    lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6),
    (state.params, state.opt_state, state.rock, metrics),
    (full.params, full.opt_state, full.rock, full_metrics),
  )


def test_micro_batch_size_must_divide_the_batch():
  cfg = StepConfig(student=STUDENT, teacher=TEACHER)
  with pytest.raises(ValueError, match="micro_batch_size=3 does not divide"):
    dataclasses.replace(cfg, micro_batch_size=3).micro_batches(8)
  with pytest.raises(ValueError, match="micro_batch_size=-1 must be >= 0"):
    dataclasses.replace(cfg, micro_batch_size=-1)


def test_a_teacher_on_its_own_devices_equals_one_scored_inside():
  # The student trains on devices 0-3; the teacher, on 4-7, scores the
  # batch in micro-batches and sends its completion hidden states and
  # (once) its head: three steps equal the single-device step's.
  student, teacher, optimizer, cfg = _setup(refresh_every=1, rock_k=4)
  cfg = dataclasses.replace(cfg, micro_batch_size=4)
  single = train_state.create(student, optimizer, STUDENT.vocab_size)
  step = make_train_step(cfg, optimizer)
  for seed in range(3):
    single, _ = step(single, teacher, _batch(seed), None)

  devices = jax.devices()
  s_sharder = shd.Sharder(
    shd.make_mesh([("data", 2), ("fsdp", 2)], devices[:4]), shd.FSDP_RULES
  )
  t_sharder = shd.Sharder(
    shd.make_mesh([("data", 4)], devices[4:]), shd.REPLICATED_RULES
  )
  t_params = jax.device_put(teacher, models.param_shardings(TEACHER, t_sharder))
  state = train_state.create(
    jax.device_put(student, models.param_shardings(STUDENT, s_sharder)),
    optimizer,
    STUDENT.vocab_size,
  )
  s_rows = s_sharder.sharding((shd.BATCH, shd.LENGTH))
  t_rows = t_sharder.sharding((shd.BATCH, shd.LENGTH))
  head = jax.device_put(
    models.lm_head(TEACHER, teacher), s_sharder.sharding((shd.EMBED, shd.VOCAB))
  )
  scorer = jax.jit(
    lambda p, b: train_step.score_teacher(cfg, p, b, sharder=t_sharder)
  )
  split_step = make_train_step(
    cfg,
    optimizer,
    state_shardings=train_state.shardings(state),
    teacher_shardings=TeacherScores(s_rows, head.sharding),
    batch_sharding=s_rows,
    sharders=Sharders(s_sharder, t_sharder),
  )
  for seed in range(3):
    hidden = scorer(t_params, jax.device_put(_batch(seed), t_rows))
    assert {d.id for d in hidden.sharding.device_set} == {4, 5, 6, 7}
    scores = TeacherScores(jax.device_put(hidden, s_rows), head)
    batch = jax.device_put(_batch(seed), s_rows)
    state, _ = split_step(state, scores, batch, None)
  assert {d.id for d in state.params["embedding"].sharding.device_set} == {
    0,
    1,
    2,
    3,
  }
  jax.tree.map(
    lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5),
    (state.params, state.rock),
    (single.params, single.rock),
  )


def _flat(tree):
  return np.concatenate([np.ravel(x) for x in jax.tree.leaves(tree)])


def test_stale_samples_get_truncated_importance_weights():
  # The exact loss takes the same weights (the stale end-to-end runs).
  student, teacher, _, cfg = _setup(lam=1.0, kind="pg_reverse_kl")
  batch = _batch(0)
  mask = batch.completion_mask_BxN
  log_s, _ = _completion_log_probs(student, teacher, batch)
  own = np.take_along_axis(
    np.asarray(log_s, np.float64),
    np.asarray(batch.completion_BxN)[..., None],
    -1,
  )[..., 0]
  weights = jnp.ones(mask.shape, jnp.float32)

  @functools.partial(jax.jit, static_argnums=0)
  def accumulate(cap, sampler_logprobs):
    stale = dataclasses.replace(cfg, importance_cap=cap)
    b = dataclasses.replace(batch, sampler_logprobs_BxN=sampler_logprobs)
    return train_step.accumulate_gradients(stale, student, teacher, b, weights)

  def grads(cap, sampler_logprobs):
    return accumulate(cap, jnp.asarray(sampler_logprobs, jnp.float32))

  fresh, fresh_kl, _ = grads(None, own)
  # A sampler that gave the tokens the student's own probabilities: weight 1.
  same, same_kl, metrics = grads(2.0, own)
  np.testing.assert_allclose(_flat(same), _flat(fresh), rtol=1e-4, atol=1e-7)
  np.testing.assert_array_equal(same_kl, fresh_kl)  # the logged loss
  total, count = metrics["importance/weight"]
  np.testing.assert_allclose(total / count, 1.0, rtol=1e-5)
  # Four times less likely under the sampler: the ratio 4 is cut to 2.
  doubled, _, metrics = grads(2.0, own - np.log(4.0))
  np.testing.assert_allclose(
    _flat(doubled), 2 * _flat(fresh), rtol=1e-4, atol=1e-7
  )
  assert metrics["importance/truncated"][0] == mask.sum()
  # Mixed ratios: the logged weights are NumPy's min(2, p / q).
  offsets = np.random.default_rng(0).normal(0, 1, own.shape)
  _, _, metrics = grads(2.0, own + offsets)
  expected = np.where(mask, np.minimum(2.0, np.exp(-offsets)), 0.0)
  np.testing.assert_allclose(
    metrics["importance/weight"][0], expected.sum(), rtol=1e-4
  )
  np.testing.assert_allclose(
    metrics["importance/truncated"][0], (expected == 2.0).sum()
  )


def _lora_setup(dropout=0.0, **step_kwargs):
  spec = lora.LoraSpec(
    rank=4, alpha=8.0, targets=("q", "o", "up"), dropout=dropout
  )
  cfg_lora = STUDENT.replace(lora=spec)
  student, teacher, optimizer, cfg = _setup(**step_kwargs)
  cfg = dataclasses.replace(cfg, student=cfg_lora)
  adapters = models.init_adapters(cfg_lora, jax.random.key(3))
  # Nonzero B, so the adapters' gradients reach A too.
  adapters = jax.tree_util.tree_map_with_path(
    lambda p, x: 0.05 * jax.random.normal(jax.random.key(4), x.shape)
    if p[-1].key.endswith("_lora_b")
    else x,
    adapters,
  )
  return student, adapters, teacher, optimizer, cfg


def test_lora_step_trains_the_adapters_against_the_naive_reference():
  base, adapters, teacher, optimizer, cfg = _lora_setup(lam=1.0)
  batch = _batch()
  state = train_state.create(
    jax.tree.map(jnp.copy, adapters), optimizer, STUDENT.vocab_size
  )
  state = state.replace(step=jnp.ones((), jnp.int32))  # past the warm-up
  fresh = jax.tree.map(jnp.copy, state)
  new_state, metrics = make_train_step(cfg, optimizer)(
    state, teacher, batch, None, base
  )
  assert jax.tree.structure(new_state.params) == jax.tree.structure(adapters)

  def naive(adapters):
    merged = lora.merge(lora.combine(base, adapters), spec=cfg.student.lora)
    mask_V = np.zeros(STUDENT.vocab_size, bool)
    return _naive_loss(merged, teacher, batch, mask_V, 1.0)[0]

  loss, grads = jax.value_and_grad(naive)(adapters)
  s, c = metrics["loss/opd"]
  np.testing.assert_allclose(s / c, loss, rtol=1e-5)
  updates, _ = optimizer.update(grads, fresh.opt_state, adapters)
  want = optax.apply_updates(adapters, updates)
  for got, ref in zip(
    jax.tree.leaves(new_state.params), jax.tree.leaves(want), strict=True
  ):
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-6)


def test_lora_micro_batches_equal_the_whole_batch_and_dropout_is_seeded():
  base, adapters, teacher, optimizer, cfg = _lora_setup(dropout=0.3)
  batch = _batch()

  def steps(cfg):
    """Two steps (the first is the warm-up's, at learning rate 0): the
    adapters and the second step's loss."""
    state = train_state.create(
      jax.tree.map(jnp.copy, adapters), optimizer, STUDENT.vocab_size
    )
    step = make_train_step(cfg, optimizer)
    for _ in range(2):
      state, metrics = step(state, teacher, batch, None, base)
    s, c = metrics["loss/opd"]
    return jax.tree.leaves(state.params), float(s / c)

  (whole, loss), (again, same) = steps(cfg), steps(cfg)
  assert loss == same
  for a, b in zip(whole, again, strict=True):
    np.testing.assert_array_equal(a, b)
  # Another seed draws other dropout masks.
  assert steps(dataclasses.replace(cfg, seed=1))[1] != loss
  plain = dataclasses.replace(
    cfg,
    student=STUDENT.replace(
      lora=dataclasses.replace(cfg.student.lora, dropout=0.0)
    ),
  )
  whole, _ = steps(plain)
  micro, _ = steps(dataclasses.replace(plain, micro_batch_size=2))
  for a, b in zip(whole, micro, strict=True):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
