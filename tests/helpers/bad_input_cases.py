"""The shape of a bad-input case, shared by the case tables.

A `Case` builds one bad input inside a fresh folder and returns the call
that must fail; `tests/test_bad_inputs.py` runs every table.
"""

import dataclasses
import pathlib
from typing import Any, Callable


@dataclasses.dataclass(frozen=True)
class Case:
  """One bad input.

  Attributes:
    id: a short name (the test id).
    build: `(tmp_path, assets) -> thunk`; writes the bad input under
      `tmp_path` (the session's tiny models and data are in `assets`, see
      tests/conftest.py; copy before modifying them) and returns the
      zero-argument call that must raise.
    error: the exception type expected.
    match: a regex the message must match (`re.search`); it names the
      offending field or file and what would work.
  """

  id: str
  build: Callable[[pathlib.Path, dict], Callable[[], Any]]
  error: type
  match: str
