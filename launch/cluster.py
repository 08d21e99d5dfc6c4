"""Runs `launch/train.py` on every host of a TPU VM slice or a GPU cluster.

TPU (gcloud; every step prints its commands with --dry_run):

  python launch/cluster.py tpu create --name=opd --zone=us-east5-a \
      --accelerator_type=v5p-16 [--queued]
  python launch/cluster.py tpu setup --name=opd --zone=us-east5-a
  python launch/cluster.py tpu train --name=opd --zone=us-east5-a \
      --base_dir=gs://bucket/rock_jax -- \
      --config=configs/opd_rock.py:paper,v5p8 \
      --config.teacher.path=gs://bucket/models/Qwen3-30B-A3B-Instruct-2507 ...
  python launch/cluster.py tpu delete --name=opd --zone=us-east5-a [--queued]

GPU nodes (SLURM: prints an sbatch script; or explicit hosts over ssh):

  python launch/cluster.py gpu sbatch --nodes=2 --shared_dir=/mnt/shared \
      -- --config=configs/opd_rock.py:paper,h100x8 ... > opd.sbatch
  python launch/cluster.py gpu ssh --hosts=node0,node1 --port=12355 \
      --shared_dir=/mnt/shared -- --config=...

`setup` copies this checkout to every worker and installs it. The work
directory, the prepared data and the embedded cache go under `--base_dir`
(TPU) or `--shared_dir` (GPU): a `gs://` URL, where every process writes its
checkpoint shards and process 0 prepares what the others then read, or a
folder every host mounts (Filestore, Lustre). Model folders given as `gs://`
URLs are copied to each host's local disk once and checked
(`$ROCK_JAX_CACHE`, default `~/.cache/rock_jax`). Each host runs one process
over its local devices; on TPU VMs and under SLURM
`--config.distributed.auto=True` lets JAX find the others.
"""

from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys


def _gcloud_tpu(args, *words):
  command = ["gcloud", "compute", "tpus", *words]
  command += [f"--zone={args.zone}"]
  if args.project:
    command += [f"--project={args.project}"]
  return command


def _on_all_workers(args, script: str):
  return _gcloud_tpu(
    args, "tpu-vm", "ssh", args.name, "--worker=all", f"--command={script}"
  )


def _run_dirs(base: str) -> list[str]:
  """Config overrides putting the run's shared state under `base`."""
  base = base.rstrip("/")
  return [
    f"--config.data.data_dir={base}/data",
    f"--config.embedded.cache_dir={base}/cache",
  ]


def _train_script(args, extra=()) -> str:
  """`launch/train.py` with the user's flags, in the checkout on a host."""
  base = args.base_dir.rstrip("/")
  argv = ["python", "launch/train.py", *args.train_args, *extra]
  argv += _run_dirs(base)
  if not any(a.startswith("--workdir") for a in args.train_args):
    argv.append(f"--workdir={base}/workdir")
  return f"cd {args.repo_dir} && " + shlex.join(argv)


def tpu_commands(args) -> list[list[str]]:
  """The gcloud commands of one TPU action."""
  if args.action == "create":
    if args.queued:
      return [
        _gcloud_tpu(
          args,
          "queued-resources",
          "create",
          args.name,
          f"--node-id={args.name}",
          f"--accelerator-type={args.accelerator_type}",
          f"--runtime-version={args.version}",
        )
      ]
    return [
      _gcloud_tpu(
        args,
        "tpu-vm",
        "create",
        args.name,
        f"--accelerator-type={args.accelerator_type}",
        f"--version={args.version}",
      )
    ]
  if args.action == "delete":
    if args.queued:
      return [
        _gcloud_tpu(
          args, "queued-resources", "delete", args.name, "--force", "--quiet"
        )
      ]
    return [_gcloud_tpu(args, "tpu-vm", "delete", args.name, "--quiet")]
  if args.action == "setup":
    return [
      _gcloud_tpu(
        args,
        "tpu-vm",
        "scp",
        "--recurse",
        "--worker=all",
        os.path.abspath(args.source),
        f"{args.name}:{args.repo_dir}",
      ),
      _on_all_workers(args, f"cd {args.repo_dir} && pip install -e '.[tpu]'"),
    ]
  if args.action == "train":
    script = _train_script(args, ["--config.distributed.auto=True"])
    return [_on_all_workers(args, script)]
  raise ValueError(f"unknown tpu action {args.action!r}")


