"""Cross-tokenizer OPD against same-tokenizer OPD: one lockstep step each.

A Qwen3-tokenizer student (the published tokenizer, 151,669 ids) samples 8
completions of 512 tokens (real text: digits, LaTeX, markdown, CJK, emoji).
Same-tokenizer OPD scores them with a Qwen3-tokenizer teacher inside the
train step. Cross-tokenizer OPD hands them to a DeepSeek-V3-tokenizer
teacher (128,815 ids): the host re-tokenises and aligns the batch
(`rock_jax.data.retokenize`), the teacher scores its own tokens
(`score_teacher`), and the step trains on the aligned terms. Both models are
random Qwen3 decoders (D 256, 4 layers, F 768, 4/2 heads of 64, the
`model_step.py` shape), float32, on the machine's CPU.

Timed as interleaved medians in one process, each step to completion:
  cross_over_same: cross-tokenizer step (host re-tokenisation + teacher
    scoring + update) over same-tokenizer step (goal <= 1.15).
  retokenize_s, cross_s, same_s: median seconds of the host work alone and
    of both steps.
  teacher_width: teacher.completion_len as a run would set it for this
    text (its longest teacher tokenisation rounded up to 128).
  exact_share, start_share: the shares of completion positions that are
    exact and that open a span.

  python benchmarks/cross_tokenizer.py   # needs ../shared/tokenizers
"""

import argparse
import functools
import gzip
import os
import pathlib
import shutil
import tempfile

import jax
import numpy as np
from _timing import interleaved_medians, print_result
from model_step import CFG

from rock_jax import models
from rock_jax.data import retokenize, tokenization
from rock_jax.opd import cross, optim, train_state, train_step
from rock_jax.opd.batch import OPDBatch, TeacherScores, with_teacher_tokens

B, P, N = 8, 64, 512
ROOT = pathlib.Path(__file__).resolve().parents[1]
TEXT = (
  "The sum 12345 + 678 = 13023, so $\\frac{a^2}{b_1} + \\sqrt{x}$ holds.\n"
  "# Steps\n\n- **first** `x = 1`\n- 中文的句子，测试一下。 😀👍🏽 done.\n"
)


def add_tokenizers_argument(parser: argparse.ArgumentParser) -> None:
  """`--tokenizers`: the published tokenizers' folder ($ROCK_JAX_TOKENIZERS,
  else ../shared/tokenizers beside the repository)."""
  parser.add_argument(
    "--tokenizers",
    default=os.environ.get(
      "ROCK_JAX_TOKENIZERS", str(ROOT.parent / "shared" / "tokenizers")
    ),
  )


def tokenizers(source: pathlib.Path, folder: str):
  """The published Qwen3 and DeepSeek-V3 tokenizers, decompressed."""
  out = {}
  for name in ("qwen3", "deepseek_v3"):
    os.makedirs(os.path.join(folder, name))
    shutil.copy(source / name / "tokenizer_config.json", folder + "/" + name)
    with gzip.open(source / name / "tokenizer.json.gz", "rb") as f:
      data = f.read()
    with open(os.path.join(folder, name, "tokenizer.json"), "wb") as f:
      f.write(data)
    out[name] = tokenization.load_tokenizer(os.path.join(folder, name))
  return out


