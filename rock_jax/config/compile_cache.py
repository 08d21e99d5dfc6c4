"""JAX's persistent compilation cache for the commands, keyed on the code.

A second start of the same config loads its compiled programs instead of
compiling them again. JAX keys every entry on the program's HLO, the
jax/jaxlib versions, the backend and the XLA flags; the folder adds a digest
of rock_jax's own source, so that edited code (a host-side change the HLO
does not show, a kernel's Python) never loads a program compiled before the
edit. Entries are trusted code: keep the cache where only you write.
"""

from __future__ import annotations

import hashlib
import pathlib

import jax
import jaxlib

from rock_jax import storage

AUTO, OFF = "auto", "off"
# Under the rock_jax cache folder (`fields.cache_dir`).
SUBDIR = "jax_compile"
_PACKAGE = pathlib.Path(__file__).parents[1]


def source_digest() -> str:
  """A digest of every rock_jax source file (path and bytes)."""
  digest = hashlib.sha256()
  for path in sorted(_PACKAGE.rglob("*.py")):
    digest.update(str(path.relative_to(_PACKAGE)).encode() + b"\0")
    digest.update(path.read_bytes() + b"\0")
  return digest.hexdigest()[:16]


def folder(root: str) -> str:
  """The cache folder of this code and JAX under `root` (a folder or URL)."""
  key = f"jax{jax.__version__}-jaxlib{jaxlib.__version__}-{source_digest()}"
  return storage.join(root, SUBDIR, key)


def enable(setting: str, cache_root: str) -> str | None:
  """Turns the cache on as a `compile_cache` setting asks, before compiling.

  Args:
    setting: "auto" (under `cache_root`, unless JAX_COMPILATION_CACHE_DIR
      already names a folder), "off", or a folder or gs:// URL to key under.
    cache_root: the rock_jax cache folder or URL (`fields.cache_dir`).

  Returns:
    The folder programs are read from and written to; None when off.
  """
  if not isinstance(setting, str) or not setting:
    raise ValueError(
      f"compile_cache={setting!r}: expected 'auto', 'off', or a folder or "
      "gs:// URL"
    )
  if setting == OFF:
    jax.config.update("jax_enable_compilation_cache", False)
    return None
  if setting == AUTO and jax.config.jax_compilation_cache_dir:
    return jax.config.jax_compilation_cache_dir
  path = folder(cache_root if setting == AUTO else setting)
  if not storage.is_url(path):
    storage.makedirs(path)
  jax.config.update("jax_enable_compilation_cache", True)
  jax.config.update("jax_compilation_cache_dir", path)
  # A run compiles a few dozen programs, many under JAX's 1 s default
  # threshold on a CPU; together they are most of a start's compile time.
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
  return path
