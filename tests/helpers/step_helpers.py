"""A tiny OPD pair and a fixed batch for the step and analysis tests."""

import numpy as np

from rock_jax import models
from rock_jax.opd.batch import OPDBatch

STUDENT = models.ModelConfig(
  model_type="qwen3",
  vocab_size=96,
  hidden_size=32,
  intermediate_size=64,
  num_layers=2,
  num_heads=4,
  num_kv_heads=2,
  head_dim=8,
  qk_norm=True,
  tie_word_embeddings=True,
)
TEACHER = STUDENT.replace(
  hidden_size=48, intermediate_size=96, tie_word_embeddings=False
)
PS, PT, N, B = 5, 7, 6, 8


def opd_batch(seed=0):
  """Random prompts and completions with left padding and early stops."""
  rng = np.random.default_rng(seed)
  completion = rng.integers(0, STUDENT.vocab_size, (B, N))
  s_prompt = rng.integers(0, STUDENT.vocab_size, (B, PS))
  t_prompt = rng.integers(0, STUDENT.vocab_size, (B, PT))
  s_mask = np.ones((B, PS + N), bool)
  s_mask[1, :2] = False  # a left-padded student prompt
  t_mask = np.ones((B, PT + N), bool)
  t_mask[2, :3] = False
  c_mask = np.ones((B, N), bool)
  c_mask[3, 4:] = False  # a row that stopped early
  c_mask[5, 1:] = False
  s_mask[:, PS:] = c_mask
  t_mask[:, PT:] = c_mask
  return OPDBatch(
    student_tokens_BxS=np.concatenate([s_prompt, completion], 1).astype(
      np.int32
    ),
    student_mask_BxS=s_mask,
    teacher_tokens_BxU=np.concatenate([t_prompt, completion], 1).astype(
      np.int32
    ),
    teacher_mask_BxU=t_mask,
    completion_mask_BxN=c_mask,
  )