def sbatch_script(args) -> str:
  """A SLURM batch script: one process per node over its local GPUs."""
  train = _train_script(args, ["--config.distributed.auto=True"])
  return "\n".join(
    [
      "#!/bin/bash",
      f"#SBATCH --job-name={args.name}",
      f"#SBATCH --nodes={args.nodes}",
      "#SBATCH --ntasks-per-node=1",
      f"#SBATCH --gpus-per-node={args.gpus_per_node}",
      "#SBATCH --exclusive",
      # jax.distributed.initialize() reads the SLURM environment.
      f"srun bash -c {shlex.quote(train)}",
      "",
    ]
  )


def ssh_commands(args) -> list[list[str]]:
  """One ssh command per host with an explicit coordinator (host 0)."""
  hosts = [h for h in args.hosts.split(",") if h]
  if not hosts:
    raise ValueError("--hosts: expected host names separated by commas")
  commands = []
  for i, host in enumerate(hosts):
    extra = [
      f"--config.distributed.coordinator_address={hosts[0]}:{args.port}",
      f"--config.distributed.num_processes={len(hosts)}",
      f"--config.distributed.process_id={i}",
    ]
    commands.append(["ssh", host, _train_script(args, extra)])
  return commands


def parse(argv):
  """Splits `argv` at `--`: launcher flags before, train.py flags after."""
  if "--" in argv:
    at = argv.index("--")
    argv, train_args = argv[:at], argv[at + 1 :]
  else:
    train_args = []
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  backends = parser.add_subparsers(dest="backend", required=True)
  tpu = backends.add_parser("tpu")
  tpu.add_argument("action", choices=("create", "setup", "train", "delete"))
  tpu.add_argument("--name", required=True)
  tpu.add_argument("--zone", required=True)
  tpu.add_argument("--project", default="")
  tpu.add_argument("--accelerator_type", default="v5p-8")
  tpu.add_argument("--version", default="v2-alpha-tpuv5")
  tpu.add_argument("--queued", action="store_true")
  tpu.add_argument("--source", default=".")
  # MaxText's base_output_directory: a bucket URL, or a folder all hosts
  # mount.
  tpu.add_argument("--base_dir", default="")
  tpu.add_argument("--repo_dir", default="~/rock_jax")
  tpu.add_argument("--dry_run", action="store_true")
  gpu = backends.add_parser("gpu")
  gpu.add_argument("action", choices=("sbatch", "ssh"))
  gpu.add_argument("--name", default="rock_jax")
  gpu.add_argument("--nodes", type=int, default=1)
  gpu.add_argument("--gpus_per_node", type=int, default=8)
  gpu.add_argument("--hosts", default="")
  gpu.add_argument("--port", type=int, default=12355)
  # A folder every node mounts, or a gs:// URL.
  gpu.add_argument("--shared_dir", dest="base_dir", default="/mnt/shared")
  # A checkout with the package installed, on every host.
  gpu.add_argument("--repo_dir", default="~/rock_jax")
  gpu.add_argument("--dry_run", action="store_true")
  args = parser.parse_args(argv)
  args.train_args = train_args
  if args.backend == "gpu" or args.action == "train":
    if not any(a.startswith("--config=") for a in train_args):
      parser.error("give train.py's flags after --, at least --config=...")
  if args.backend == "tpu" and args.action == "train" and not args.base_dir:
    parser.error(
      "tpu train: --base_dir is required: a gs:// URL (e.g. "
      "gs://my-bucket/rock_jax) or a folder every worker mounts, for the "
      "work directory, prepared data and cache"
    )
  return args


def main(argv=None):
  args = parse(sys.argv[1:] if argv is None else argv)
  if args.backend == "gpu" and args.action == "sbatch":
    print(sbatch_script(args), end="")
    return
  commands = tpu_commands(args) if args.backend == "tpu" else ssh_commands(args)
  for command in commands:
    print(shlex.join(command), flush=True)
    if not args.dry_run:
      subprocess.run(command, check=True)


if __name__ == "__main__":
  main()
