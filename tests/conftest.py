"""Test set-up: CPU only, 8 fake devices, no hub, strict rank promotion."""

import os
import pathlib
import sys

# Shared builders and fixtures' helpers (tests/helpers), importable by name.
sys.path.insert(0, str(pathlib.Path(__file__).parent / "helpers"))

import run_helpers  # noqa: E402

# These must be set before JAX initialises its backends. The models here are
# tiny, so XLA's compile time dwarfs their run time: LLVM's optimisation
# passes are skipped (subprocesses inherit XLA_FLAGS through `xla_flags`).
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ["XLA_FLAGS"] = run_helpers.xla_flags(8, os.environ.get("XLA_FLAGS"))
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import jax  # noqa: E402

jax.config.update("jax_numpy_rank_promotion", "raise")
jax.config.update("jax_threefry_partitionable", True)

import pytest  # noqa: E402

from rock_jax.data import tokenization  # noqa: E402


@pytest.fixture(scope="session")
def assets(tmp_path_factory):
  """Tiny Hugging Face teacher, MoE teacher and students with the embedded
  tokenizer (ChatML), and a GSM8K-format folder; built once per run."""
  import hf_helpers  # noqa: PLC0415 (imports torch, which few tests need)

  root = tmp_path_factory.mktemp("assets")
  tokenizer = tokenization.build_embedded_tokenizer(root / "tokenizer")
  special = dict(
    vocab_size=len(tokenizer),
    eos_token_id=tokenizer.eos_token_id,
    pad_token_id=tokenizer.pad_token_id,
  )
  student = run_helpers.TINY_STUDENT
  folders = {}
  for name, kind, seed, extra in (
    ("teacher", "qwen3", 0, {}),
    ("moe_teacher", "qwen3_moe", 1, {}),
    ("student", "qwen3", 2, student),
    ("wide_student", "qwen3", 3, dict(student, vocab_size=400)),
  ):
    path = root / name
    hf_helpers.make_model(kind, str(path), seed=seed, **{**special, **extra})
    tokenizer.save_pretrained(path)
    folders[name] = str(path)
  run_helpers.write_gsm8k(root / "gsm8k", {"train": 24, "test": 8})
  folders["gsm8k"] = str(root / "gsm8k")
  folders["cache"] = str(root / "cache")
  return folders


@pytest.fixture(scope="session")
def real_tokenizers(tmp_path_factory):
  """The published Qwen3 and DeepSeek-V3 tokenizer folders (`qwen3`,
  `deepseek_v3`), decompressed from `../shared/tokenizers` beside the
  repository (or $ROCK_JAX_TOKENIZERS) into a temporary folder."""
  import gzip  # noqa: PLC0415
  import shutil  # noqa: PLC0415

  repo = pathlib.Path(__file__).resolve().parents[1]
  source = pathlib.Path(
    os.environ.get("ROCK_JAX_TOKENIZERS", repo.parent / "shared/tokenizers")
  )
  if not (source / "qwen3").is_dir():
    pytest.skip(
      f"no published tokenizers at {source} (set ROCK_JAX_TOKENIZERS)"
    )
  root = tmp_path_factory.mktemp("tokenizers")
  folders = {}
  for name in ("qwen3", "deepseek_v3"):
    (root / name).mkdir()
    shutil.copy(source / name / "tokenizer_config.json", root / name)
    with gzip.open(source / name / "tokenizer.json.gz", "rb") as f:
      (root / name / "tokenizer.json").write_bytes(f.read())
    folders[name] = str(root / name)
  return folders


@pytest.fixture(scope="session")
def gcs_server():
  """A Cloud Storage API server on loopback (tests/gcs_helpers.py)."""
  import gcs_helpers  # noqa: PLC0415

  # Not stopped at the end: background writers (orbax's commit threads)
  # may still talk to it while the process exits; its thread is a daemon.
  return gcs_helpers.start_server()


@pytest.fixture
def gcs(gcs_server, request):
  """A fresh `gs://` prefix for one test on the loopback server."""
  import re  # noqa: PLC0415
  import uuid  # noqa: PLC0415

  import gcs_helpers  # noqa: PLC0415

  name = re.sub(r"[^A-Za-z0-9_.-]", "-", request.node.name)[:40]
  return f"gs://{gcs_helpers.BUCKET}/{name}-{uuid.uuid4().hex[:8]}"
