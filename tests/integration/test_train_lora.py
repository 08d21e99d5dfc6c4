"""LoRA students end to end: only the adapters train and are checkpointed,
the base stays as loaded, resume equals an uninterrupted run, the exports
are the merged model and a PEFT folder that `peft` loads onto the base."""

import os

import jax
import numpy as np
import peft
import pytest
import safetensors.numpy
import torch
import transformers
from hf_helpers import padded_batch, torch_logits
from process_helpers import free_port, launch_two_processes
from run_helpers import exported, run_capturing_the_loop, tiny_config

from rock_jax import checkpoint, models, train
from rock_jax.models import lora, peft_adapter
from rock_jax.train import model_source, session

LORA = dict(student__lora__rank=4, student__lora__targets="q,v,o,up,down")


def _adapter(workdir, name="export_adapter"):
  return safetensors.numpy.load_file(
    os.path.join(workdir, name, peft_adapter.WEIGHTS_FILE)
  )


@pytest.fixture(scope="module")
def lora_run(assets, tmp_path_factory):
  workdir = tmp_path_factory.mktemp("lora")
  summary = train.run(tiny_config(assets, workdir, train__steps=4, **LORA))
  return workdir, summary


def test_only_the_adapters_train_and_are_checkpointed(lora_run, assets):
  workdir, summary = lora_run
  assert summary["steps"] == 4
  with checkpoint.Checkpointer(str(workdir / "checkpoints")) as ckpt:
    stored = ckpt.stored_tree()
  names = {
    path[-1].key
    for path, _ in jax.tree_util.tree_leaves_with_path(stored["params"])
  }
  assert names and all(lora.is_adapter(n) for n in names), names
  # Adam's moments are the adapters' only (the step counts are scalars).
  moments = jax.tree_util.tree_leaves_with_path(stored["opt_state"])
  assert all(lora.is_adapter(path[-1].key) for path, x in moments if x.shape)
  # The merged export is the base plus the trained update, which is not
  # zero: B moved off its zero start.
  adapter = _adapter(workdir)
  assert any(np.abs(v).max() > 0 for k, v in adapter.items() if "lora_B" in k)
  merged = exported(workdir)
  q = "model.layers.0.self_attn.q_proj.weight"
  k_proj = "model.layers.0.self_attn.k_proj.weight"
  base_hf = safetensors.numpy.load_file(
    os.path.join(assets["student"], "model.safetensors")
  )
  assert not np.array_equal(merged[q], base_hf[q])
  # k is not a target: the merged export keeps the base's k exactly.
  np.testing.assert_array_equal(merged[k_proj], base_hf[k_proj])


def test_peft_loads_the_adapter_onto_the_base_as_the_merged_export(
  lora_run, assets
):
  workdir, _ = lora_run
  base = transformers.AutoModelForCausalLM.from_pretrained(
    assets["student"], dtype=torch.float32
  )
  adapted = peft.PeftModel.from_pretrained(
    base, str(workdir / "export_adapter")
  ).eval()
  merged = transformers.AutoModelForCausalLM.from_pretrained(
    str(workdir / "export"), dtype=torch.float32
  ).eval()
  tokens, mask, positions = padded_batch(merged.config.vocab_size)
  np.testing.assert_allclose(
    torch_logits(adapted, tokens, mask, positions)[mask],
    torch_logits(merged, tokens, mask, positions)[mask],
    rtol=1e-5,
    atol=1e-5,
  )


def test_resume_equals_uninterrupted_and_rollouts_applied_equal_merged(
  lora_run, assets, tmp_path
):
  workdir, _ = lora_run
  half = tmp_path / "half"
  train.run(tiny_config(assets, half, train__steps=2, **LORA))
  train.run(tiny_config(assets, half, train__steps=4, **LORA))
  for key, value in _adapter(workdir).items():
    np.testing.assert_allclose(_adapter(half)[key], value, rtol=0, atol=1e-6)
  # Sampling with the adapters applied in every decode step draws the same
  # tokens as with them merged (equal weights up to float32 round-off).
  applied = tmp_path / "applied"
  train.run(
    tiny_config(
      assets, applied, train__steps=4, student__lora__rollout="applied", **LORA
    )
  )
  for key, value in _adapter(workdir).items():
    np.testing.assert_allclose(
      _adapter(applied)[key], value, rtol=1e-4, atol=1e-5
    )


