"""Start-up shared by the `launch/` commands."""

from __future__ import annotations

from absl import flags, logging


def setup() -> None:
  """JAX and library settings every command runs with.

  Random bits that do not depend on the device count (a resumed or resharded
  run draws the same samples); library chatter (orbax, TFDS) kept to
  warnings unless --verbosity is given; no TFDS progress bars.
  """
  import jax  # noqa: PLC0415 (after absl parsed the flags)
  import tensorflow_datasets as tfds  # noqa: PLC0415

  jax.config.update("jax_threefry_partitionable", True)
  if not flags.FLAGS["verbosity"].present:
    logging.set_verbosity(logging.WARNING)
    # Our builders always pass their own configs; TFDS warns about each.
    logging.get_absl_handler().addFilter(
      lambda record: (
        "Using custom data configuration" not in record.getMessage()
      )
    )
  tfds.disable_progress_bar()
