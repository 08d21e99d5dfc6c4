"""LoRA adapters in PEFT's folder format, in and out.

A PEFT LoRA folder holds `adapter_config.json` (rank `r`, `lora_alpha`,
`target_modules`, ...) and `adapter_model.safetensors` with one
`lora_A.weight` `[r, in]` and one `lora_B.weight` `[out, r]` per adapted
projection, keyed as PEFT saves them for a causal LM:
`base_model.model.model.layers.{i}.self_attn.q_proj.lora_A.weight`. That is
what `peft.PeftModel.from_pretrained` loads onto the base model, and what
TRL + PEFT or tinker users bring to resume from.
"""

from __future__ import annotations

import json
import os

import jax
import numpy as np
import safetensors
import safetensors.numpy

from rock_jax import sharding as shd
from rock_jax import storage
from rock_jax.models import hf, lora, model
from rock_jax.models.config import ModelConfig
from rock_jax.models.hf_params import Entry

CONFIG_FILE = "adapter_config.json"
WEIGHTS_FILE = "adapter_model.safetensors"
_PREFIX = "base_model.model.model.layers.{i}."
# Our module and PEFT's (transformers') for each target.
_MODULES = {
  "q": ("attn", "self_attn"),
  "k": ("attn", "self_attn"),
  "v": ("attn", "self_attn"),
  "o": ("attn", "self_attn"),
  "gate": ("mlp", "mlp"),
  "up": ("mlp", "mlp"),
  "down": ("mlp", "mlp"),
}


def _io_shapes(cfg: ModelConfig, target: str):
  """Our `(in, out)` dimensions of a target projection."""
  d, h, f = cfg.hidden_size, cfg.head_dim, cfg.intermediate_size
  heads = {"q": cfg.num_heads, "k": cfg.num_kv_heads, "v": cfg.num_kv_heads}
  if target in heads:
    return (d,), (heads[target], h)
  return {
    "o": ((cfg.num_heads, h), (d,)),
    "gate": ((d,), (f,)),
    "up": ((d,), (f,)),
    "down": ((f,), (d,)),
  }[target]


def entries(cfg: ModelConfig) -> list[Entry]:
  """Where each adapter matrix of `cfg.lora` lives in a PEFT folder."""
  spec = cfg.lora
  r = spec.rank
  out = []
  for run, start, count, moe in cfg.layer_runs:
    layers = tuple(range(start, start + count))
    for target in spec.targets:
      ours, theirs = _MODULES[target]
      if moe and ours == "mlp":
        continue
      n_in, n_out = _io_shapes(cfg, target)
      a_name, b_name = lora.names(target)
      key = _PREFIX + f"{theirs}.{target}_proj.lora_{{}}.weight"
      out += [
        Entry(
          (run, ours, a_name),
          key.replace("{}", "A"),
          (r, int(np.prod(n_in))),
          lambda w, s=n_in: w.T.reshape(s + (r,)),
          lambda a: a.reshape(-1, r).T,
          layers,
        ),
        Entry(
          (run, ours, b_name),
          key.replace("{}", "B"),
          (int(np.prod(n_out)), r),
          lambda w, s=n_out: w.T.reshape((r,) + s),
          lambda b: b.reshape(r, -1).T,
          layers,
        ),
      ]
  return out


def read_spec(path: str, dtype: str = "float32") -> lora.LoraSpec:
  """The `LoraSpec` of a PEFT LoRA folder's `adapter_config.json`.

  Raises for what the folder would need that rock_jax's adapters lack
  (another PEFT method, DoRA, rsLoRA, trained biases, extra modules,
  per-layer ranks), naming the field.
  """
  path = storage.mirror(path)
  file = os.path.join(path, CONFIG_FILE)
  if not os.path.isfile(file):
    raise FileNotFoundError(
      f"{path}: no {CONFIG_FILE}; expected a PEFT LoRA adapter folder "
      f"({CONFIG_FILE} + {WEIGHTS_FILE}), as PeftModel.save_pretrained "
      "writes"
    )
  with open(file) as fh:
    c = json.load(fh)
  unsupported = {
    "peft_type": (c.get("peft_type", "LORA"), "LORA"),
    "use_dora": (bool(c.get("use_dora")), False),
    "use_rslora": (bool(c.get("use_rslora")), False),
    "bias": (c.get("bias", "none"), "none"),
    "modules_to_save": (c.get("modules_to_save") or None, None),
    "rank_pattern": (c.get("rank_pattern") or None, None),
    "alpha_pattern": (c.get("alpha_pattern") or None, None),
    "layers_to_transform": (c.get("layers_to_transform"), None),
  }
  for name, (value, expected) in unsupported.items():
    if value != expected:
      raise ValueError(
        f"{file}: {name}={value!r}; rock_jax loads plain LoRA adapters "
        f"({name}={expected!r})"
      )
  modules = c.get("target_modules")
  if isinstance(modules, str) or not modules:
    raise ValueError(
      f"{file}: target_modules={modules!r}; expected a list of projection "
      f"names from {[t + '_proj' for t in lora.TARGETS]}"
    )
  targets = []
  for name in modules:
    target = name.removesuffix("_proj")
    if target not in lora.TARGETS:
      raise ValueError(
        f"{file}: target_modules holds {name!r}; expected names from "
        f"{[t + '_proj' for t in lora.TARGETS]}"
      )
    targets.append(target)
  return lora.LoraSpec(
    rank=int(c["r"]),
    alpha=float(c["lora_alpha"]),
    targets=tuple(t for t in lora.TARGETS if t in targets),
    dropout=float(c.get("lora_dropout") or 0.0),
    dtype=dtype,
  )