def test_starts_from_a_peft_adapter_folder(lora_run, assets, tmp_path):
  workdir, _ = lora_run
  # The trained adapter as the start, with a step too small to move a
  # float32 weight: the run's adapter comes out as it went in.
  config = tiny_config(
    assets,
    tmp_path,
    train__steps=1,
    optim__learning_rate=1e-30,
    optim__min_lr=0.0,
    student__lora__adapter=str(workdir / "export_adapter"),
  )
  train.run(config)
  start, end = _adapter(workdir), _adapter(tmp_path)
  assert start.keys() == end.keys()
  for key, value in start.items():
    np.testing.assert_allclose(end[key], value, rtol=0, atol=1e-20)


@pytest.mark.parametrize(
  "overrides,match",
  [
    (dict(student__lora__rank=-1), r"student.lora.rank=-1: expected"),
    (
      dict(student__lora__targets="q,v"),
      r"student.lora.rank=0: expected an integer > 0 with "
      r"student.lora.targets='q,v'",
    ),
    (
      dict(student__lora__rank=4, student__lora__targets="q,qkv_proj"),
      r"student.lora.targets='q,qkv_proj'.*no match for \['qkv_proj'\]",
    ),
    (dict(teacher__lora__rank=4), r"teacher.lora.rank=4: expected no"),
  ],
)
def test_bad_lora_settings_fail_at_start(overrides, match, assets, tmp_path):
  with pytest.raises(ValueError, match=match):
    train.run(tiny_config(assets, tmp_path, **overrides))


def test_an_adapter_for_another_base_names_the_tensor(lora_run, assets, tmp_path):
  workdir, _ = lora_run
  config = tiny_config(
    assets,
    tmp_path,
    teacher__path=assets["teacher"],
    student__path=assets["teacher"],
    student__lora__adapter=str(workdir / "export_adapter"),
  )
  with pytest.raises(
    ValueError, match=r"q_proj\.lora_A\.weight' has shape.*another base model"
  ):
    train.run(config)


def test_roles_apart_and_micro_batches_equal_one_mesh(
  lora_run, assets, tmp_path, monkeypatch
):
  workdir, _ = lora_run
  _, loop = run_capturing_the_loop(
    tiny_config(
      assets,
      tmp_path,
      train__steps=4,
      train__micro_batch_size=4,
      teacher__devices="4:6",
      rollout__devices="6:8",
      **LORA,
    ),
    monkeypatch,
  )
  devices = lambda tree: {
    d.id for x in jax.tree.leaves(tree) for d in x.sharding.device_set
  }
  # The adapters and the frozen base train on the student's devices; the
  # sampler holds the merged weights (no adapter matrices) on its own.
  assert devices(loop.state.params) == devices(loop.frozen) == {0, 1, 2, 3}
  assert devices(loop.pipeline.sampler_params) == {6, 7}
  assert not lora.split(loop.pipeline.sampler_params)[1]
  for key, value in _adapter(workdir).items():
    np.testing.assert_allclose(
      _adapter(tmp_path)[key], value, rtol=1e-5, atol=1e-6
    )


def test_a_checkpoint_step_loads_as_base_plus_adapters(lora_run, assets):
  workdir, _ = lora_run
  config = model_source.run_config(str(workdir))
  sharder = model_source.sharder_for(config, "student")
  step = model_source.load(
    config, "student", sharder, workdir=str(workdir), step=4
  )
  export = model_source.load(config, "student", sharder, workdir=str(workdir))
  assert step.cfg.lora is not None and export.cfg.lora is None
  tokens, mask, _ = padded_batch(step.cfg.vocab_size)
  logits = [
    np.asarray(models.apply(m.cfg, m.params, tokens, attention_mask_BxL=mask))
    for m in (step, export)
  ]
  np.testing.assert_allclose(logits[0][mask], logits[1][mask], atol=1e-5)


def test_two_processes_equal_one(lora_run, assets, tmp_path):
  # 2 processes x 4 devices (gloo), each with half of every batch, end with
  # the adapters of the 1 x 8 run.
  workdir, _ = lora_run
  procs = launch_two_processes(
    assets,
    tmp_path,
    free_port(),
    **{"train.steps": 4, **{k.replace("__", "."): v for k, v in LORA.items()}},
  )
  for proc in procs:
    _, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err.decode()[-4000:]
  for key, value in _adapter(workdir).items():
    np.testing.assert_allclose(
      _adapter(tmp_path)[key], value, rtol=1e-5, atol=1e-6
    )


def test_the_analyses_read_the_merged_export_as_a_plain_model(lora_run):
  # A run that started from an adapter must not get it again on its
  # export, which has it merged in.
  workdir, _ = lora_run
  config = model_source.run_config(str(workdir))
  config.student.lora.adapter = str(workdir / "export_adapter")
  opened = session.open(config, student_path=str(workdir / "export"))
  assert opened.student.cfg.lora is None
  assert not lora.split(opened.params["student"])[1]
