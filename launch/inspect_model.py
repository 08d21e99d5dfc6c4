"""Shows how a Hugging Face model would be laid out, from its config.json only.

  python launch/inspect_model.py --model=/path/to/Qwen3-8B \
      --mesh=data:-1,fsdp:4 --rules=fsdp --dtype=bfloat16
  python launch/inspect_model.py --model=/path/to/Qwen3-30B-A3B \
      --mesh=data:1,fsdp:8 --rules=expert --fake_devices=8

Prints the resolved model config, the parameter count, and one line per
parameter with its shape, partition spec and per-device bytes, then the
parameters of at least 1 MiB left replicated. No weights are read; run it with
`--fake_devices=N` to plan for N accelerators from a CPU machine.
"""

from __future__ import annotations

import os
import sys

from absl import app, flags

_MODEL = flags.DEFINE_string(
  "model", None, "Hugging Face model folder.", required=True
)
_MESH = flags.DEFINE_string("mesh", "data:-1", "Mesh axes as name:size,...")
_RULES = flags.DEFINE_string("rules", "fsdp", "Sharding rules preset.")
_DTYPE = flags.DEFINE_string("dtype", "bfloat16", "Parameter dtype.")
_FAKE = flags.DEFINE_integer(
  "fake_devices", 0, "Simulate this many CPU devices (0: real ones)."
)


def main(argv):
  del argv
  if _FAKE.value:
    os.environ["JAX_PLATFORMS"] = "cpu"
    os.environ["XLA_FLAGS"] = (
      os.environ.get("XLA_FLAGS", "")
      + f" --xla_force_host_platform_device_count="
      f"{_FAKE.value}"
    )
  import jax
  import numpy as np

  from rock_jax import models
  from rock_jax import sharding as shd
  from rock_jax.models import hf

  cfg = hf.load_config(_MODEL.value, dtype=_DTYPE.value)
  mesh = shd.make_mesh(shd.parse_mesh(_MESH.value, "--mesh"))
  sharder = shd.Sharder(mesh, shd.get_rules(_RULES.value))
  shapes = models.param_shapes(cfg)
  shardings = models.param_shardings(cfg, sharder)
  print(cfg)
  print(
    f"mesh {dict(mesh.shape)} over {mesh.size} {jax.devices()[0].platform}"
    f" devices; rules {_RULES.value!r}"
  )
  leaves = jax.tree_util.tree_leaves_with_path(shapes)
  total_per_device = 0
  replicated = []
  for (path, x), s in zip(leaves, jax.tree.leaves(shardings), strict=True):
    name, nbytes = jax.tree_util.keystr(path), x.size * x.dtype.itemsize
    per_device = int(np.prod(s.shard_shape(x.shape))) * x.dtype.itemsize
    total_per_device += per_device
    print(
      f"  {name:40s} {str(x.shape):28s} "
      f"{str(s.spec):36s} {per_device / 2**20:10.1f} MiB/device"
    )
    if s.is_fully_replicated and nbytes >= 2**20:
      replicated.append((name, nbytes))
  if cfg.num_experts:
    print(f"active parameters per token: {models.active_param_count(cfg):,}")
  print(
    f"parameters: {models.param_count(cfg):,}; "
    f"{total_per_device / 2**30:.2f} GiB per device"
  )
  for name, nbytes in replicated:
    print(f"replicated >= 1 MiB: {name} ({nbytes / 2**20:.1f} MiB)")
  sys.stdout.flush()


if __name__ == "__main__":
  app.run(main)
