"""What a process sets before it runs a config: JAX and library settings
(`setup`, called by the `launch/` commands) and the multi-process join."""

from __future__ import annotations

import jax
from absl import flags, logging

from rock_jax.config import compile_cache as compile_cache_lib
from rock_jax.config import fields


def setup(config=None, *, compile_cache: str | None = None) -> None:
  """JAX and library settings every command runs with.

  Random bits that do not depend on the device count (a resumed or resharded
  run draws the same samples); library chatter (orbax, TFDS) kept to
  warnings unless --verbosity is given; no TFDS progress bars; JAX's
  persistent compilation cache as `config.compile_cache` (or
  `compile_cache`, under the default cache folder, for a command without a
  config) says (`rock_jax.config.compile_cache`). Call it after absl has
  parsed the flags, before anything compiles.
  """
  import tensorflow_datasets as tfds  # noqa: PLC0415 (slow, commands only)

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
  if config is not None:
    compile_cache, root = config.compile_cache, fields.cache_dir(config)
  else:
    root = fields.default_cache_dir()
  if compile_cache is not None:
    # No device query here: a multi-process run joins its cluster later,
    # before anything starts a backend.
    where = compile_cache_lib.enable(compile_cache, root)
    logging.info("compilation cache: %s", where or "off")


def join_cluster(config) -> None:
  """Joins the multi-process runtime if `config.distributed` asks for it.

  Must run before anything touches a JAX device; a second call is a no-op.
  CPU processes exchange collectives over gloo.
  """
  d = config.distributed
  if jax.distributed.is_initialized() or not (d.auto or d.coordinator_address):
    return
  if d.coordinator_address and not 0 <= d.process_id < d.num_processes:
    raise ValueError(
      f"distributed.process_id={d.process_id}: expected 0 <= id < "
      f"distributed.num_processes={d.num_processes}"
    )
  jax.config.update("jax_cpu_collectives_implementation", "gloo")
  if d.auto:
    jax.distributed.initialize()
  else:
    jax.distributed.initialize(
      coordinator_address=d.coordinator_address,
      num_processes=d.num_processes,
      process_id=d.process_id,
    )
  if jax.default_backend() == "cpu" and jax.config.jax_compilation_cache_dir:
    # Two CPU processes restarted on a warm persistent cache hung in their
    # first step's gloo collectives (JAX 0.12); with it off they run. Nothing
    # has compiled yet, so turning it off here still takes effect.
    jax.config.update("jax_enable_compilation_cache", False)
    logging.warning("compilation cache: off (a multi-process CPU run)")
