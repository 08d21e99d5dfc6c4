"""The embedded default's teacher and student, trained here and cached.

No pretrained weights exist for the embedded column-addition task, so the
framework makes its own pair by supervised fine-tuning on the task's worked
solutions: a larger teacher trained to convergence on the teacher's prompt
(which carries the privileged style tag), and a smaller student trained
briefly on the student's prompt, so that it starts clearly worse. Both are
saved as Hugging Face folders (config.json, safetensors, tokenizer), so the
trainer loads them exactly as it loads real models. A folder is written under
a temporary name and renamed when complete; later runs reuse it.

Legend: B batch, P prompt length, N solution length, V vocab.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import shutil
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from rock_jax import metrics, models, optim
from rock_jax.data import (
  builders,
  embedded_builder,
  embedded_task,
  loader,
  prompts,
  tokenization,
)
from rock_jax.models import hf

# Longest solution plus eos is 47 tokens at the default difficulty; 64 leaves
# room for the harder settings and is the rollout bucket anyway.
SOLUTION_LEN = 64
MAX_POSITIONS = 256


def model_config(
  spec: ml_collections.ConfigDict, tokenizer
) -> models.ModelConfig:
  """A small Qwen3 decoder sized by `spec` for the task's vocabulary."""
  hidden = spec.hidden_size
  # SwiGLU's usual 8/3 expansion, rounded to a multiple of 16.
  mlp = -(-8 * hidden // 3 // 16) * 16
  return models.ModelConfig(
    model_type="qwen3",
    vocab_size=len(tokenizer),
    hidden_size=hidden,
    intermediate_size=mlp,
    num_layers=spec.layers,
    num_heads=spec.heads,
    num_kv_heads=spec.heads,
    head_dim=hidden // spec.heads,
    qk_norm=True,
    tie_word_embeddings=True,
    max_position_embeddings=MAX_POSITIONS,
    eos_token_id=(tokenizer.eos_token_id,),
    pad_token_id=tokenizer.pad_token_id,
  )


def _solution_ids(example, tokenizer, styles, rng, mixed_prefix):
  """A worked solution's ids and which of them are trained.

  With probability `mixed_prefix` the solution opens in another style and
  switches to the tagged one at a random slot, and only the part from the
  switch on is trained: the teacher learns to follow its tag whatever style
  the text so far (a student's sample, in OPD) is in.
  """
  problem = embedded_task.problem_of(example)
  segments = embedded_task.solution_segments(problem)
  start = 0
  others = [s for s in styles if s != problem.style]
  if others and rng.random() < mixed_prefix:
    other = embedded_task.Problem(problem.operands, str(rng.choice(others)))
    slots = [i for i, (_, is_slot) in enumerate(segments) if is_slot]
    start = int(rng.choice(slots))
    segments = embedded_task.solution_segments(other)[:start] + segments[start:]
  ids, trained = [], []
  for i, (text, _) in enumerate(segments):
    piece = prompts.encode(text, tokenizer)
    ids += piece
    trained += [i >= start] * len(piece)
  return ids + [tokenizer.eos_token_id], trained + [True]


def _sft_batch(
  examples, tokenizer, side, prompt_len, styles, rng, mixed_prefix
):
  batch = prompts.make_prompt_batch(
    examples,
    student_tokenizer=tokenizer,
    teacher_tokenizer=tokenizer,
    student_len=prompt_len,
    teacher_len=prompt_len,
  )
  if side == "teacher":
    prompt, prompt_mask = batch.teacher_tokens_BxP, batch.teacher_mask_BxP
  else:
    prompt, prompt_mask = batch.student_tokens_BxP, batch.student_mask_BxP
  shape = (len(examples), SOLUTION_LEN)
  solution = np.full(shape, tokenizer.pad_token_id, np.int32)
  real = np.zeros(shape, bool)
  trained = np.zeros(shape, bool)
  for b, example in enumerate(examples):
    ids, mask = _solution_ids(example, tokenizer, styles, rng, mixed_prefix)
    if len(ids) > SOLUTION_LEN:
      raise ValueError(
        f"solution of {example.uid!r} has {len(ids)} tokens, more than "
        f"{SOLUTION_LEN}; use an easier embedded.difficulty"
      )
    solution[b, : len(ids)] = ids
    real[b, : len(ids)] = True
    trained[b, : len(ids)] = mask
  return (
    np.concatenate([prompt, solution], axis=1),
    np.concatenate([prompt_mask, real], axis=1),
    trained,
  )


@functools.partial(
  jax.jit, static_argnames=("cfg", "optimizer"), donate_argnums=(1, 2)
)
def _sft_step(
  cfg, params, opt_state, tokens_BxL, mask_BxL, target_mask_BxN, *, optimizer
):
  n = target_mask_BxN.shape[1]
  prompt_len = tokens_BxL.shape[1] - n
  targets_BxN = tokens_BxL[:, prompt_len:]

  def loss_fn(params):
    logits = models.apply(cfg, params, tokens_BxL, attention_mask_BxL=mask_BxL)
    logits_BxNxV = logits[:, prompt_len - 1 : prompt_len - 1 + n]
    ce_BxN = optax.softmax_cross_entropy_with_integer_labels(
      logits_BxNxV, targets_BxN
    )
    weight = target_mask_BxN.astype(jnp.float32)
    return jnp.sum(ce_BxN * weight) / jnp.maximum(weight.sum(), 1.0)

  loss, grads = jax.value_and_grad(loss_fn)(params)
  updates, opt_state = optimizer.update(grads, opt_state, params)
  return optax.apply_updates(params, updates), opt_state, loss


def train_sft(
  spec: ml_collections.ConfigDict,
  dataset_dir: str,
  tokenizer,
  side: str,
  prompt_len: int,
  styles: tuple[str, ...],
  desc: str,
):
  """Supervised fine-tuning from scratch on the task's solutions.

  Args:
    spec: an `embedded.teacher` / `embedded.student` config.
    dataset_dir: the prepared embedded dataset.
    tokenizer: its tokenizer.
    side: "teacher" (privileged prompts) or "student".
    prompt_len: prompt width.
    styles: the styles of the dataset (for `spec.mixed_prefix`).
    desc: label of the progress log.

  Returns:
    `(cfg, params)`.
  """
  cfg = model_config(spec, tokenizer)
  params = models.init(cfg, jax.random.key(spec.seed))
  schedule = spec.schedule_steps or spec.steps
  optimizer = optim.make_optimizer(
    learning_rate=spec.learning_rate,
    total_steps=schedule,
    warmup_steps=max(1, schedule // 20),
    min_lr=spec.learning_rate / 100,
    weight_decay=0.0,
  )
  opt_state = jax.jit(optimizer.init)(params)
  data = loader.Loader(
    builders.open_split(dataset_dir, "train"),
    spec.batch_size,
    seed=spec.seed,
    process_index=0,
    process_count=1,
  )
  bar = metrics.ProgressBar(spec.steps, keys=("loss",), process_index=0)
  start = time.time()
  for step in range(1, spec.steps + 1):
    rng = np.random.default_rng((spec.seed, step))
    batch = _sft_batch(
      next(data), tokenizer, side, prompt_len, styles, rng, spec.mixed_prefix
    )
    params, opt_state, loss = _sft_step(
      cfg, params, opt_state, *batch, optimizer=optimizer
    )
    if step % 25 == 0 or step == spec.steps:
      bar.update(step, {"loss": float(loss)})
    if step % 100 == 0 and step < spec.steps:
      # For logs that are not a terminal (the bar hides itself there).
      bar.write(f"{desc}: step {step}/{spec.steps}, loss {float(loss):.4f}")
  bar.close()
  print(
    f"{desc}: {spec.steps} steps in {time.time() - start:.0f} s, final "
    f"loss {float(loss):.4f}",
    flush=True,
  )
  return cfg, params


def _fingerprint(*parts) -> str:
  text = json.dumps(parts, sort_keys=True, default=str)
  return hashlib.sha256(text.encode()).hexdigest()[:12]


def _cached_model(folder, train, tokenizer):
  """Returns `folder`, training and saving into it first if absent."""
  if os.path.isfile(os.path.join(folder, "config.json")):
    return folder
  tmp = f"{folder}.tmp-{os.getpid()}"
  shutil.rmtree(tmp, ignore_errors=True)
  cfg, params = train()
  hf.save(cfg, params, tmp)
  tokenizer.save_pretrained(tmp)
  shutil.rmtree(folder, ignore_errors=True)
  os.replace(tmp, folder)
  return folder


def prepare_data(config: ml_collections.ConfigDict, cache: str) -> str:
  """Prepares the embedded dataset of `config.embedded`; returns its folder."""
  e = config.embedded
  return builders.prepare(
    "embedded",
    config.data.data_dir or os.path.join(cache, "data"),
    difficulty=e.difficulty,
    train_size=e.train_size,
    test_size=e.test_size,
  )


def prepare(config: ml_collections.ConfigDict, cache: str):
  """Prepares the embedded data and trains (or reuses) both models.

  Single-process: on a pod, run it once (it takes minutes on a CPU) and
  point the config at the resulting folders.

  Args:
    config: the training config (`embedded`, `data` prompt lengths).
    cache: the cache folder (`config_lib.cache_dir`).

  Returns:
    `(dataset_dir, teacher_dir, student_dir)`.
  """
  e = config.embedded
  dataset_dir = prepare_data(config, cache)
  tokenizer = tokenization.load_tokenizer(
    os.path.join(dataset_dir, embedded_builder.TOKENIZER_DIR)
  )
  folders = []
  for side, spec, prompt_len in (
    ("teacher", e.teacher, config.data.teacher_prompt_len),
    ("student", e.student, config.data.student_prompt_len),
  ):
    key = _fingerprint(dataset_dir, side, spec.to_dict(), prompt_len)
    folder = os.path.join(cache, "models", f"{side}-{key}")
    if not os.path.isfile(os.path.join(folder, "config.json")):
      print(
        f"Preparing the embedded {side} (supervised, {spec.steps} steps; "
        f"cached in {folder})",
        flush=True,
      )
    train = functools.partial(
      train_sft,
      spec,
      dataset_dir,
      tokenizer,
      side,
      prompt_len,
      embedded_task.get_difficulty(e.difficulty).styles,
      side,
    )
    folders.append(_cached_model(folder, train, tokenizer))
  return dataset_dir, *folders
