"""docs/configuration.md is what `keys.py` says: regenerated, compared."""

import pathlib

from rock_jax.config import analysis_keys, keys, reference

PAGE = pathlib.Path(__file__).parents[3] / "docs" / "configuration.md"


def test_the_page_is_generated_from_keys():
  assert PAGE.read_text() == reference.markdown(), (
    "docs/configuration.md is stale: python -m rock_jax.config.reference "
    "> docs/configuration.md"
  )


def test_every_key_is_listed_with_a_meaning():
  page = reference.markdown()
  config = keys.base_config()
  config.analysis = analysis_keys.analysis_config(embedded=True)
  names = [name for name, _ in reference.flatten(config)]
  assert len(names) > 100
  for name in names:
    row = next(line for line in page.splitlines() if f"| `{name}` |" in line)
    assert not row.endswith("|  |"), f"{name} has no comment in keys.py"
