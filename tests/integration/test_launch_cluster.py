"""launch/cluster.py: the commands it would run on TPU VMs and GPU nodes."""

import importlib.util
import pathlib
import shlex
import subprocess

import pytest

PATH = pathlib.Path(__file__).parents[2] / "launch" / "cluster.py"
spec = importlib.util.spec_from_file_location("cluster", PATH)
cluster = importlib.util.module_from_spec(spec)
spec.loader.exec_module(cluster)

TPU = ["tpu", "--dry_run"]
PLACE = ["--name=opd", "--zone=us-east5-a", "--project=lab"]
TRAIN = [
  "--",
  "--config=configs/opd_rock.py:paper,v5p8",
  "--config.teacher.path=gs://bucket/models/Qwen3-30B-A3B-Instruct-2507",
  "--config.data.options=source=gs://bucket/math",
]


def commands(argv):
  args = cluster.parse(argv)
  if args.backend == "tpu":
    return [shlex.join(c) for c in cluster.tpu_commands(args)]
  return [shlex.join(c) for c in cluster.ssh_commands(args)]


def test_tpu_create_and_delete_plain_or_queued():
  (create,) = commands(
    [*TPU[:1], "create", *PLACE, "--accelerator_type=v5p-16"]
  )
  assert create == (
    "gcloud compute tpus tpu-vm create opd --accelerator-type=v5p-16 "
    "--version=v2-alpha-tpuv5 --zone=us-east5-a --project=lab"
  )
  (queued,) = commands(["tpu", "create", *PLACE, "--queued"])
  assert queued.startswith("gcloud compute tpus queued-resources create opd")
  assert "--node-id=opd" in queued and "--runtime-version=" in queued
  (delete,) = commands(["tpu", "delete", *PLACE])
  assert delete.startswith("gcloud compute tpus tpu-vm delete opd")
  (gone,) = commands(["tpu", "delete", *PLACE, "--queued"])
  assert "queued-resources delete opd --force" in gone


def test_tpu_setup_copies_the_checkout_and_installs_on_every_worker():
  copy, install = commands(["tpu", "setup", *PLACE])
  assert "tpu-vm scp --recurse --worker=all" in copy
  assert "opd:~/rock_jax" in shlex.split(copy)
  assert "--worker=all" in install
  assert "--command=cd ~/rock_jax && pip install -e '.[tpu]'" in shlex.split(
    install
  )


@pytest.mark.parametrize("base", ["gs://bucket/rock_jax/", "/mnt/shared"])
def test_tpu_train_runs_the_trainer_on_all_workers_under_the_base_dir(base):
  (train,) = commands(["tpu", "train", *PLACE, f"--base_dir={base}", *TRAIN])
  assert train.startswith("gcloud compute tpus tpu-vm ssh opd --worker=all")
  (script,) = [
    a.removeprefix("--command=")
    for a in shlex.split(train)
    if a.startswith("--command=")
  ]
  assert script.startswith("cd ~/rock_jax && python launch/train.py ")
  base = base.rstrip("/")
  for flag in (
    "--config=configs/opd_rock.py:paper,v5p8",
    "--config.data.options=source=gs://bucket/math",
    "--config.distributed.auto=True",
    f"--config.data.data_dir={base}/data",
    f"--config.embedded.cache_dir={base}/cache",
    f"--workdir={base}/workdir",
  ):
    assert flag in shlex.split(script.split("&& ")[1]), flag


def test_gpu_sbatch_and_explicit_hosts():
  args = cluster.parse(["gpu", "sbatch", "--nodes=2", *TRAIN])
  script = cluster.sbatch_script(args)
  assert "#SBATCH --nodes=2" in script and "--ntasks-per-node=1" in script
  assert "#SBATCH --gpus-per-node=8" in script
  assert "srun bash -c" in script and "--config.distributed.auto=True" in script
  first, second = commands(
    ["gpu", "ssh", "--hosts=n0,n1", "--port=4000", *TRAIN, "--workdir=/w"]
  )
  for i, line in enumerate((first, second)):
    assert line.startswith(f"ssh n{i} ")
    assert "--config.distributed.coordinator_address=n0:4000" in line
    assert "--config.distributed.num_processes=2" in line
    assert f"--config.distributed.process_id={i}" in line
    assert "--workdir=/w" in line and "/mnt/shared/workdir" not in line


def test_bad_invocations_are_rejected(capsys):
  with pytest.raises(SystemExit):
    cluster.parse(["tpu", "train", *PLACE])  # no train.py flags
  assert "--config=" in capsys.readouterr().err
  with pytest.raises(SystemExit):
    cluster.parse(["tpu", "train", *PLACE, *TRAIN])  # no --base_dir
  assert "--base_dir is required: a gs:// URL" in capsys.readouterr().err
  with pytest.raises(SystemExit):
    cluster.parse(["tpu", "resize", *PLACE])
  with pytest.raises(ValueError, match="--hosts"):
    cluster.ssh_commands(cluster.parse(["gpu", "ssh", *TRAIN]))


def test_dry_run_prints_and_runs_nothing(monkeypatch, capsys):
  def refuse(*args, **kwargs):
    raise AssertionError("ran a command in a dry run")

  monkeypatch.setattr(subprocess, "run", refuse)
  cluster.main(["tpu", "delete", *PLACE, "--dry_run"])
  assert capsys.readouterr().out.startswith("gcloud compute tpus tpu-vm delete")
