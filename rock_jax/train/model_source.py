"""The model a command evaluates or samples from, by where it is.

A Hugging Face folder (a run's export included) or its gs:// URL, or a run's
work directory: its export, or the student of one checkpoint step (the
architecture and tokenizer of the run's student folder, the parameters of
the step; nothing else of the train state is read). The model is laid out
as the config's role says (dtype, rules, attention) on `sharder`'s mesh.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import jax
import ml_collections

from rock_jax import checkpoint, models, storage
from rock_jax import sharding as shd
from rock_jax.config import adapters, keys, placement
from rock_jax.data import tokenization
from rock_jax.models import hf, lora
from rock_jax.models.config import ModelConfig
from rock_jax.train import session


@dataclasses.dataclass(frozen=True)
class Model:
  """A loaded model: what it is (`name`), its config, parameters and
  tokenizer (with its chat template)."""

  name: str
  cfg: ModelConfig
  params: Any
  tokenizer: Any


def load(
  config: ml_collections.ConfigDict,
  role: str,
  sharder,
  *,
  folder: str = "",
  workdir: str = "",
  step: int = 0,
) -> Model:
  """Loads a model folder, or a run's export or checkpoint step.

  Args:
    config: the config whose `role` settings lay the model out (a run's
      config.json for its work directory).
    role: "student" or "teacher".
    sharder: the mesh and rules the parameters are placed with.
    folder: a Hugging Face model folder or gs:// URL.
    workdir: a run's work directory (instead of `folder`).
    step: with `workdir`, a checkpoint step (0: the run's export).

  Returns:
    The `Model`.
  """
  if bool(folder) == bool(workdir):
    raise ValueError(
      f"folder={folder!r}, workdir={workdir!r}: give a model folder or a "
      "run's work directory, one of them"
    )
  if step and not workdir:
    raise ValueError(f"step={step}: a checkpoint step needs a work directory")
  if step:
    return _checkpoint_step(config, role, workdir, step, sharder)
  if workdir:
    folder = storage.join(workdir, "export")
  if not storage.isfile(storage.join(folder, "config.json")):
    hint = (
      " (the run has not exported yet: give a checkpoint step)"
      if workdir
      else ""
    )
    raise FileNotFoundError(
      f"{folder!r}: no config.json there; expected a Hugging Face model "
      f"folder (config.json + *.safetensors){hint}"
    )
  cfg, params = session.load_model(config[role], folder, sharder)
  return Model(folder, cfg, params, _tokenizer(config[role], folder))


def _tokenizer(c: ml_collections.ConfigDict, folder: str):
  return tokenization.load_tokenizer(
    c.tokenizer or folder, chat_template=c.chat_template or None
  )


def _checkpoint_step(config, role, workdir, step, sharder) -> Model:
  """The student of a run's checkpoint step."""
  if role != "student":
    raise ValueError(
      f"role={role!r}: a run's checkpoints hold its student; evaluate the "
      "teacher from its folder"
    )
  directory = storage.join(workdir, "checkpoints")
  if not storage.exists(directory):
    raise FileNotFoundError(f"{directory!r}: the run saved no checkpoint")
  # The run's student folder (the embedded task's: its cached model).
  _, paths, _ = session.prepare(config)
  folder = storage.mirror(paths["student"])
  c = config.student
  dtype = jax.numpy.dtype(c.dtype).name
  cfg = session.role_model(
    hf.load_config(folder, c.compute_dtype or dtype, param_dtype=dtype), c
  )
  spec = adapters.spec(c)
  cfg = cfg.replace(lora=spec)
  shapes = models.param_shapes(cfg)
  shardings = models.param_shardings(cfg, sharder)
  if spec is not None:
    # A LoRA run checkpoints its adapters; the base is the run's folder.
    shapes, shardings = lora.split(shapes)[1], lora.split(shardings)[1]
  abstract = jax.tree.map(
    lambda x, sharding: jax.ShapeDtypeStruct(
      x.shape, x.dtype, sharding=sharding
    ),
    shapes,
    shardings,
  )
  with checkpoint.Checkpointer(directory) as ckpt:
    params = ckpt.restore_params(step, abstract)
  if spec is not None:
    params = lora.combine(session.load_model(c, folder, sharder)[1], params)
  return Model(f"{workdir} step {step}", cfg, params, _tokenizer(c, folder))


def sharder_for(config: ml_collections.ConfigDict, role: str) -> shd.Sharder:
  """The role's rules on the student's mesh (the devices training's
  evaluation decodes on)."""
  mesh = placement.meshes(config, placement.plan(config))["student"]
  return shd.Sharder(mesh, shd.get_rules(config[role].rules))


def run_config(workdir: str) -> ml_collections.ConfigDict:
  """The config a run was started with (its config.json)."""
  path = storage.join(workdir, "config.json")
  if not storage.isfile(path):
    raise FileNotFoundError(
      f"{path!r} not found: {workdir!r} is not a run's work directory"
    )
  # Keys a later version added keep their defaults.
  config = keys.base_config()
  config.update(json.loads(storage.read_text(path)))
  return config