def student_batch(q) -> OPDBatch:
  """8 completions of N Qwen3 tokens after random prompts."""
  rng = np.random.default_rng(0)
  ids = q.encode(TEXT * 40, add_special_tokens=False)
  completion = np.stack([ids[7 * b : 7 * b + N] for b in range(B)])
  prompt = rng.integers(0, len(q), (B, P))
  tokens = np.concatenate([prompt, completion], 1).astype(np.int32)
  mask = np.ones(tokens.shape, bool)
  return OPDBatch(
    student_tokens_BxS=tokens,
    student_mask_BxS=mask,
    teacher_tokens_BxU=tokens,
    teacher_mask_BxU=mask,
    completion_mask_BxN=np.ones((B, N), bool),
    sampler_logprobs_BxN=-rng.random((B, N)).astype(np.float32),
  )


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument("--repeats", type=int, default=5)
  add_tokenizers_argument(parser)
  args = parser.parse_args()
  with tempfile.TemporaryDirectory() as tmp:
    toks = tokenizers(pathlib.Path(args.tokenizers), tmp)
  q, d = toks["qwen3"], toks["deepseek_v3"]
  student_cfg = CFG.replace(vocab_size=len(q))
  same_teacher_cfg = student_cfg.replace(tie_word_embeddings=False)
  cross_teacher_cfg = same_teacher_cfg.replace(vocab_size=len(d))
  student = models.init(student_cfg, jax.random.key(0))
  same_teacher = models.init(same_teacher_cfg, jax.random.key(1))
  cross_teacher = models.init(cross_teacher_cfg, jax.random.key(1))
  optimizer = optim.make_optimizer(
    learning_rate=1e-4, total_steps=100, warmup_steps=1
  )
  state = train_state.create(student, optimizer, student_cfg.vocab_size)
  batch = jax.device_put(student_batch(q))
  teacher_prompt = (
    batch.teacher_tokens_BxU[:, :P],
    batch.student_mask_BxS[:, :P],
  )

  same_cfg = train_step.StepConfig(
    student=student_cfg, teacher=same_teacher_cfg
  )
  cross_cfg = train_step.StepConfig(
    student=student_cfg, teacher=cross_teacher_cfg, cross_tokenizer=True
  )
  # Not donating the state: every round steps from the same one.
  same_step, cross_step = (
    jax.jit(
      functools.partial(train_step.train_step, cfg=c, optimizer=optimizer)
    )
    for c in (same_cfg, cross_cfg)
  )
  host = jax.device_get((batch.completion_BxN, batch.completion_mask_BxN))
  # teacher.completion_len as a run would set it for this text: its longest
  # teacher tokenisation, rounded up to 128.
  longest = retokenize.Retokenizer(q, d, 2 * N)(*host).teacher_mask_BxM
  width = -(-int(longest.sum(1).max()) // 128) * 128
  retok = retokenize.Retokenizer(q, d, width)
  groups = cross.teacher_groups(retok.teacher_groups_V, len(d))
  # The groups as an argument, as the pipeline passes them (a constant would
  # be sorted by XLA's constant folding at compile time).
  score = jax.jit(
    lambda p, b, g: train_step.score_teacher(cross_cfg, p, b, None, g)
  )
  head = cross.mapped_head(
    models.lm_head(cross_teacher_cfg, cross_teacher), retok.vocab_map_V
  )
  student_groups = jax.device_put(retok.student_groups_V)

  def aligned():
    return with_teacher_tokens(batch, teacher_prompt, retok(*host))

  def cross_update():
    crossed = aligned()
    hidden, span_logprob, log_z, log_groups = score(
      cross_teacher, crossed, groups
    )
    scores = TeacherScores(
      hidden, head, span_logprob, student_groups, log_z, log_groups
    )
    return cross_step(state, scores, crossed, None)[1]

  def same_update():
    return same_step(state, same_teacher, batch, None)[1]

  times = interleaved_medians(
    {"retokenize": aligned, "cross": cross_update, "same": same_update},
    repeats=args.repeats,
  )
  aligned_host = retok(*host)
  print_result(
    {
      "cross_over_same": times["cross"] / times["same"],
      "retokenize_s": times["retokenize"],
      "cross_s": times["cross"],
      "same_s": times["same"],
      "exact_share": float(aligned_host.exact_BxN.mean()),
      "start_share": float(aligned_host.start_BxN.mean()),
      "teacher_width": width,
      "shape": f"{B} x {N} completion tokens, D {CFG.hidden_size}, "
      f"{CFG.num_layers} layers, V {len(q)} / {len(d)}",
      "device": jax.devices()[0].device_kind,
    }
  )


if __name__ == "__main__":
  main()
