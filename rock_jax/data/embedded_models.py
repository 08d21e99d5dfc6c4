"""The embedded default's teacher and student, trained here and cached.

No pretrained weights exist for the embedded column-addition task, so the
framework makes its own pair by supervised fine-tuning on the task's worked
solutions: a larger teacher trained to convergence on the teacher's prompt
(which carries the privileged style tag), and a smaller student trained
briefly on the student's prompt, so that it starts clearly worse. Both are
saved as Hugging Face folders (config.json, safetensors, tokenizer), so the
trainer loads them exactly as it loads real models. A folder is written under
a temporary name and renamed when complete (in a `gs://` cache: uploaded with
config.json last); later runs reuse it (the folder name is a fingerprint of
the data and the `SFTSpec`).

Legend: B batch, P prompt length, N solution length, V vocab.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import os
import shutil
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

from rock_jax import metrics, models, optim, storage
from rock_jax.data import (
  builders,
  embedded_builder,
  embedded_task,
  loader,
  prompts,
)
from rock_jax.models import hf

# Longest solution plus eos is 47 tokens at the default difficulty; 64 leaves
# room for the harder settings and is the rollout bucket anyway.
SOLUTION_LEN = 64
MAX_POSITIONS = 256


@dataclasses.dataclass(frozen=True, kw_only=True)
class SFTSpec:
  """A model the embedded task trains with supervised fine-tuning.

  It takes `steps` steps of a warm-up + cosine schedule `schedule_steps`
  long (0: `steps`, the full schedule). A `mixed_prefix` share of its
  solutions open in another style and switch to the tagged one at a random
  slot (trained from the switch on), so a teacher follows its tag whatever
  the student wrote before. `prompt_len` is its prompt width.
  """

  hidden_size: int
  layers: int
  heads: int = 4
  steps: int
  schedule_steps: int = 0
  mixed_prefix: float = 0.0
  batch_size: int = 64
  learning_rate: float = 3e-3
  seed: int = 0
  prompt_len: int = 32


def model_config(spec: SFTSpec, tokenizer) -> models.ModelConfig:
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
  examples, tokenizer, role, prompt_len, styles, rng, mixed_prefix
):
  prompt_format = prompts.PromptFormat(role, tokenizer, prompt_len)
  prompt, prompt_mask = prompt_format.pad(examples)
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
  spec: SFTSpec,
  dataset_dir: str,
  tokenizer,
  role: str,
  styles: tuple[str, ...],
):
  """Supervised fine-tuning from scratch on the task's solutions.

  Args:
    spec: the model and its training.
    dataset_dir: the prepared embedded dataset.
    tokenizer: its tokenizer.
    role: "teacher" (privileged prompts) or "student".
    styles: the styles of the dataset (for `spec.mixed_prefix`).

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
      next(data),
      tokenizer,
      role,
      spec.prompt_len,
      styles,
      rng,
      spec.mixed_prefix,
    )
    params, opt_state, loss = _sft_step(
      cfg, params, opt_state, *batch, optimizer=optimizer
    )
    if step % 25 == 0 or step == spec.steps:
      bar.update(step, {"loss": float(loss)})
    if step % 100 == 0 and step < spec.steps:
      # For logs that are not a terminal (the bar hides itself there).
      bar.write(f"{role}: step {step}/{spec.steps}, loss {float(loss):.4f}")
  bar.close()
  print(
    f"{role}: {spec.steps} steps in {time.time() - start:.0f} s, final "
    f"loss {float(loss):.4f}",
    flush=True,
  )
  return cfg, params


def _fingerprint(*parts) -> str:
  text = json.dumps(parts, sort_keys=True, default=str)
  return hashlib.sha256(text.encode()).hexdigest()[:12]


def _cached_model(folder, train, tokenizer):
  """Returns `folder`, training and saving into it first if absent.

  A local folder is written under a temporary name and renamed; a `gs://`
  one is written locally and uploaded with `config.json` last. Either way a
  folder with `config.json` is complete, and only such a folder is reused.
  """
  if storage.isfile(storage.join(folder, "config.json")):
    return folder
  if storage.is_url(folder):
    # Before the minutes of training: a bucket that refuses writes.
    storage.check_writable(folder, "cache")
    cfg, params = train()
    # What an interrupted upload left (no config.json) is replaced whole.
    storage.rmtree(folder)
    with storage.staged_folder(folder, last=("config.json",)) as local:
      hf.save(cfg, params, local)
      tokenizer.save_pretrained(local)
    return folder
  tmp = f"{folder}.tmp-{os.getpid()}"
  shutil.rmtree(tmp, ignore_errors=True)
  cfg, params = train()
  hf.save(cfg, params, tmp)
  tokenizer.save_pretrained(tmp)
  shutil.rmtree(folder, ignore_errors=True)
  os.replace(tmp, folder)
  return folder


def prepare(
  dataset_dir: str,
  cache: str,
  *,
  teacher: SFTSpec,
  student: SFTSpec,
  difficulty: str = "default",
) -> tuple[str, str]:
  """Trains (or reuses) both models of a prepared embedded dataset.

  Single-process: on a pod, run it once (it takes minutes on a CPU) and
  point the config at the resulting folders.

  Args:
    dataset_dir: the embedded dataset (`builders.prepare("embedded", ...)`),
      a folder or a `gs://` URL (read through its local mirror).
    cache: the cache folder or `gs://` URL; models go to
      `<cache>/models/<role>-<key>`, and a published one is reused.
    teacher, student: the two models' recipes.
    difficulty: the dataset's `embedded_task` difficulty (its styles).

  Returns:
    `(teacher_dir, student_dir)`, URLs under a URL cache.
  """
  tokenizer = embedded_builder.load_tokenizer(dataset_dir)
  styles = embedded_task.get_difficulty(difficulty).styles
  folders = []
  for role, spec in (("teacher", teacher), ("student", student)):
    recipe = dataclasses.asdict(spec)
    # Keyed as before prompt_len joined the spec, so caches stay valid.
    prompt_len = recipe.pop("prompt_len")
    key = _fingerprint(dataset_dir, role, recipe, prompt_len)
    folder = storage.join(cache, "models", f"{role}-{key}")
    if not storage.isfile(storage.join(folder, "config.json")):
      print(
        f"Preparing the embedded {role} (supervised, {spec.steps} steps; "
        f"cached in {folder})",
        flush=True,
      )
    train = functools.partial(
      train_sft, spec, dataset_dir, tokenizer, role, styles
    )
    folders.append(_cached_model(folder, train, tokenizer))
  return tuple(folders)
