"""`launch/train.py` with its persistent compilation cache, through
`benchmarks/startup.py`: a second start loads what the first compiled."""

import json
import subprocess
import sys

from process_helpers import cpu_env
from run_helpers import ROOT, tiny_overrides


def test_a_warm_start_compiles_nothing_new(assets):
  overrides = [f"--config.{k}={v}" for k, v in tiny_overrides(assets).items()]
  out = subprocess.run(
    [sys.executable, str(ROOT / "benchmarks" / "startup.py"), *overrides],
    capture_output=True,
    text=True,
    env=cpu_env(),
    timeout=900,
  )
  assert out.returncode == 0, out.stderr[-3000:]
  result = json.loads(out.stdout.strip().splitlines()[-1])
  assert result["cold_entries"] > 0
  assert result["warm_new_entries"] == 0
  assert 0 < result["warm_s"] and 0 < result["cold_s"]
  assert result["warm_over_cold"] == result["warm_s"] / result["cold_s"]
