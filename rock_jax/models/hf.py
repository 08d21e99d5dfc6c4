"""Hugging Face checkpoints in and out: `config.json` + safetensors <-> params.

Loading never imports torch and never builds a full host copy of the model:
each parameter is assembled on its own, straight into its target sharding,
and released before the next. Saving writes files that
`transformers.AutoModelForCausalLM.from_pretrained` loads.
"""

from __future__ import annotations

import json
import os
import tempfile

import jax
import jax.numpy as jnp
import numpy as np
import safetensors
import safetensors.numpy
from jax.experimental import multihost_utils

from rock_jax import sharding as shd
from rock_jax import storage
from rock_jax.models import hf_params, model
from rock_jax.models.config import ModelConfig
from rock_jax.models.hf_config import (  # noqa: F401 (public re-exports)
  config_from_hf,
  load_config,
  read_json,
  to_hf_config,
)

INDEX_FILE = "model.safetensors.index.json"
# Buffers some exporters write that carry no weights.
_IGNORED_SUFFIXES = ("rotary_emb.inv_freq",)


class _Reader:
  """Lazily opened safetensors files of one checkpoint folder."""

  def __init__(self, path: str):
    if os.path.isfile(os.path.join(path, INDEX_FILE)):
      weight_map = _read_index(path)
    else:
      files = sorted(n for n in os.listdir(path) if n.endswith(".safetensors"))
      if not files:
        raise FileNotFoundError(_no_weights(path))
      weight_map = {}
      for name in files:
        with _open(os.path.join(path, name)) as fh:
          weight_map.update({k: name for k in fh.keys()})
    self.path = path
    self.weight_map = weight_map
    self._handles = {}

  def _handle(self, key):
    name = self.weight_map[key]
    if name not in self._handles:
      self._handles[name] = _open(os.path.join(self.path, name))
    return self._handles[name]

  def shape(self, key) -> tuple[int, ...]:
    handle = self._handle(key)
    try:
      return tuple(handle.get_slice(key).get_shape())
    except safetensors.SafetensorError as e:
      # Only an index can point at a shard that lacks the tensor.
      raise ValueError(
        f"{os.path.join(self.path, INDEX_FILE)} maps tensor {key!r} to "
        f"{self.weight_map[key]}, which does not hold it ({e}); the index "
        "and the shards come from different downloads: re-download them"
      ) from e

  def get(self, key) -> np.ndarray:
    return self._handle(key).get_tensor(key)

  def where(self, key) -> str:
    return os.path.join(self.path, self.weight_map[key])


# The first bytes of the small text file git leaves in place of an LFS object
# when git-lfs is not installed.
_LFS_POINTER = b"version https://git-lfs"


def _open(file: str):
  """`safe_open`, with errors that name the file and say how to fix it."""
  try:
    return safetensors.safe_open(file, "np")
  except PermissionError as e:
    raise PermissionError(
      f"{file} is not readable ({e}); give this user read access (e.g. "
      f"chmod a+r {file})"
    ) from e
  except safetensors.SafetensorError as e:
    with open(file, "rb") as fh:
      head = fh.read(len(_LFS_POINTER))
    if head == _LFS_POINTER:
      raise ValueError(
        f"{file} is a Git LFS pointer, not the weights; run `git lfs pull` "
        f"in {os.path.dirname(file)} (git-lfs installed) or download the "
        "model with `hf download`"
      ) from e
    raise ValueError(
      f"{file} ({os.path.getsize(file)} bytes) is truncated or corrupt "
      f"({e}); re-download it"
    ) from e


def _read_index(path: str) -> dict[str, str]:
  """The index's tensor -> shard map; every shard it names must exist."""
  index = os.path.join(path, INDEX_FILE)
  data = read_json(index, f"{INDEX_FILE} with its shards")
  weight_map = data.get("weight_map")
  if not (
    isinstance(weight_map, dict)
    and weight_map
    and all(isinstance(v, str) for v in weight_map.values())
  ):
    raise ValueError(
      f'{index} has no "weight_map" of tensor name -> shard file name; '
      "re-download it with the shards"
    )
  missing = sorted(
    {
      n
      for n in weight_map.values()
      if not os.path.isfile(os.path.join(path, n))
    }
  )
  if missing:
    raise FileNotFoundError(
      f"{index} lists {len(missing)} shard file(s) missing from {path}: "
      f"{missing[:5]}; download them into that folder (an interrupted "
      "download leaves them out)"
    )
  return weight_map


