"""The default command on every XLA CPU code path: caps, probes, records."""

import json

import pytest

from rock_jax.study import isa_paths


def _host_flags() -> set[str]:
  with open("/proc/cpuinfo") as f:
    for line in f:
      key, _, value = line.partition(":")
      if key.strip() == "flags":
        return set(value.split())
  return set()


def test_the_environment_caps_xla_once_and_keeps_other_flags(monkeypatch):
  monkeypatch.setenv(
    "XLA_FLAGS",
    "--xla_cpu_max_isa=AVX --xla_force_host_platform_device_count=8",
  )
  capped = isa_paths.environment("SSE4_2")["XLA_FLAGS"].split()
  assert capped == [
    "--xla_force_host_platform_device_count=8",
    "--xla_cpu_max_isa=SSE4_2",
  ]
  assert isa_paths.environment("host")["XLA_FLAGS"].split() == capped[:1]


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


def test_identical_paths_run_once_and_every_path_is_recorded(
  tmp_path, monkeypatch
):
  # A scripted probe: a cap at or above the host's set is the host's path.
  digests = {"SSE4_2": "a", "AVX": "b", "AVX2": "c", "AVX512": "c", "host": "c"}
  monkeypatch.setattr(
    isa_paths,
    "_probe_in",
    lambda isa, flags, root, steps: {"loss": 1.0, "digest": digests[isa]},
  )
  ran = []

  def fake_train(isa, config_flags, out):
    ran.append(isa)
    assert out == str(tmp_path / isa)
    return {"exit_code": 0, "flags": config_flags}

  monkeypatch.setattr(isa_paths, "_train_in", fake_train)
  result = isa_paths.run(
    str(tmp_path),
    config_file="configs/opd_rock.py:long_tail",
    overrides={"rock.lam": 1},
  )
  paths = result["paths"]
  assert [paths[isa]["identical_to"] for isa in isa_paths.ISAS] == [
    None,
    None,
    None,
    "AVX2",
    "AVX2",
  ]
  assert ran == ["SSE4_2", "AVX", "AVX2"]
  assert paths["AVX"]["run"]["flags"] == [
    "--config=configs/opd_rock.py:long_tail",
    "--config.rock.lam=1",
  ]
  written = json.loads((tmp_path / "paths.json").read_text())
  assert written == json.loads(json.dumps(result))
  isa_paths.run(str(tmp_path), ("AVX2", "host"), rerun_identical=True)
  assert ran[-2:] == ["AVX2", "host"]
