"""Stage 2 baseline: uniform OPD (λ = 1), otherwise `opd_rock.py`'s
experiment.

  python launch/train.py --config=configs/opd_uniform.py
  python launch/train.py --config=configs/opd_uniform.py:paper,h100x8

The tracker still runs, so the summary reports the Rock Tokens that uniform
OPD leaves behind (the paper's detection setting).
"""

from rock_jax.config import presets


def get_config(arg=None):
  opd_rock = presets.load_sibling(__file__, "opd_rock.py")
  return opd_rock.experiment(arg, "opd_uniform", lam=1.0)
