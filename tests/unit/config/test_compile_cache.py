"""The commands' persistent compilation cache: where, keyed on what, off."""

import jax
import pytest

from rock_jax.config import compile_cache

OPTIONS = (
  "jax_enable_compilation_cache",
  "jax_compilation_cache_dir",
  "jax_persistent_cache_min_compile_time_secs",
)


@pytest.fixture(autouse=True)
def restore_jax_options():
  """The test process's own cache settings, back after each test."""
  saved = {name: getattr(jax.config, name) for name in OPTIONS}
  yield
  for name, value in saved.items():
    jax.config.update(name, value)


def test_auto_keys_the_folder_on_jax_and_the_code(tmp_path):
  jax.config.update("jax_compilation_cache_dir", None)
  path = compile_cache.enable("auto", str(tmp_path))
  key = path.rsplit("/", 1)[1]
  assert path == str(tmp_path / "jax_compile" / key)
  assert key.startswith(f"jax{jax.__version__}-jaxlib")
  assert key.endswith(compile_cache.source_digest())
  assert (tmp_path / "jax_compile" / key).is_dir()
  assert jax.config.jax_compilation_cache_dir == path
  assert jax.config.jax_enable_compilation_cache
  assert jax.config.jax_persistent_cache_min_compile_time_secs == 0


def test_edited_code_gets_another_folder(tmp_path, monkeypatch):
  package = tmp_path / "pkg"
  package.mkdir()
  (package / "a.py").write_text("x = 1\n")
  monkeypatch.setattr(compile_cache, "_PACKAGE", package)
  before = compile_cache.folder("root")
  assert compile_cache.folder("root") == before  # stable
  (package / "a.py").write_text("x = 2\n")
  assert compile_cache.folder("root") != before
  (package / "a.py").write_text("x = 1\n")
  assert compile_cache.folder("root") == before


def test_an_explicit_folder_a_preset_dir_and_off(tmp_path):
  jax.config.update("jax_compilation_cache_dir", None)
  path = compile_cache.enable(str(tmp_path / "mine"), "unused")
  assert path.startswith(str(tmp_path / "mine" / "jax_compile") + "/")
  # JAX_COMPILATION_CACHE_DIR given by the user wins over auto.
  jax.config.update("jax_compilation_cache_dir", str(tmp_path / "env"))
  assert compile_cache.enable("auto", "unused") == str(tmp_path / "env")
  assert compile_cache.enable("off", "unused") is None
  assert not jax.config.jax_enable_compilation_cache
  with pytest.raises(ValueError, match=r"compile_cache='': expected 'auto'"):
    compile_cache.enable("", "unused")
