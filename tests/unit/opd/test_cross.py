"""The cross-tokenizer step on tiny random models at the published Qwen3 and
DeepSeek-V3 vocabularies: against today's step with one tokenizer, and
against float64 NumPy references across the two."""

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from cross_helpers import TEXTS

from rock_jax import models, rock
from rock_jax.data import retokenize, tokenization
from rock_jax.opd import cross, optim, train_state, train_step
from rock_jax.opd.batch import OPDBatch, TeacherScores, with_teacher_tokens

B, P, N = 4, 5, 24


def _config(vocab, hidden):
  return models.ModelConfig(
    model_type="qwen3",
    vocab_size=vocab,
    hidden_size=hidden,
    intermediate_size=2 * hidden,
    num_layers=1,
    num_heads=2,
    num_kv_heads=1,
    head_dim=8,
    qk_norm=True,
    tie_word_embeddings=hidden == 16,
  )


@pytest.fixture(scope="module")
def tokenizers(real_tokenizers):
  return {
    name: tokenization.load_tokenizer(path)
    for name, path in real_tokenizers.items()
  }


def _student_batch(tokenizer, vocab):
  """Completions the student could have sampled (texts in its own tokens,
  half of them ended), random prompts and sampler log-probs."""
  rng = np.random.default_rng(0)
  texts = [TEXTS[k] for k in ("digits", "emoji", "latex", "cjk")]
  completion = np.full((B, N), tokenizer.pad_token_id, np.int32)
  mask = np.zeros((B, N), bool)
  for b, text in enumerate(texts):
    ids = tokenizer.encode(text, add_special_tokens=False)[: N - 1]
    ids += [tokenizer.eos_token_id] if b % 2 else []
    completion[b, : len(ids)], mask[b, : len(ids)] = ids, True
  prompt = rng.integers(0, vocab, (B, P)).astype(np.int32)
  prompt_mask = np.ones((B, P), bool)
  prompt_mask[1, :2] = False
  batch = OPDBatch(
    student_tokens_BxS=np.concatenate([prompt, completion], 1),
    student_mask_BxS=np.concatenate([prompt_mask, mask], 1),
    teacher_tokens_BxU=np.concatenate([prompt, completion], 1),
    teacher_mask_BxU=np.concatenate([prompt_mask, mask], 1),
    completion_mask_BxN=mask,
    sampler_logprobs_BxN=-rng.random((B, N)).astype(np.float32),
  )
  return batch, (prompt, prompt_mask)


def _scores(cfg, teacher, batch, retok):
  groups = cross.teacher_groups(retok.teacher_groups_V, cfg.teacher.vocab_size)
  hidden, span_logprob, log_z, log_groups = train_step.score_teacher(
    cfg, teacher, batch, groups=groups
  )
  head = cross.mapped_head(
    models.lm_head(cfg.teacher, teacher), retok.vocab_map_V
  )
  return TeacherScores(
    hidden, head, span_logprob, retok.student_groups_V, log_z, log_groups
  )


def _step(cfg, state, teacher, batch):
  optimizer = optim.make_optimizer(
    learning_rate=1e-2, total_steps=10, warmup_steps=1
  )
  state = train_state.create(state, optimizer, cfg.student.vocab_size)
  grads, per_token, _ = jax.jit(
    functools.partial(train_step.accumulate_gradients, cfg)
  )(state.params, teacher, batch, batch.completion_mask_BxN * 1.0)
  new, _ = train_step.make_train_step(cfg, optimizer)(
    state, teacher, batch, None
  )
  return per_token, grads, new.params


def test_one_tokenizer_gives_todays_losses_and_update(tokenizers):
  q = tokenizers["qwen3"]
  student_cfg = _config(len(q), 16)
  teacher_cfg = _config(len(q), 24)
  student = models.init(student_cfg, jax.random.key(0))
  teacher = models.init(teacher_cfg, jax.random.key(1))
  batch, prompt = _student_batch(q, len(q))
  policy = rock.Policy(lam=0.5, selection=rock.Selection(k=50))
  today = train_step.StepConfig(
    student=student_cfg,
    teacher=teacher_cfg,
    rock=policy,
    chunk_size=32,
  )
  expected = _step(today, student, teacher, batch)

  retok = retokenize.Retokenizer(q, q, N)
  aligned = retok(batch.completion_BxN, batch.completion_mask_BxN)
  assert aligned.exact_BxN.sum() == batch.completion_mask_BxN.sum()
  crossed = with_teacher_tokens(batch, prompt, aligned)
  # In micro-batches: the update is still the whole batch's.
  cfg = dataclasses.replace(today, cross_tokenizer=True, micro_batch_size=2)
  got = _step(cfg, student, _scores(cfg, teacher, crossed, retok), crossed)
  mask = np.asarray(batch.completion_mask_BxN)
  # Each KL is a sum of terms p·(log p_s − log p_t) whose logs are of order
  # log V: float32 round-off is eps·log V, whatever the KL's own size.
  round_off = np.finfo(np.float32).eps * np.log(len(q))
  np.testing.assert_allclose(
    got[0][mask], expected[0][mask], rtol=0, atol=round_off
  )
  jax.tree.map(
    functools.partial(np.testing.assert_allclose, rtol=1e-5, atol=1e-8),
    got[1:],
    expected[1:],
  )


