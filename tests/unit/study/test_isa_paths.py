"""The default command on every XLA CPU code path: caps, probes, records."""

import json

from rock_jax.study import isa_paths


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