def _no_weights(path: str) -> str:
  """Why a folder without `*.safetensors` cannot load, and what would."""
  names = sorted(os.listdir(path))
  torch_files = [n for n in names if n.endswith((".bin", ".pt", ".pth"))]
  if torch_files:
    return (
      f"{path}: no *.safetensors weights, only PyTorch files {torch_files[:3]};"
      " rock_jax reads safetensors only. Download the model's safetensors "
      'files, or convert once where torch is installed: python -c "import '
      f"transformers as t; t.AutoModelForCausalLM.from_pretrained('{path}')"
      f".save_pretrained('{path}')\""
    )
  return (
    f"{path}: no *.safetensors weights (it holds {names[:8]}); expected "
    f"model.safetensors, or model-*-of-*.safetensors shards with {INDEX_FILE}"
  )


def _check(reader: _Reader, entries, cfg: ModelConfig) -> None:
  expected = set()
  for entry in entries:
    for key, _ in entry.tensors():
      expected.add(key)
      if key not in reader.weight_map:
        raise ValueError(
          f"{reader.path}: tensor {key!r} is missing (expected shape "
          f"{entry.hf_shape} for this config.json); the weights are "
          "incomplete or from another model: re-download them with the "
          "config.json they came with"
        )
      found = reader.shape(key)
      if found != entry.hf_shape:
        raise ValueError(
          f"{reader.where(key)}: tensor {key!r} has shape {found}, "
          f"but config.json implies {entry.hf_shape}; use the config.json "
          "that came with these weights"
        )
  extra = sorted(
    k
    for k in reader.weight_map
    if k not in expected
    and not k.endswith(_IGNORED_SUFFIXES)
    # A tied checkpoint may still store the (identical) output projection.
    and not (cfg.tie_word_embeddings and k == "lm_head.weight")
  )
  if extra:
    raise ValueError(
      f"{reader.path}: {len(extra)} tensors are not used by a "
      f"{cfg.model_type!r} model of this config: {extra[:5]}; use the "
      "config.json that came with these weights, and keep other "
      "*.safetensors files (e.g. adapters) out of the folder"
    )


def load(
  path: str,
  dtype="float32",
  *,
  compute_dtype: str | None = None,
  sharder: shd.Sharder | None = None,
):
  """Loads a Hugging Face checkpoint folder.

  Args:
    path: folder with `config.json` and `*.safetensors` (sharded index too);
      a `gs://` URL is read through a checked local copy (`storage.mirror`).
    dtype: parameter dtype (e.g. "bfloat16").
    compute_dtype: activation dtype; defaults to `dtype`.
    sharder: places each parameter directly onto its sharding; None puts
      everything on the default device.

  Returns:
    `(cfg, params)`.
  """
  path = storage.mirror(path)
  dtype = jnp.dtype(dtype)
  cfg = load_config(
    path, dtype=compute_dtype or dtype.name, param_dtype=dtype.name
  )
  reader = _Reader(path)
  fused = any(k.endswith(hf_params.FUSED_SUFFIX) for k in reader.weight_map)
  entries = hf_params.entries(cfg, fused_experts=fused)
  _check(reader, entries, cfg)
  if sharder is None:
    device = jax.sharding.make_single_device_sharding(jax.devices()[0])
    shardings = jax.tree.map(lambda _: device, model.param_shapes(cfg))
  else:
    shardings = model.param_shardings(cfg, sharder)

  shapes = model.param_shapes(cfg)
  params: dict = {}
  for entry in entries:
    sharding = _get(shardings, entry.path)
    shape = _get(shapes, entry.path).shape
    array = _assemble(reader, entry, shape, sharding, dtype)
    _set(params, entry.path, array)
  return cfg, params


def _assemble(reader, entry, shape, sharding, dtype) -> jax.Array:
  cache: dict[str, np.ndarray] = {}

  def tensor(key):
    # Each HF tensor is read and transformed once, even when several devices
    # ask for slices of it.
    if key not in cache:
      cache[key] = np.ascontiguousarray(entry.to_ours(reader.get(key))).astype(
        dtype
      )
    return cache[key]

  def callback(index):
    if not entry.layers:
      return tensor(entry.hf_key)[index]
    rows, *rest = index
    if not entry.experts:
      return np.stack(
        [
          tensor(entry.hf_key.format(i=i))[tuple(rest)]
          for i in entry.layers[rows]
        ]
      )
    experts, *rest = rest
    return np.stack(
      [
        np.stack(
          [
            tensor(entry.hf_key.format(i=i, e=e))[tuple(rest)]
            for e in range(entry.experts)[experts]
          ]
        )
        for i in entry.layers[rows]
      ]
    )

  return jax.make_array_from_callback(shape, sharding, callback)


