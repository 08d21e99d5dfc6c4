"""Does the default command complete on every XLA CPU code path here?

  python launch/check_isa.py                       # ./workdir/isa_paths
  python launch/check_isa.py --root=/tmp/paths --isas=SSE4_2,host
  python launch/check_isa.py --rerun_identical     # run identical paths too
  python launch/check_isa.py --probe_only          # which paths differ
  python launch/check_isa.py --config=configs/opd_rock.py:long_tail \
      --overrides=rock.lam=1

Each `--xla_cpu_max_isa` cap (SSE4_2, AVX, AVX2, AVX512) and the host's
own set is another numeric path, as another user's CPU would be. First a
probe per path prints the embedded student's supervised loss at a fixed
step and a digest of its weights, which says which caps change the numerics
on this machine (a cap above the host's instruction set is the host's
path). Then the default command runs cold (its own cache and work
directory under <root>/<path>) on each distinct path. The last line is one
JSON object, also written to <root>/paths.json: per path the probe, the
teacher's and student's kept state and held-out accuracy, and the run's
summary figures. All the work is in `rock_jax.study.isa_paths.run`.
"""

import json

from absl import app, flags

_ROOT = flags.DEFINE_string("root", "workdir/isa_paths", "Output folder.")
_ISAS = flags.DEFINE_list(
  "isas",
  ["SSE4_2", "AVX", "AVX2", "AVX512", "host"],
  "Paths to check: --xla_cpu_max_isa caps, and host (no cap).",
)
_CONFIG = flags.DEFINE_string(
  "config", "configs/opd_rock.py", "The command's config file."
)
_OVERRIDES = flags.DEFINE_list(
  "overrides",
  [],
  "The command's config overrides as key=value, e.g. rock.lam=1.",
)
_RERUN = flags.DEFINE_bool(
  "rerun_identical",
  False,
  "Also run paths whose probe equals an earlier path's (same bits).",
)
_PROBE_ONLY = flags.DEFINE_bool(
  "probe_only",
  False,
  "Only probe the paths (a minute or two): which caps change the numerics.",
)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  from rock_jax.study import isa_paths

  unknown = [isa for isa in _ISAS.value if isa not in isa_paths.ISAS]
  if unknown or not _ISAS.value:
    raise app.UsageError(
      f"--isas={','.join(_ISAS.value)}: expected a list from "
      f"{', '.join(isa_paths.ISAS)}"
    )
  overrides = {}
  for item in _OVERRIDES.value:
    key, sep, value = item.partition("=")
    if not sep or not key:
      raise app.UsageError(
        f"--overrides item {item!r}: expected key=value, e.g. rock.lam=1"
      )
    overrides[key] = value
  result = isa_paths.run(
    _ROOT.value,
    _ISAS.value,
    _CONFIG.value,
    overrides,
    _RERUN.value,
    _PROBE_ONLY.value,
  )
  failed = [
    isa
    for isa, path in result["paths"].items()
    if path.get("run", {}).get("exit_code")
  ]
  print(json.dumps(result), flush=True)
  if failed:
    raise SystemExit(f"the command failed on {', '.join(failed)}")


if __name__ == "__main__":
  app.run(main)
