"""Stage 2 baseline: uniform OPD (λ = 1), otherwise as `opd_rock.py`.

  python launch/train.py --config=configs/opd_uniform.py
  python launch/train.py --config=configs/opd_uniform.py:paper,h100x8

The tracker still runs, so the summary reports the Rock Tokens that uniform
OPD leaves behind (the paper's detection setting).
"""

from rock_jax.config import presets


def get_config(arg=None):
  c = presets.stage2_config(arg, "opd_uniform")
  c.rock.lam = 1.0
  return c
