"""The paper's Rock-Token study on the embedded task, on one CPU machine.

  python launch/reproduce.py                  # ./workdir/reproduce
  python launch/reproduce.py --root=/tmp/rep --seeds=0,1,2
  python launch/reproduce.py --root=gs://my-bucket/reproduce

Trains uniform OPD, Rock-Freeze, soft λ = 0.5 and a frequency-matched random
freeze over the seeds (teacher and student are trained once and cached),
then runs every analysis on the first uniform run and writes
<root>/report/report.md and report.html; the runs live in <root>/runs/. The
root may be a local folder or a gs:// URL. Finished runs (with a
summary.json) are reused, so a re-run resumes. All the work is in
`rock_jax.study.reproduce.run`.
"""

from absl import app, flags

_ROOT = flags.DEFINE_string(
  "root", "workdir/reproduce", "Output folder or gs:// URL."
)
_SEEDS = flags.DEFINE_list("seeds", ["0", "1", "2"], "Training seeds.")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  try:
    seeds = [int(s) for s in _SEEDS.value]
  except ValueError:
    raise app.UsageError(
      f"--seeds={','.join(_SEEDS.value)}: expected integers"
    ) from None
  from rock_jax.config import runtime

  runtime.setup()
  from rock_jax.study import reproduce

  result = reproduce.run(_ROOT.value, seeds)
  for fmt, path in result["report"].items():
    print(f"{fmt} report: {path}", flush=True)


if __name__ == "__main__":
  app.run(main)
