"""The Rock-Token analyses of a finished run, with one report.

Embedded default (after `python launch/train.py --config=configs/opd_rock.py`,
which writes ./workdir/opd_rock):

  python launch/analyze.py --config=configs/analyze_rock.py

Another run: `--config.workdir=<its workdir>`; real models take the same
`preset[,hardware]` argument and model flags as the training config:

  python launch/analyze.py --config=configs/analyze_rock.py:paper,h100x8 \
      --config.workdir=/ckpt/opd_uniform_paper \
      --config.teacher.path=/models/Qwen3-30B-A3B-Instruct-2507 \
      --config.data.options=source=/data/math500

The student is <workdir>/export; persistence compares it with the run's
earliest export_step_<N> (`--config.train.export_every` at training time) or
`--config.analysis.early`; the freeze comparison reads the finished runs in
`--config.analysis.freeze_runs`. Output: <workdir>/analysis/report.md and
report.html, one JSON per analysis, PNG figures.
"""

from rock_jax.config import analysis_keys, presets


def get_config(arg=None):
  # The run analysed: opd_rock.py's experiment (its default work directory).
  opd_rock = presets.load_sibling(__file__, "opd_rock.py")
  c = opd_rock.get_config(arg)
  c.analysis = analysis_keys.analysis_config(
    embedded=not presets.is_model_pair(arg)
  )
  return c
