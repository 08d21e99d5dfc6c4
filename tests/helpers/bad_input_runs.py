"""Bad inputs to a run: config values, rock lists, work directories,
checkpoints and analysis inputs (cases for tests/test_bad_inputs.py)."""

import json
import shutil

import jax.numpy as jnp
from bad_input_cases import Case
from run_helpers import load_config, set_fields

from rock_jax import checkpoint
from rock_jax.config import fields, validate
from rock_jax.rock import lists as rock_lists
from rock_jax.train import run_spec


def _validating(**settings):
  """A case body: the embedded default config with `a__b=v` set, validated
  and read as a run starts (a rock list is loaded then)."""

  def build(tmp_path, assets):
    config = load_config()
    set_fields(config, {k.replace("__", "."): v for k, v in settings.items()})

    def start():
      validate.validate(config)
      run_spec.build(config)

    return start

  return build


def _rock_file(text):
  def build(tmp_path, assets):
    path = tmp_path / "rock.json"
    path.write_text(text)
    return _validating(rock__static_list=str(path))(tmp_path, assets)

  return build


def _rock_ids_beyond_vocab(tmp_path, assets):
  path = tmp_path / "rock.json"
  path.write_text(json.dumps([5, 96]))
  return lambda: rock_lists.load_rock_json(str(path), vocab_size=96)


def _workdir_under_a_file(tmp_path, assets):
  (tmp_path / "notes.txt").write_text("")
  return lambda: fields.check_workdir(str(tmp_path / "notes.txt" / "run"))


def _saved(tmp_path):
  state = {"w": jnp.ones((4,)), "b": jnp.zeros((2,))}
  with checkpoint.Checkpointer(tmp_path / "ckpt", save_every=1) as ckpt:
    ckpt.save(1, state)
    ckpt.save(2, state)
  return state


def _damaged_checkpoint(tmp_path, assets):
  state = _saved(tmp_path)
  shutil.rmtree(tmp_path / "ckpt" / "2" / "state")
  ckpt = checkpoint.Checkpointer(tmp_path / "ckpt")
  return lambda: ckpt.restore_latest(state)


def _checkpoint_of_another_model(tmp_path, assets):
  _saved(tmp_path)
  ckpt = checkpoint.Checkpointer(tmp_path / "ckpt")
  wider = {"w": jnp.ones((8,)), "b": jnp.zeros((2,))}
  return lambda: ckpt.restore_latest(wider)


def _analysis_without_export(tmp_path, assets):
  from rock_jax.study import context  # noqa: PLC0415 (heavy)

  config = load_config("analyze_rock.py")
  return lambda: context.open(config, str(tmp_path), str(tmp_path / "out"))


CASES = [
  Case(
    "k1_as_a_training_objective",
    _validating(loss__kind="k1"),
    ValueError,
    r"loss.kind='k1': expected a training objective: the gradient of k1 is "
    r"the score function, zero in expectation.*use 'pg_reverse_kl'",
  ),
  Case(
    "device_slices_overlap",
    _validating(teacher__devices="4:8", rollout__devices="6:8"),
    ValueError,
    r"teacher.devices='4:8' and rollout.devices='6:8' overlap",
  ),
  Case(
    "device_slice_beyond_the_machine",
    _validating(teacher__devices="4:12"),
    ValueError,
    r"teacher.devices='4:12' exceeds the 8 devices here .*within 0:8",
  ),
  Case(
    "device_slice_malformed",
    _validating(rollout__devices="6-8"),
    ValueError,
    r"rollout.devices='6-8': expected a slice start:stop .* e.g. 4:8",
  ),
  Case(
    "device_slices_leave_the_student_none",
    _validating(teacher__devices="0:4", rollout__devices="4:8"),
    ValueError,
    r"teacher.devices='0:4', rollout.devices='4:8' take all 8 devices; "
    r"leave some to the student",
  ),
  Case(
    "role_mesh_does_not_fit_its_slice",
    _validating(teacher__devices="4:8", teacher__mesh="data:1,fsdp:8"),
    ValueError,
    r"teacher.mesh='data:1,fsdp:8' does not fit the teacher's 4 devices "
    r"\(teacher.devices='4:8'\)",
  ),
  Case(
    "stale_rollouts_without_their_own_devices",
    _validating(rollout__staleness=1),
    ValueError,
    r"rollout.staleness=1: expected 0 unless rollout.devices gives the "
    r"sampler its own devices",
  ),
  Case(
    "rollout_devices_in_stage_one_kd",
    _validating(stage="kd", rollout__devices="6:8"),
    ValueError,
    r"rollout.devices='6:8': only stage='opd' samples with the student",
  ),
  Case(
    "micro_batch_not_a_divisor",
    _validating(train__micro_batch_size=3),
    ValueError,
    r"train.micro_batch_size=3: expected 0 or a divisor of the step's 32 "
    r"sequences .* one of \[8, 16, 32\]",
  ),
  Case(
    "attention_kernel_without_its_chip",
    _validating(student__attention_impl="splash"),
    ValueError,
    r"student.attention_impl='splash' needs a TPU .* use 'auto'",
  ),
  Case(
    "mesh_larger_than_the_machine",
    _validating(mesh="data:16,fsdp:1,tensor:1"),
    ValueError,
    r"mesh='data:16,fsdp:1,tensor:1' does not fit the student's 8 devices "
    r".*16 devices",
  ),
  Case(
    "batch_not_divisible_by_devices",
    _validating(train__batch_size=12),
    ValueError,
    r"train.batch_size=12 gives 12 rows per batch, not a multiple of the 8",
  ),
  Case(
    "rock_list_not_json",
    _rock_file("3070, 279"),
    ValueError,
    r"rock.json: not JSON .*expected a list of token ids such as \[3070, 279\]",
  ),
  Case(
    "rock_list_of_strings",
    _rock_file('["**", "Wait"]'),
    ValueError,
    r"rock.json: entry 0 is '\*\*'; token ids must be integers",
  ),
  Case(
    "rock_ids_beyond_the_vocabulary",
    _rock_ids_beyond_vocab,
    ValueError,
    r"rock.json: entry 1 is 96, outside \[0, 96\)",
  ),
  Case(
    "workdir_under_a_file",
    _workdir_under_a_file,
    ValueError,
    r"workdir=.*notes.txt/run.*notes.txt' is a file, not a folder; pass "
    r"--workdir",
  ),
  Case(
    "damaged_checkpoint",
    _damaged_checkpoint,
    checkpoint.CheckpointReadError,
    r"ckpt/2: cannot be read .*delete .*ckpt/2 to resume from step 1",
  ),
  Case(
    "checkpoint_of_another_model",
    _checkpoint_of_another_model,
    checkpoint.CheckpointMismatchError,
    r"(?s)ckpt/2/state does not match.*w: expected shape \(8,\), found "
    r"\(4,\).*give the new one a new work directory",
  ),
  Case(
    "analysis_of_a_folder_without_a_run",
    _analysis_without_export,
    FileNotFoundError,
    r"analysis.student='': no model at .*export'; expected a finished run's "
    r"workdir",
  ),
]
