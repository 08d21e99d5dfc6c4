"""Stage 2, Rock-Freeze OPD: the student samples, rock tokens get weight λ = 0.

The rock set is the tracker's top K by R(v) after the warm-up, guarded so
that it never holds content: no token of the reference answers
(`rock.protect=auto`) and none whose loss per occurrence is below the mean
over all positions (`rock.min_loss_ratio=1`), which also works on data
without references. `paper_freeze` in the argument runs the paper's
selection instead, without the guards.

Embedded default (any machine, CPU, minutes; teacher and student are trained
and cached on the first run, then OPD runs and summary.json is written):

  python launch/train.py --config=configs/opd_rock.py
  # Its long-tailed variant (rare unit words in every answer):
  python launch/train.py --config=configs/opd_rock.py:long_tail
  # The paper's recipe (on a model pair too: paper_freeze,paper,h100x8):
  python launch/train.py --config=configs/opd_rock.py:paper_freeze

Real models on one TPU v5p-8 VM or one 8xH100 node (`preset[,hardware]`:
presets `qwen3_8b_to_1p7b`, `paper`; hardware `v5p8` (default), `h100x8`):

  python launch/train.py --config=configs/opd_rock.py:qwen3_8b_to_1p7b,h100x8 \
      --config.teacher.path=/models/Qwen3-8B \
      --config.student.path=/ckpt/kd_offpolicy/export \
      --config.data.options=source=/data/openthoughts_math

`paper` is the paper's pair, Qwen3-30B-A3B-Instruct-2507 (MoE teacher,
expert-sharded) -> Qwen3-4B-Instruct-2507; both pairs train with the
paper's Stage-2 settings below (`stage2`).
"""

from rock_jax.config import presets

PAPER_FREEZE = "paper_freeze"


def get_config(arg=None):
  parts = [p.strip() for p in (arg or "").split(",")]
  if PAPER_FREEZE not in parts:
    return experiment(arg, "opd_rock", lam=0.0)
  parts.remove(PAPER_FREEZE)
  c = experiment(",".join(parts), f"opd_rock_{PAPER_FREEZE}", lam=0.0)
  presets.paper_freeze(c)
  return c


def experiment(arg, name: str, lam: float):
  """This file's experiment with rock weight `lam` (opd_uniform.py: 1)."""
  c = presets.base(arg, name)
  if presets.is_model_pair(arg):
    stage2(c)
  # λ on the top-K rock set by R(v), selected after the warm-up.
  c.rock.lam = lam
  return c


def stage2(c):
  """The paper's Stage 2: 4 rollouts per prompt at T = 1 on MATH-format
  problems, 8 sequences per step, lr 2e-6 with warm-up, grad clip 1.0, exact
  reverse KL keyed on the emitted token, the top-100 R(v) set after 500
  uniform steps, token-mean normaliser."""
  # MATH-format JSONL folder (train.jsonl, test.jsonl), given as
  # --config.data.options=source=/data/math.
  c.data.name = "math"
  c.data.student_prompt_len = 1024
  c.data.teacher_prompt_len = 1024
  c.rollout.max_new_tokens = 7168
  c.rollout.num_samples = 4
  c.train.batch_size = 2  # x 4 rollouts: the script's 8 sequences per step.
  c.train.steps = 5000
  c.train.eval_every = 250
  c.train.eval_examples = 500
  c.train.eval_batch_size = 64
  c.train.checkpoint_every = 250
  c.optim.learning_rate = 2e-6
  c.optim.min_lr = 1e-8
  c.optim.warmup_steps = 250
  c.rock.k = 100
  c.rock.warmup_steps = 500
  # 1,024 positions of the 151,936-id vocabulary per loss chunk.
  c.loss.chunk_size = 1024
