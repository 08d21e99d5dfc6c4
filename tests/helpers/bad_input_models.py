"""Bad model folders and tokenizers, and the messages they must produce.

Each case copies one of the session's tiny model folders (see
tests/conftest.py), breaks one thing and calls what a user calls:
`hf.load`, `hf.load_config` or `tokenization.load_tokenizer`.
"""

import json
import os
import shutil

import numpy as np
import pytest
import safetensors.numpy
from bad_input_cases import Case

from rock_jax.data import tokenization
from rock_jax.models import hf

WEIGHTS = "model.safetensors"
SHARDS = (
  "model-00001-of-00002.safetensors",
  "model-00002-of-00002.safetensors",
)
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json")


def _copy(tmp_path, assets, name="teacher"):
  """A private copy of a session model folder."""
  path = tmp_path / name
  shutil.copytree(assets[name], path)
  return path


def _edit_config(path, edit):
  file = path / "config.json"
  config = json.loads(file.read_text())
  edit(config)
  file.write_text(json.dumps(config))


def _edit_weights(path, edit):
  file = str(path / WEIGHTS)
  tensors = safetensors.numpy.load_file(file)
  edit(tensors)
  safetensors.numpy.save_file(tensors, file, metadata={"format": "pt"})


def _shard(path):
  """Splits `model.safetensors` into two shards with an index."""
  tensors = safetensors.numpy.load_file(str(path / WEIGHTS))
  keys = sorted(tensors)
  halves = (keys[: len(keys) // 2], keys[len(keys) // 2 :])
  weight_map = {}
  for name, part in zip(SHARDS, halves, strict=True):
    safetensors.numpy.save_file(
      {k: tensors[k] for k in part}, str(path / name), metadata={"format": "pt"}
    )
    weight_map.update({k: name for k in part})
  (path / WEIGHTS).unlink()
  index = {"metadata": {}, "weight_map": weight_map}
  (path / hf.INDEX_FILE).write_text(json.dumps(index))
  return weight_map


def _truncate(file, size):
  os.truncate(file, size if size >= 0 else os.path.getsize(file) + size)


def _load(path):
  return lambda: hf.load(str(path))


def _tokenizer(path, chat_template=None):
  return lambda: tokenization.load_tokenizer(path, chat_template=chat_template)


# Model folders: config.json.


def _no_config(tmp_path, assets):
  path = _copy(tmp_path, assets)
  (path / "config.json").unlink()
  return _load(path)


def _no_folder(tmp_path, assets):
  return _load(tmp_path / "no_such_model")


def _config_not_json(tmp_path, assets):
  path = _copy(tmp_path, assets)
  with open(path / "config.json", "a") as fh:
    fh.write("}{")
  return _load(path)


def _config_unreadable(tmp_path, assets):
  if os.geteuid() == 0:
    pytest.skip("root reads files whatever their permissions")
  path = _copy(tmp_path, assets)
  os.chmod(path / "config.json", 0)
  return lambda: hf.load_config(str(path))


def _config_without(key, name="teacher"):
  def build(tmp_path, assets):
    path = _copy(tmp_path, assets, name)
    _edit_config(path, lambda c: [c.pop(k, None) for k in key.split("|")])
    return _load(path)

  return build


def _config_set(key, value):
  def build(tmp_path, assets):
    path = _copy(tmp_path, assets)
    _edit_config(path, lambda c: c.update({key: value}))
    return _load(path)

  return build


# Model folders: weights.


def _truncated(size):
  def build(tmp_path, assets):
    path = _copy(tmp_path, assets)
    _truncate(path / WEIGHTS, size)
    return _load(path)

  return build


def _lfs_pointer(tmp_path, assets):
  path = _copy(tmp_path, assets)
  (path / WEIGHTS).write_text(
    "version https://git-lfs.github.com/spec/v1\noid sha256:0\nsize 1\n"
  )
  return _load(path)


def _shard_truncated(tmp_path, assets):
  path = _copy(tmp_path, assets)
  _shard(path)
  _truncate(path / SHARDS[1], -64)
  return _load(path)


def _shard_missing(tmp_path, assets):
  path = _copy(tmp_path, assets)
  _shard(path)
  (path / SHARDS[1]).unlink()
  return _load(path)


def _index_not_json(tmp_path, assets):
  path = _copy(tmp_path, assets)
  _shard(path)
  _truncate(path / hf.INDEX_FILE, 40)
  return _load(path)


def _index_without_weight_map(tmp_path, assets):
  path = _copy(tmp_path, assets)
  _shard(path)
  (path / hf.INDEX_FILE).write_text(json.dumps({"metadata": {}}))
  return _load(path)


def _index_wrong_shard(tmp_path, assets):
  path = _copy(tmp_path, assets)
  weight_map = _shard(path)
  weight_map["model.norm.weight"] = SHARDS[0]
  index = {"metadata": {}, "weight_map": weight_map}
  (path / hf.INDEX_FILE).write_text(json.dumps(index))
  return _load(path)


def _only_pytorch_bin(tmp_path, assets):
  path = _copy(tmp_path, assets)
  (path / WEIGHTS).rename(path / "pytorch_model.bin")
  return _load(path)


def _no_weights(tmp_path, assets):
  path = _copy(tmp_path, assets)
  (path / WEIGHTS).unlink()
  return _load(path)


def _tensor_missing(tmp_path, assets):
  path = _copy(tmp_path, assets)
  _edit_weights(path, lambda t: t.pop("model.layers.1.mlp.up_proj.weight"))
  return _load(path)


def _tensor_wrong_shape(tmp_path, assets):
  path = _copy(tmp_path, assets)

  def edit(t):
    t["model.norm.weight"] = np.ones((3,), np.float32)

  _edit_weights(path, edit)
  return _load(path)


# Tokenizers.


def _tokenizer_files_missing(tmp_path, assets):
  path = _copy(tmp_path, assets)
  for name in TOKENIZER_FILES + ("chat_template.jinja",):
    (path / name).unlink()
  return _tokenizer(path)


def _tokenizer_folder_missing(tmp_path, assets):
  return _tokenizer(tmp_path / "no_such_tokenizer")


def _tokenizer_json_truncated(tmp_path, assets):
  path = _copy(tmp_path, assets)
  _truncate(path / "tokenizer.json", 100)
  return _tokenizer(path)


def _no_chat_template(tmp_path, assets):
  path = _copy(tmp_path, assets)
  (path / "chat_template.jinja").unlink()
  return _tokenizer(path)


def _template_arg(source, as_file=False):
  def build(tmp_path, assets):
    path = _copy(tmp_path, assets)
    template = source
    if as_file:
      template = str(tmp_path / "broken.jinja")
      (tmp_path / "broken.jinja").write_text(source)
    return _tokenizer(path, template)

  return build


def _folder_template_broken(tmp_path, assets):
  path = _copy(tmp_path, assets)
  (path / "chat_template.jinja").write_text("{% for m in messages %}{{ m }}")
  return _tokenizer(path)


_HINT_REDOWNLOAD = r".*re-download"
_HINT_TEMPLATE = r".*fix the template or pass chat_template="
_HINT_TOKENIZER = r".*teacher\.tokenizer= / student\.tokenizer="

CASES: list[Case] = [
  Case(
    "model_config_json_missing",
    _no_config,
    FileNotFoundError,
    r"teacher/config\.json not found: expected a Hugging Face model folder "
    r"with a config\.json",
  ),
  Case(
    "model_folder_missing",
    _no_folder,
    FileNotFoundError,
    r"model folder '.*no_such_model' does not exist; expected a Hugging Face "
    r"model folder with a config\.json",
  ),
  Case(
    "model_config_json_not_json",
    _config_not_json,
    ValueError,
    r"config\.json is not valid JSON: Extra data \(line \d+, column \d+\); "
    r"fix it or re-download",
  ),
  Case(
    "model_config_json_unreadable",
    _config_unreadable,
    PermissionError,
    r"config\.json is not readable .*chmod a\+r",
  ),
  Case(
    "model_config_json_no_hidden_size",
    _config_without("hidden_size"),
    ValueError,
    r"config\.json has no 'hidden_size'; add it \(copy config\.json from "
    r"the original model\)",
  ),
  Case(
    "model_config_json_no_model_type",
    _config_without("model_type"),
    ValueError,
    r"config\.json has no 'model_type'; add the model's family, one of "
    r"\['qwen3'",
  ),
  Case(
    "model_config_json_moe_no_num_experts",
    _config_without("num_experts|num_local_experts", "moe_teacher"),
    ValueError,
    r"moe_teacher/config\.json has no 'num_experts'; add it",
  ),
  Case(
    "model_config_json_size_is_text",
    _config_set("num_hidden_layers", "2"),
    ValueError,
    r"config\.json: num_hidden_layers='2' must be a positive integer \(a "
    r"JSON number without quotes\)",
  ),
  Case(
    "model_config_json_unsupported_model_type",
    _config_set("model_type", "gemma3_text"),
    ValueError,
    r"config\.json: model_type 'gemma3_text' is not supported; supported: "
    r"\['qwen3'",
  ),
  Case(
    "model_safetensors_header_truncated",
    _truncated(20),
    ValueError,
    r"model\.safetensors \(20 bytes\) is truncated or corrupt"
    + _HINT_REDOWNLOAD,
  ),
  Case(
    "model_safetensors_data_truncated",
    _truncated(-100),
    ValueError,
    r"model\.safetensors \(\d+ bytes\) is truncated or corrupt"
    + _HINT_REDOWNLOAD,
  ),
  Case(
    "model_safetensors_is_lfs_pointer",
    _lfs_pointer,
    ValueError,
    r"model\.safetensors is a Git LFS pointer, not the weights; run "
    r"`git lfs pull`",
  ),
  Case(
    "model_shard_truncated",
    _shard_truncated,
    ValueError,
    r"model-00002-of-00002\.safetensors \(\d+ bytes\) is truncated or "
    r"corrupt" + _HINT_REDOWNLOAD,
  ),
  Case(
    "model_index_lists_missing_shard",
    _shard_missing,
    FileNotFoundError,
    r"model\.safetensors\.index\.json lists 1 shard file\(s\) missing .*"
    r"model-00002-of-00002\.safetensors.*download them into that folder",
  ),
  Case(
    "model_index_not_json",
    _index_not_json,
    ValueError,
    r"model\.safetensors\.index\.json is not valid JSON: .* \(line \d+, "
    r"column \d+\)" + _HINT_REDOWNLOAD,
  ),
  Case(
    "model_index_without_weight_map",
    _index_without_weight_map,
    ValueError,
    r'model\.safetensors\.index\.json has no "weight_map"' + _HINT_REDOWNLOAD,
  ),
  Case(
    "model_index_maps_tensor_to_wrong_shard",
    _index_wrong_shard,
    ValueError,
    r"index\.json maps tensor 'model\.norm\.weight' to "
    r"model-00001-of-00002\.safetensors, which does not hold it"
    + _HINT_REDOWNLOAD,
  ),
  Case(
    "model_only_pytorch_bin",
    _only_pytorch_bin,
    FileNotFoundError,
    r"no \*\.safetensors weights, only PyTorch files \['pytorch_model\.bin'"
    r"\]; rock_jax reads safetensors only.*save_pretrained",
  ),
  Case(
    "model_no_weight_files",
    _no_weights,
    FileNotFoundError,
    r"teacher: no \*\.safetensors weights .*expected model\.safetensors, "
    r"or model-\*-of-\*\.safetensors shards",
  ),
  Case(
    "model_tensor_missing",
    _tensor_missing,
    ValueError,
    r"tensor 'model\.layers\.1\.mlp\.up_proj\.weight' is missing \(expected "
    r"shape .*re-download them with the config\.json they came with",
  ),
  Case(
    "model_tensor_wrong_shape",
    _tensor_wrong_shape,
    ValueError,
    r"model\.safetensors: tensor 'model\.norm\.weight' has shape \(3,\), but "
    r"config\.json implies \(\d+,\); use the config\.json that came with",
  ),
  Case(
    "tokenizer_files_missing",
    _tokenizer_files_missing,
    FileNotFoundError,
    r"no tokenizer files \(tokenizer\.json, tokenizer_config\.json.*\) found "
    r"in '.*teacher'" + _HINT_TOKENIZER,
  ),
  Case(
    "tokenizer_folder_missing",
    _tokenizer_folder_missing,
    FileNotFoundError,
    r"tokenizer folder '.*no_such_tokenizer' does not exist" + _HINT_TOKENIZER,
  ),
  Case(
    "tokenizer_json_truncated",
    _tokenizer_json_truncated,
    ValueError,
    r"tokenizer\.json is not valid JSON: .* \(line \d+, column \d+\); it "
    r"is truncated or corrupt" + _HINT_REDOWNLOAD,
  ),
  Case(
    "tokenizer_no_chat_template",
    _no_chat_template,
    ValueError,
    r"tokenizer at '.*teacher' has no chat template; pass chat_template= "
    r"\(a \.jinja file or Jinja source\)",
  ),
  Case(
    "chat_template_not_file_nor_jinja",
    _template_arg("missing.jinja"),
    ValueError,
    r"chat_template='missing\.jinja' is neither an existing file nor Jinja "
    r"source; pass the path of a \.jinja file that exists",
  ),
  Case(
    "chat_template_syntax_error",
    _template_arg("{% for m in messages %}{{ m['content'] }"),
    ValueError,
    r"chat template from chat_template=[\"']\{% for m in messages.* fails on a "
    r"plain user message.*TemplateSyntaxError" + _HINT_TEMPLATE,
  ),
  Case(
    "chat_template_file_raises",
    _template_arg("{{ raise_exception('needs a system turn') }}", True),
    ValueError,
    r"chat template from chat_template='.*broken\.jinja' fails on a plain "
    r"user message.*needs a system turn" + _HINT_TEMPLATE,
  ),
  Case(
    "chat_template_in_folder_broken",
    _folder_template_broken,
    ValueError,
    r"chat template from .*teacher/chat_template\.jinja fails on a plain "
    r"user message.*TemplateSyntaxError" + _HINT_TEMPLATE,
  ),
  Case(
    "chat_template_drops_content",
    _template_arg("{% for m in messages %}{{ m['text'] }}{% endfor %}"),
    ValueError,
    r"chat template from chat_template=[\"']\{%.* drops the message "
    r"content.*the template must output message\['content'\]",
  ),
]