def np_log_softmax(z):
  z = np.asarray(z, np.float64)
  z = z - z.max(-1, keepdims=True)
  return z - np.log(np.exp(z).sum(-1, keepdims=True))


def test_qwen3_student_deepseek_teacher_matches_float64(tokenizers):
  q, d = tokenizers["qwen3"], tokenizers["deepseek_v3"]
  student_cfg, teacher_cfg = _config(len(q), 16), _config(len(d), 24)
  student = models.init(student_cfg, jax.random.key(2))
  teacher = models.init(teacher_cfg, jax.random.key(3))
  batch, _ = _student_batch(q, len(q))
  t_prompt = np.random.default_rng(1).integers(0, len(d), (B, P + 2))
  t_prompt_mask = np.ones((B, P + 2), bool)
  retok = retokenize.Retokenizer(q, d, 2 * N)
  aligned = retok(batch.completion_BxN, batch.completion_mask_BxN)
  batch = with_teacher_tokens(batch, (t_prompt, t_prompt_mask), aligned)
  cfg = train_step.StepConfig(
    student=student_cfg,
    teacher=teacher_cfg,
    chunk_size=16,
    cross_tokenizer=True,
    micro_batch_size=2,
  )
  scores = _scores(cfg, teacher, batch, retok)
  _, per_token, _ = train_step.accumulate_gradients(
    cfg, student, scores, batch, jnp.ones((B, N))
  )

  # The reference: full logits of both models over their own sequences.
  s_logp = np_log_softmax(
    models.apply(
      student_cfg,
      student,
      batch.student_tokens_BxS,
      attention_mask_BxL=batch.student_mask_BxS,
    )[:, P - 1 : -1]
  )
  m = 2 * N
  t_logits = np.asarray(
    models.apply(
      teacher_cfg,
      teacher,
      batch.teacher_tokens_BxU,
      attention_mask_BxL=batch.teacher_mask_BxU,
    )[:, -m - 1 : -1],
    np.float64,
  )
  t_logp = np_log_softmax(t_logits)
  shared = retok.vocab_map_V >= 0
  teacher_groups = np.asarray(
    cross.teacher_groups(retok.teacher_groups_V, len(d))
  )
  t_ids = aligned.teacher_ids_BxM
  mask = aligned.loss_mask_BxN
  for b in range(B):
    spans = aligned.span_BxN[b]
    for t in np.flatnonzero(mask[b]):
      k, j = spans[t], aligned.teacher_index_BxN[b, t]
      if aligned.start_BxN[b, t]:
        # Reverse KL over the comparable ids and the first-byte groups of
        # the rest, each side's own masses.
        ls, lt_all = s_logp[b, t], t_logp[b, j]
        lt = lt_all[np.maximum(retok.vocab_map_V, 0)]
        expected = np.sum(np.exp(ls[shared]) * (ls - lt)[shared])
        for g in range(256):
          in_s = retok.student_groups_V == g
          if in_s.any():
            mass_s = np.exp(ls[in_s]).sum()
            mass_t = np.exp(lt_all[teacher_groups == g]).sum()
            expected += mass_s * np.log(mass_s / mass_t)
      else:
        in_span = spans == k
        teacher_lp = sum(
          t_logp[b, i, t_ids[b, i]]
          for i in np.flatnonzero(aligned.teacher_span_BxM[b] == k)
        )
        student_lp = batch.sampler_logprobs_BxN[b][in_span].sum()
        expected = (student_lp - teacher_lp) / in_span.sum()
      np.testing.assert_allclose(
        per_token[b, t], expected, rtol=2e-4, atol=2e-5
      )
  assert 0 < aligned.exact_BxN.sum() < aligned.start_BxN.sum() < mask.sum()
