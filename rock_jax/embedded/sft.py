"""Supervised fine-tuning of the embedded task's models, stopped on a
measured held-out accuracy.

`train_sft` trains a small Qwen3 decoder from scratch on the task's worked
solutions with the role's prompt, measures its greedy accuracy on held-out
problems, and keeps the first model inside the recipe's accuracy band
(`SFTSpec`). `rock_jax.embedded.models` caches what it returns.

Legend: B batch, P prompt length, N solution length, V vocab.
"""

from __future__ import annotations

import dataclasses
import functools
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

from rock_jax import evaluate, models
from rock_jax import sharding as shd
from rock_jax.data import builders, embedded_task, loader, prompts
from rock_jax.embedded import band
from rock_jax.opd import optim

# Longest solution plus eos is 47 tokens at the default difficulty; 64 leaves
# room for the harder settings and is the rollout bucket anyway.
SOLUTION_LEN = 64
MAX_POSITIONS = 256
# Held-out problems decoded at once when measuring accuracy.
EVAL_BATCH = 256


@dataclasses.dataclass(frozen=True, kw_only=True)
class SFTSpec:
  """A model the embedded task trains with supervised fine-tuning.

  It takes at most `steps` steps of a warm-up + cosine schedule
  `schedule_steps` long (0: `steps`, the full schedule). A `mixed_prefix`
  share of its solutions open in another style and switch to the tagged one
  at a random slot (trained from the switch on), so a teacher follows its
  tag whatever the student wrote before. `prompt_len` is its prompt width.

  The model kept is the first one whose greedy accuracy on the held-out
  problems (the last `eval_examples` of the train split, which supervised
  training never reads) lies in `accuracy_band` (inclusive), measured every
  `eval_every` steps (0: once, after `steps`); `band.select` says how
  it lands there on any CPU, and what it keeps when it cannot.
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
  accuracy_band: tuple[float, float] = (0.0, 1.0)
  eval_every: int = 0
  eval_examples: int = 256


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
    other = dataclasses.replace(problem, style=str(rng.choice(others)))
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
  examples, *, tokenizer, role, prompt_len, styles, rng, mixed_prefix
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


@functools.cache
def _optimizer(learning_rate: float, schedule: int):
  # One object per setting: the jitted step takes it as a static argument,
  # so a new one per model would compile the step again.
  return optim.make_optimizer(
    learning_rate=learning_rate,
    total_steps=schedule,
    warmup_steps=max(1, schedule // 20),
    min_lr=learning_rate / 100,
    weight_decay=0.0,
  )


class _Run:
  """Supervised training from step 0 that can go back to a saved step.

  A step's batch and mixed-prefix draws depend only on the step number, so
  steps replayed from a saved state are the steps first taken.
  """

  def __init__(self, spec, cfg, source, tokenizer, role, styles):
    self.spec, self.cfg, self.role = spec, cfg, role
    self.batch = functools.partial(
      _sft_batch,
      tokenizer=tokenizer,
      role=role,
      prompt_len=spec.prompt_len,
      styles=styles,
      mixed_prefix=spec.mixed_prefix,
    )
    self.optimizer = _optimizer(
      spec.learning_rate, spec.schedule_steps or spec.steps
    )
    self.params = models.init(cfg, jax.random.key(spec.seed))
    self.opt_state = jax.jit(self.optimizer.init)(self.params)
    self.data = loader.Loader(
      source, spec.batch_size, seed=spec.seed, process_index=0, process_count=1
    )
    self.step, self.loss = 0, float("nan")

  def advance(self, to_step: int) -> None:
    while self.step < to_step:
      self.step += 1
      rng = np.random.default_rng((self.spec.seed, self.step))
      batch = self.batch(next(self.data), rng=rng)
      self.params, self.opt_state, loss = _sft_step(
        self.cfg, self.params, self.opt_state, *batch, optimizer=self.optimizer
      )
      if self.step % 100 == 0 and self.step < to_step:
        print(
          f"{self.role}: step {self.step}/{self.spec.steps}, loss "
          f"{float(loss):.4f}",
          flush=True,
        )
    self.loss = float(loss)

  def save(self):
    # Copies: the step donates the arrays (a CPU view would be overwritten).
    return self.step, jax.tree.map(np.array, (self.params, self.opt_state))

  def restore(self, saved) -> None:
    self.step, (params, opt_state) = saved
    self.params, self.opt_state = jax.device_put((params, opt_state))
    self.data.restore({**self.data.state(), "position": self.step})


def _accuracy_fn(spec, cfg, source, tokenizer, role):
  """Greedy accuracy of params on `source` with the role's prompt."""
  # Both roles' prompts are rendered; the other's (unused) gets all the room.
  widths = {r: MAX_POSITIONS - SOLUTION_LEN for r in prompts.ROLES}
  widths[role] = spec.prompt_len
  formats = {r: prompts.PromptFormat(r, tokenizer, widths[r]) for r in widths}
  mesh = shd.make_mesh([(a, 1) for a in shd.MESH_AXES], jax.devices()[:1])
  kwargs = dict(
    role=role,
    **formats,
    max_new_tokens=SOLUTION_LEN,
    batch_size=min(len(source), EVAL_BATCH),
    sharder=shd.Sharder(mesh, shd.get_rules("fsdp")),
  )
  return lambda params: (
    evaluate.accuracy(cfg, params, source, **kwargs).accuracy
  )


