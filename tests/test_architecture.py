"""The package's shape: library below, application above, small parts,
an import graph without cycles, and no private name crossing modules.

The library (arrays, model folders, files) never reads a config; the
application (`rock_jax.config`, `rock_jax.train`, `rock_jax.study`) reads an
ml_collections config and is built from the library. See
docs/architecture.md.
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


MODULES = {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _resolve(name: str) -> str | None:
  """The package module a dotted import name lives in, or None."""
  while name and name not in MODULES:
    name = name.rpartition(".")[0]
  return name or None


def _graph() -> dict[str, set[str]]:
  """Module -> the package modules its import statements name."""
  graph = {}
  for name, path in MODULES.items():
    edges = set()
    for node in ast.walk(ast.parse(path.read_text())):
      if isinstance(node, ast.Import):
        targets = [alias.name for alias in node.names]
      elif isinstance(node, ast.ImportFrom) and node.module:
        targets = [
          f"{node.module}.{a.name}"
          if f"{node.module}.{a.name}" in MODULES
          else node.module
          for a in node.names
        ]
      else:
        continue
      edges |= {
        _resolve(t) for t in targets if t.split(".")[0] == "rock_jax"
      } - {None, name}
    graph[name] = edges
  return graph


def _cycles(graph) -> list[list[str]]:
  """The strongly connected components of more than one module (Tarjan)."""
  index, low, stack, on, found = {}, {}, [], set(), []

  def visit(v):
    index[v] = low[v] = len(index)
    stack.append(v)
    on.add(v)
    for w in graph[v]:
      if w not in index:
        visit(w)
        low[v] = min(low[v], low[w])
      elif w in on:
        low[v] = min(low[v], index[w])
    if low[v] == index[v]:
      component = []
      while True:
        w = stack.pop()
        on.discard(w)
        component.append(w)
        if w == v:
          break
      if len(component) > 1:
        found.append(sorted(component))

  for v in sorted(graph):
    if v not in index:
      visit(v)
  return found


def test_the_import_graph_has_no_cycles():
  graph = _graph()
  assert sum(map(len, graph.values())) > len(graph)  # the graph was read
  assert not _cycles(graph)


def test_no_module_imports_a_private_name_of_another():
  private = []
  for name, path in MODULES.items():
    for node in ast.walk(ast.parse(path.read_text())):
      if isinstance(node, ast.ImportFrom) and node.module:
        private += [
          f"{name} imports {node.module}.{a.name}"
          for a in node.names
          if a.name.startswith("_") and node.module.startswith("rock_jax")
        ]
  assert not private, "\n".join(private)


def test_cycle_check_finds_a_cycle():
  graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
  assert _cycles(graph) == [["a", "b", "c"]]


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
  assert {"rock_jax.losses", "rock_jax.rock", "rock_jax.sampler"} <= names
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
    "rock_jax.evaluate, rock_jax.losses, rock_jax.rock, rock_jax.sampler, "
    "rock_jax.opd, rock_jax.checkpoint, rock_jax.embedded, rock_jax.models\n"
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
