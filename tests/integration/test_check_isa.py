"""XLA CPU code paths in subprocesses: a cap below the host's instruction
set really changes what the embedded student's first steps compute."""

import pytest

from rock_jax.study import isa_paths


def _host_flags() -> set[str]:
  with open("/proc/cpuinfo") as f:
    for line in f:
      key, _, value = line.partition(":")
      if key.strip() == "flags":
        return set(value.split())
  return set()


# A student recipe that trains in seconds on a 128-problem task.
TINY = {
  "embedded.train_size": 128,
  "embedded.test_size": 16,
  "embedded.student.hidden_size": 16,
  "embedded.student.heads": 2,
  "embedded.student.batch_size": 8,
  "embedded.student.eval_examples": 16,
}


@pytest.mark.skipif(
  not {"avx2", "fma"} <= _host_flags(), reason="needs an AVX2 host"
)
def test_a_cap_below_the_host_changes_the_probed_numerics(tmp_path):
  # SSE4.2 has neither 256-bit vectors nor FMA: other bits than AVX2's.
  found = {
    isa: isa_paths._probe_in(
      isa, isa_paths._flags("configs/opd_rock.py", TINY), str(tmp_path), 3
    )
    for isa in ("SSE4_2", "host")
  }
  assert found["SSE4_2"]["digest"] != found["host"]["digest"]