def train_sft(
  spec: SFTSpec,
  dataset_dir: str,
  tokenizer,
  role: str,
  styles: tuple[str, ...],
):
  """Supervised fine-tuning from scratch, stopped in the accuracy band.

  Args:
    spec: the model and its training.
    dataset_dir: the prepared embedded dataset.
    tokenizer: its tokenizer.
    role: "teacher" (privileged prompts) or "student".
    styles: the styles of the dataset (for `spec.mixed_prefix`).

  Returns:
    `(cfg, params, record)`; `record` (JSON) says which step was kept (with
    `interpolation` when a mixture of two steps was), its held-out accuracy,
    every measurement, and a `warning` when the band was not reached.
  """
  run, held_out = _open(spec, dataset_dir, tokenizer, role, styles)
  start = time.time()
  record = band.select(
    run, _accuracy_fn(spec, run.cfg, held_out, tokenizer, role), role
  )
  print(
    f"{role}: kept {band.describe(record)} (held-out accuracy "
    f"{record['held_out_accuracy']:.3f}) after {time.time() - start:.0f} s",
    flush=True,
  )
  record.update(
    accuracy_band=list(spec.accuracy_band), held_out_examples=len(held_out)
  )
  return run.cfg, run.params, record


def first_steps(spec, dataset_dir, tokenizer, role, styles, steps: int):
  """The recipe's first `steps` supervised steps, unmeasured.

  Returns `(loss, params)` after them: a probe of the machine's numeric
  path (`rock_jax.study.isa_paths`).
  """
  run, _ = _open(spec, dataset_dir, tokenizer, role, styles)
  run.advance(steps)
  return run.loss, run.params


def _open(spec, dataset_dir, tokenizer, role, styles):
  """A training run of `spec` on the train split less its held-out tail,
  and that tail."""
  cfg = model_config(spec, tokenizer)
  split = builders.open_split(dataset_dir, "train")
  train_end = len(split) - spec.eval_examples
  if train_end < spec.batch_size:
    raise ValueError(
      f"embedded.{role}.eval_examples={spec.eval_examples}: the train split "
      f"has {len(split)} problems, which leaves fewer than "
      f"embedded.{role}.batch_size={spec.batch_size} to train on"
    )
  source = loader.Records(split, 0, train_end)
  run = _Run(spec, cfg, source, tokenizer, role, styles)
  return run, loader.Records(split, train_end)
