"""docs/configuration.md, generated from `keys.py` and `analysis_keys.py`:
every key, its default and the comment above it there, so the page cannot drift from the code.

  python -m rock_jax.config.reference > docs/configuration.md
"""

from __future__ import annotations

import ast
import inspect
import json

from rock_jax.config import analysis_keys, keys

_HEADER = """# Configuration

Every key `launch/train.py` reads, with its default (the embedded default
task's) and what it means, and the `analysis` keys `launch/analyze.py`
adds (`configs/analyze_rock.py`; real models get the paper's sizes).
Generated from `rock_jax/config/keys.py` and `analysis_keys.py` by
`python -m rock_jax.config.reference > docs/configuration.md`; a test keeps
the two equal. Config files in `configs/` start from these and set what
their experiment changes; any key can be overridden on the command line as
`--config.<key>=<value>`.
"""


def _comments(source: str) -> dict[int, str]:
  """The comment block ending on the line above each line of `source`."""
  lines = source.splitlines()
  found, block = {}, []
  for number, line in enumerate(lines, start=1):
    stripped = line.strip()
    if stripped.startswith("#"):
      block.append(stripped.lstrip("#").strip())
      continue
    if block:
      found[number] = " ".join(block)
    block = []
  return found


def _key_lines(function) -> dict[str, int]:
  """The source line of each key a config function sets, by dotted name
  (relative to what the function returns)."""
  source = inspect.getsource(function)
  first = inspect.getsourcelines(function)[1]
  lines = {}

  def record(prefix, node):
    for key, value in zip(node.keys, node.values, strict=True):
      if isinstance(key, ast.Constant):
        name = f"{prefix}{key.value}"
        lines[name] = first + key.lineno - 1
        if (inner := _dict_of(value)) is not None:
          record(f"{name}.", inner)

  for node in ast.walk(ast.parse(source)):
    if isinstance(node, ast.Assign) and isinstance(
      node.targets[0], ast.Attribute
    ):
      name = ast.unparse(node.targets[0]).split(".", 1)[1]
      lines[name] = first + node.lineno - 1
      if (inner := _dict_of(node.value)) is not None:
        record(f"{name}.", inner)
    elif isinstance(node, ast.Return) and _dict_of(node.value) is not None:
      record("", _dict_of(node.value))
  return lines


def _dict_of(node):
  """The dict literal a node is or wraps (`ConfigDict({...})`), or None."""
  if isinstance(node, ast.Dict):
    return node
  if isinstance(node, ast.Call) and node.args:
    return _dict_of(node.args[0])
  return None


def flatten(config, prefix=""):
  """`(dotted key, value)` of every leaf of a config."""
  for key, value in sorted(config.items()):
    name = f"{prefix}{key}"
    if hasattr(value, "items"):
      yield from flatten(value, f"{name}.")
    else:
      yield name, value


def _default(value) -> str:
  text = json.dumps(value) if not isinstance(value, str) else repr(value)
  return f"`{text}`"


def markdown() -> str:
  """The page: a table per top-level section of the base config."""
  comments = _comments(inspect.getsource(keys))
  analysis_comments = _comments(inspect.getsource(analysis_keys))
  base = _key_lines(keys.base_config)
  role = _key_lines(keys.model_config)
  embedded = _key_lines(keys.embedded_model)
  analysis = _key_lines(analysis_keys.analysis_config)

  def line_of(name: str) -> int:
    parts = name.split(".")
    if parts[0] == "embedded" and parts[1] in ("teacher", "student"):
      return embedded.get(parts[-1], 0)
    if parts[0] == "analysis":
      return analysis.get(parts[-1], 0)
    return base.get(name) or (
      role.get(".".join(parts[1:]), 0)
      if parts[0] in ("teacher", "student")
      else 0
    )

  config = keys.base_config()
  config.analysis = analysis_keys.analysis_config(embedded=True)
  rows: dict[str, list[tuple[int, str]]] = {}
  for name, value in flatten(config):
    section = name.split(".")[0] if "." in name else "top level"
    line = line_of(name)
    meaning = (analysis_comments if section == "analysis" else comments).get(
      line, ""
    )
    rows.setdefault(section, []).append(
      (line, f"| `{name}` | {_default(value)} | {meaning} |")
    )
  out = [_HEADER]
  # Sections in the order base_config sets them, the analysis's last.
  order = sorted(
    rows, key=lambda s: -1 if s == "top level" else base.get(s, 1 << 30)
  )
  for section in order:
    out += [f"\n## {section}\n", "| key | default | meaning |", "|---|---|---|"]
    out += [row for _, row in sorted(rows[section], key=lambda r: r[0])]
  return "\n".join(out) + "\n"


if __name__ == "__main__":
  print(markdown(), end="")
