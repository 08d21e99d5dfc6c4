"""Stage 1, off-policy KD: the teacher samples, the student learns its answers.

Per token 0.5 x forward KL(teacher || student) + 0.5 x cross-entropy on the
teacher's sampled tokens (KDFlow's kd_ratio 0.5), teacher sampling at T 0.6,
top-p 0.95, lr 2e-5 with warm-up (the paper's Stage 1).

  python launch/train.py --config=configs/kd_offpolicy.py
  python launch/train.py --config=configs/kd_offpolicy.py:paper,v5p8 \
      --config.teacher.path=/models/Qwen3-30B-A3B-Instruct-2507 \
      --config.student.path=/models/Qwen3-4B-Instruct-2507 \
      --config.data.options=source=/data/openthoughts_math

The exported student (<workdir>/export) is the `student.path` of Stage 2.
"""

from rock_jax.config import presets


def get_config(arg=None):
  # opd_rock.py's data, lengths and evaluation; Stage 1's own sampling,
  # loss and schedule below.
  opd_rock = presets.load_sibling(__file__, "opd_rock.py")
  c = opd_rock.experiment(arg, "kd_offpolicy", lam=1.0)
  c.stage = "kd"
  c.loss.kind = "forward_kl"
  c.loss.kd_ratio = 0.5
  c.rollout.temperature = 0.6
  c.rollout.top_p = 0.95
  c.rollout.num_samples = 1
  if presets.is_model_pair(arg):
    c.train.batch_size = 128
    c.train.steps = 157  # 20k teacher answers, one epoch.
    c.optim.learning_rate = 2e-5
    c.optim.min_lr = 1e-8
    c.optim.warmup_steps = 8
    c.rollout.max_new_tokens = 16384
  return c
