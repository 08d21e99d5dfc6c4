"""The package's shape: library below, application above, small parts.

The library (arrays, model folders, files) never reads a config; the
application (`rock_jax.config`, `rock_jax.train`, `rock_jax.study`) reads an
ml_collections config and is built from the library. See rock_jax/__init__.py.
"""

import ast
import pathlib
import subprocess
import sys

import pytest

PACKAGE = pathlib.Path(__file__).parents[1] / "rock_jax"
APPLICATION = ("rock_jax.config", "rock_jax.train", "rock_jax.study")
# Read by the config layer only.
CONFIG_LIBRARIES = ("ml_collections", "absl.flags")
MAX_MODULE_LINES = 450
MAX_FUNCTION_LINES = 80
# Declarative listings that read best whole: every config key with its
# default and comment.
LONG_FUNCTIONS = {("config/keys.py", "base_config")}


def _module_name(path: pathlib.Path) -> str:
  parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
  return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules():
  return sorted(PACKAGE.rglob("*.py"))


def _is_application(name: str) -> bool:
  return any(name == a or name.startswith(a + ".") for a in APPLICATION)


def _imports(path: pathlib.Path) -> set[str]:
  """Every module an import statement of the file names (absolute)."""
  names = set()
  for node in ast.walk(ast.parse(path.read_text())):
    if isinstance(node, ast.Import):
      names.update(alias.name for alias in node.names)
    elif isinstance(node, ast.ImportFrom) and node.module:
      names.add(node.module)
      names.update(f"{node.module}.{alias.name}" for alias in node.names)
  return names


LIBRARY = [p for p in _modules() if not _is_application(_module_name(p))]


def test_the_layers_are_both_populated():
  names = {_module_name(p) for p in LIBRARY}
  assert {"rock_jax.losses", "rock_jax.rock", "rock_jax.rollout"} <= names
  assert len(LIBRARY) < len(_modules())


@pytest.mark.parametrize(
  "path", LIBRARY, ids=lambda p: str(p.relative_to(PACKAGE))
)
def test_library_modules_import_no_config_and_no_application(path):
  bad = sorted(
    name
    for name in _imports(path)
    if _is_application(name)
    or any(name == c or name.startswith(c + ".") for c in CONFIG_LIBRARIES)
  )
  assert not bad, f"{path.relative_to(PACKAGE)} imports {bad}"


def test_importing_the_library_loads_no_config_package():
  # The transitive check the static one cannot make (e.g. via a dependency).
  code = (
    "import sys\n"
    "import rock_jax.analysis.census, rock_jax.data.builders, "
    "rock_jax.evaluate, rock_jax.losses, rock_jax.rock, rock_jax.rollout, "
    "rock_jax.train_step, rock_jax.checkpoint, rock_jax.data.embedded_models\n"
    "loaded = [m for m in sys.modules if m.startswith(('ml_collections', "
    "'rock_jax.config', 'rock_jax.train.', 'rock_jax.study'))]\n"
    "print(loaded)\n"
    "sys.exit(1 if loaded else 0)\n"
  )
  done = subprocess.run(
    [sys.executable, "-c", code], capture_output=True, text=True, timeout=300
  )
  assert done.returncode == 0, done.stdout + done.stderr[-2000:]


def _function_lengths(path: pathlib.Path):
  """(name, line, length without the docstring) of every function."""
  for node in ast.walk(ast.parse(path.read_text())):
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
      length = node.end_lineno - node.lineno + 1
      first = node.body[0]
      if isinstance(first, ast.Expr) and isinstance(
        getattr(first, "value", None), ast.Constant
      ):
        length -= first.end_lineno - first.lineno + 1
      yield node.name, node.lineno, length


def test_modules_and_functions_stay_small():
  too_long = []
  for path in _modules():
    rel = str(path.relative_to(PACKAGE))
    lines = len(path.read_text().splitlines())
    if lines > MAX_MODULE_LINES:
      too_long.append(f"{rel}: {lines} lines")
    for name, line, length in _function_lengths(path):
      if length > MAX_FUNCTION_LINES and (rel, name) not in LONG_FUNCTIONS:
        too_long.append(f"{rel}:{line} {name}: {length} lines")
  assert not too_long, "\n".join(too_long)
