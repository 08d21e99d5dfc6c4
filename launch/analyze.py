"""Rock-Token analyses of a finished run, assembled into one report.

  python launch/analyze.py --config=configs/analyze_rock.py
  python launch/analyze.py --config=configs/analyze_rock.py \
      --config.workdir=workdir/opd_uniform \
      --config.analysis.analyses=census,knockout
  python launch/analyze.py --config=configs/analyze_rock.py \
      --config.workdir=gs://my-bucket/runs/opd_uniform

Writes <workdir>/analysis/ (or --config.analysis.out_dir): report.md,
report.html, one JSON per analysis and PNG figures. The workdir and the
output folder may be local paths or gs:// URLs. All the work is in
`rock_jax.study.pipeline.run`.
"""

from absl import app
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file(
  "config",
  "configs/analyze_rock.py",
  "Config file[:preset[,hardware]].",
  lock_config=True,
)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  from rock_jax.config import runtime

  runtime.setup(_CONFIG.value)
  from rock_jax.study import pipeline

  result = pipeline.run(_CONFIG.value)
  for fmt, path in result["report"].items():
    print(f"{fmt} report: {path}", flush=True)


if __name__ == "__main__":
  app.run(main)