def load(cfg: ModelConfig, path: str, sharder: shd.Sharder | None = None):
  """The adapter matrices of a PEFT folder for `cfg` (whose `lora` is the
  folder's `read_spec`), each placed on its sharding.

  Raises, naming the tensor, when one is missing, has another shape (an
  adapter trained on another base model) or is left over.
  """
  local = storage.mirror(path)
  file = os.path.join(local, WEIGHTS_FILE)
  if not os.path.isfile(file):
    raise FileNotFoundError(
      f"{path}: no {WEIGHTS_FILE}; expected a PEFT LoRA adapter folder"
    )
  shapes = lora.split(model.param_shapes(cfg))[1]
  if sharder is None:
    device = jax.sharding.make_single_device_sharding(jax.devices()[0])
    shardings = jax.tree.map(lambda _: device, shapes)
  else:
    shardings = lora.split(model.param_shardings(cfg, sharder))[1]
  adapters: dict = {}
  used = set()
  with safetensors.safe_open(file, "np") as fh:
    stored = set(fh.keys())
    for entry in entries(cfg):
      stack = []
      for key, _ in entry.tensors():
        if key not in stored:
          raise ValueError(
            f"{file}: tensor {key!r} is missing (expected shape "
            f"{entry.hf_shape}); the adapter does not target what its "
            f"{CONFIG_FILE} says, or is for another model"
          )
        w = fh.get_tensor(key)
        if tuple(w.shape) != entry.hf_shape:
          raise ValueError(
            f"{file}: tensor {key!r} has shape {tuple(w.shape)}, but the "
            f"base model implies {entry.hf_shape}: the adapter was trained "
            "on another base model"
          )
        stack.append(entry.to_ours(w))
        used.add(key)
      value = np.stack(stack).astype(cfg.lora.dtype)
      node = adapters
      for name in entry.path[:-1]:
        node = node.setdefault(name, {})
      sharding = shardings
      for name in entry.path:
        sharding = sharding[name]
      node[entry.path[-1]] = jax.device_put(value, sharding)
  extra = sorted(stored - used)
  if extra:
    raise ValueError(
      f"{file}: {len(extra)} tensors match no projection of the base model "
      f"(e.g. {extra[:3]}): the adapter is for another model"
    )
  return adapters


def save(cfg: ModelConfig, adapters, out_dir: str, base_model: str = ""):
  """Writes `adapters` as a PEFT LoRA folder that `PeftModel` loads onto
  the base model (`base_model`: its folder or hub name, recorded in the
  config). Every process must call this; process 0 writes."""
  spec = cfg.lora
  tensors = {}
  for entry in entries(cfg):
    leaf = adapters
    for name in entry.path:
      leaf = leaf[name]
    host = hf.to_host(leaf)
    for key, index in entry.tensors():
      tensors[key] = np.ascontiguousarray(entry.to_hf(host[index]))
  if jax.process_index() != 0:
    return
  config = {
    "peft_type": "LORA",
    "task_type": "CAUSAL_LM",
    "base_model_name_or_path": base_model,
    "r": spec.rank,
    "lora_alpha": spec.alpha,
    "lora_dropout": spec.dropout,
    "target_modules": [t + "_proj" for t in spec.targets],
    "bias": "none",
    "fan_in_fan_out": False,
    "inference_mode": True,
    "init_lora_weights": True,
    "use_rslora": False,
    "use_dora": False,
    "modules_to_save": None,
  }
  with storage.staged_folder(out_dir, last=(CONFIG_FILE,)) as folder:
    with open(os.path.join(folder, CONFIG_FILE), "w") as fh:
      json.dump(config, fh, indent=2)
    safetensors.numpy.save_file(
      tensors, os.path.join(folder, WEIGHTS_FILE), metadata={"format": "pt"}
    )