def _get(tree, path):
  for name in path:
    tree = tree[name]
  return tree


def _set(tree, path, value):
  for name in path[:-1]:
    tree = tree.setdefault(name, {})
  tree[path[-1]] = value


def to_host(x: jax.Array) -> np.ndarray:
  """The whole array on this host (gathered from every process if needed);
  every process must call it."""
  if not x.is_fully_addressable:
    x = multihost_utils.process_allgather(x, tiled=True)
  return np.asarray(jax.device_get(x))


def save(
  cfg: ModelConfig,
  params,
  out_dir: str,
  *,
  tokenizer=None,
  max_shard_bytes: int = 5 * 2**30,
) -> None:
  """Writes `config.json` and safetensors loadable by transformers.

  Tensors keep the parameter dtype. Files larger than `max_shard_bytes` are
  split with a `model.safetensors.index.json`, as transformers does. Only
  process 0 writes; every process must call this (gathers are collective).
  `out_dir` may be a `gs://` URL: each weight file is written locally,
  uploaded and removed before the next (local disk for one shard, not the
  model), and `config.json` goes last, so a reader that finds `config.json`
  finds the whole model. `tokenizer`'s files go into the same folder.
  """
  write = jax.process_index() == 0
  if not (write and storage.is_url(out_dir)):
    _save(cfg, params, out_dir, write, max_shard_bytes)
    if write and tokenizer is not None:
      tokenizer.save_pretrained(out_dir)
    return
  with tempfile.TemporaryDirectory(prefix="rock_jax-export-") as folder:

    def publish(name: str) -> None:
      local = os.path.join(folder, name)
      storage.upload_file(local, storage.join(out_dir, name))
      os.remove(local)

    _save(cfg, params, folder, write, max_shard_bytes, publish)
    if tokenizer is not None:
      tokenizer.save_pretrained(folder)
    storage.upload(folder, out_dir, last=("config.json",))


def _save(cfg, params, out_dir, write, max_shard_bytes, publish=None) -> None:
  """`save` into a local folder; `write` on the process that writes;
  `publish(name)` after each weight file is written."""
  entries = hf_params.entries(cfg)
  plan: list[list[tuple[hf_params.Entry, tuple[int, ...], str]]] = [[]]
  size = 0
  for entry in entries:
    leaf = _get(params, entry.path)
    per_key = int(np.prod(entry.hf_shape)) * leaf.dtype.itemsize
    for key, index in entry.tensors():
      if plan[-1] and size + per_key > max_shard_bytes:
        plan.append([])
        size = 0
      plan[-1].append((entry, index, key))
      size += per_key

  if write:
    os.makedirs(out_dir, exist_ok=True)
    to_hf_config(cfg).save_pretrained(out_dir)
  names = (
    ["model.safetensors"]
    if len(plan) == 1
    else [
      f"model-{n + 1:05d}-of-{len(plan):05d}.safetensors"
      for n in range(len(plan))
    ]
  )
  weight_map = {}
  host: dict[tuple, np.ndarray] = {}
  for name, items in zip(names, plan, strict=True):
    tensors = {}
    for entry, index, key in items:
      if entry.path not in host:
        host.clear()  # One stacked parameter on the host at a time.
        host[entry.path] = to_host(_get(params, entry.path))
      value = host[entry.path][index]
      tensors[key] = np.ascontiguousarray(entry.to_hf(value))
      weight_map[key] = name
    if write:
      safetensors.numpy.save_file(
        tensors, os.path.join(out_dir, name), metadata={"format": "pt"}
      )
      if publish is not None:
        publish(name)
  if write and len(plan) > 1:
    total = sum(
      int(np.prod(e.hf_shape)) * _get(params, e.path).dtype.itemsize
      for e in entries
      for _ in e.tensors()
    )
    with open(os.path.join(out_dir, INDEX_FILE), "w") as fh:
      json.dump(
        {"metadata": {"total_size": total}, "weight_map": weight_map},
        fh,
        indent=2,
      )
