"""Stage 2, Rock-Freeze OPD: the student samples, rock tokens get weight λ = 0.

Embedded default (any machine, CPU, minutes; teacher and student are trained
and cached on the first run, then OPD runs and summary.json is written):

  python launch/train.py --config=configs/opd_rock.py
  # Its long-tailed variant (rare unit words in every answer):
  python launch/train.py --config=configs/opd_rock.py:long_tail

Real models on one TPU v5p-8 VM or one 8xH100 node (`preset[,hardware]`:
presets `qwen3_8b_to_1p7b`, `paper`; hardware `v5p8` (default), `h100x8`):

  python launch/train.py --config=configs/opd_rock.py:qwen3_8b_to_1p7b,h100x8 \
      --config.teacher.path=/models/Qwen3-8B \
      --config.student.path=/ckpt/kd_offpolicy/export \
      --config.data.options=source=/data/openthoughts_math

`paper` is the paper's pair, Qwen3-30B-A3B-Instruct-2507 (MoE teacher,
expert-sharded) -> Qwen3-4B-Instruct-2507, with its Stage-2 settings: 4
rollouts per prompt at T = 1, lr 2e-6 with warm-up, 8 sequences per step,
grad clip 1.0, exact reverse KL, λ = 0 on the top-100 R(v) set keyed on the
emitted token, token-mean normaliser.
"""

from rock_jax.config import presets


def get_config(arg=None):
  c = presets.stage2_config(arg, "opd_rock")
  c.rock.lam = 0.0
  return c
