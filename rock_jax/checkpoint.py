"""Orbax checkpoints of the training state pytree plus a JSON meta dict.

One step directory holds `state` (any pytree of jax arrays, e.g. `TrainState`,
sharded or not) and `meta` (JSON: data-loader position, config snapshot).
Saves follow a fixed schedule, plus forced saves at preemption and at the end;
writes are asynchronous and committed atomically by orbax (a step directory
appears only once complete), so a process killed mid-write resumes from the
previous complete step. Restores go straight into the target's shardings,
which may differ from the layout at save time.

Multi-process: every process constructs the `Checkpointer` and calls `save`,
`restore_latest`, `should_stop`, `wait` and `close` at the same steps; orbax
coordinates the processes and each writes only its own shards.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
from typing import Any

import jax
import orbax.checkpoint as ocp
from jax.sharding import AbstractMesh, Mesh, NamedSharding, PartitionSpec

_STATE = "state"
_META = "meta"


class CheckpointMismatchError(ValueError):
  """The checkpoint's tree or shapes do not match the restore target."""


class CheckpointReadError(ValueError):
  """A committed checkpoint step cannot be read (files missing or damaged)."""


def _path_str(path: tuple[Any, ...]) -> str:
  """Dotted path from jax key entries, matching orbax's own leaf names."""
  parts = []
  for key in path:
    for attr in ("key", "name", "idx"):
      if hasattr(key, attr):
        parts.append(str(getattr(key, attr)))
        break
    else:
      parts.append(str(key))
  return ".".join(parts)


def _concrete_sharding(path: str, sharding: Any, mesh: Mesh | None) -> Any:
  if sharding is None:
    if mesh is None:
      raise ValueError(
        f"restore target leaf {path!r} has no sharding; pass mesh= to place "
        "it replicated on that mesh, or give it a NamedSharding"
      )
    return NamedSharding(mesh, PartitionSpec())
  if isinstance(sharding, NamedSharding) and isinstance(
    sharding.mesh, AbstractMesh
  ):
    # Orbax needs devices to place shards; an AbstractMesh (from
    # nnx.eval_shape under jax.set_mesh) has none.
    if mesh is None:
      raise ValueError(
        f"restore target leaf {path!r} is sharded over an AbstractMesh; pass "
        "mesh= (the concrete mesh with the same axes) to abstract_like"
      )
    return NamedSharding(mesh, sharding.spec)
  return sharding


def abstract_like(tree: Any, mesh: Mesh | None = None) -> Any:
  """Builds a restore target: `jax.ShapeDtypeStruct`s with concrete shardings.

  Args:
    tree: a pytree of `jax.Array`s (their sharding is kept) or of
      `jax.ShapeDtypeStruct`s, e.g. from `jax.eval_shape` or `nnx.eval_shape`.
      To restore into another layout, pass `ShapeDtypeStruct`s carrying the
      new shardings.
    mesh: the concrete mesh that replaces an `AbstractMesh` in a leaf's
      sharding; leaves without a sharding are replicated over it.

  Returns:
    The same tree structure with a `jax.ShapeDtypeStruct` per leaf.

  Raises:
    ValueError: naming the leaf, if a sharding is abstract or missing and no
      mesh is given.
  """

  def to_struct(path, x):
    name = _path_str(path)
    sharding = _concrete_sharding(name, getattr(x, "sharding", None), mesh)
    return jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding)

  return jax.tree_util.tree_map_with_path(to_struct, tree)


def check_structure(abstract: Any, stored: Any, where: str) -> None:
  """Raises `CheckpointMismatchError` unless paths and shapes agree.

  Orbax's own shape error does not name the array and its tree error lists
  internal metadata, so the target is compared with the stored metadata
  first. Dtypes may differ: orbax casts on restore.

  Args:
    abstract: the restore target (leaves with `.shape`).
    stored: the checkpoint's tree metadata (leaves with `.shape`).
    where: the checkpoint directory, for the message.
  """
  want = {
    _path_str(p): tuple(x.shape)
    for p, x in jax.tree_util.tree_flatten_with_path(abstract)[0]
  }
  have = {
    _path_str(p): tuple(x.shape)
    for p, x in jax.tree_util.tree_flatten_with_path(stored)[0]
  }
  problems = [
    f"missing in checkpoint: {k} {want[k]}" for k in want.keys() - have.keys()
  ]
  problems += [
    f"not in target: {k} {have[k]}" for k in have.keys() - want.keys()
  ]
  problems += [
    f"{k}: expected shape {want[k]}, found {have[k]}"
    for k in want.keys() & have.keys()
    if want[k] != have[k]
  ]
  if problems:
    raise CheckpointMismatchError(
      f"checkpoint {where} does not match the restore target "
      f"({len(problems)} problems; a different model size or state tree?):\n  "
      + "\n  ".join(sorted(problems))
      + "\nResume with the model this run was started with, or give the "
      "new one a new work directory."
    )


class Checkpointer:
  """Saves and restores `(state, meta)` per step with an orbax manager.

  Typical loop (the checkpoint at step s holds the state after s updates)::

    ckpt = Checkpointer(workdir / "ckpt", save_every=500)
    ckpt.install_sigterm_handler()
    state, meta, step = init_state(), {}, 0
    restored = ckpt.restore_latest(abstract_like(state))
    if restored is not None:
      state, meta, step = restored
    while step < num_steps:
      state = train_step(state, ...)
      step += 1
      if ckpt.should_stop(step):
        break
      ckpt.save(step, state, meta)  # only on schedule
    ckpt.save(step, state, meta, force=True)  # preempted or done
    ckpt.close()
  """

  def __init__(
    self,
    directory: str | os.PathLike,
    *,
    keep: int = 2,
    save_every: int = 1000,
    async_save: bool = True,
  ):
    """Opens (or creates) the checkpoint directory.

    Args:
      directory: the root holding one sub-directory per saved step; local
        paths are made absolute.
      keep: how many most recent steps to keep.
      save_every: scheduled saves happen at steps divisible by this.
      async_save: write in a background thread; `wait` or the next save
        blocks until the previous write has committed.
    """
    if keep < 1 or save_every < 1:
      raise ValueError(
        f"keep={keep} and save_every={save_every} must both be >= 1"
      )
    directory = os.fspath(directory)
    # Orbax's tensorstore writer rejects relative paths; URLs (gs://...) are
    # left as they are.
    if "://" not in directory:
      directory = os.path.abspath(directory)
    self.directory = directory
    policies = ocp.checkpoint_managers
    options = ocp.CheckpointManagerOptions(
      max_to_keep=keep,
      # Orbax's default policy also saves the first step of a fresh run;
      # saves here are the schedule, the preemption sync point (multi-process)
      # and explicit forced saves only.
      save_decision_policy=policies.AnySavePolicy(
        [
          policies.FixedIntervalPolicy(save_every),
          policies.PreemptionCheckpointingPolicy(),
        ]
      ),
      enable_async_checkpointing=async_save,
      # Uncommitted temporaries of a killed writer are never read; removing
      # them keeps the directory from growing across restarts.
      cleanup_tmp_directories=True,
    )
    # Handlers are named up front so metadata and restore work in a fresh
    # process that has not saved yet.
    self._manager = ocp.CheckpointManager(
      self.directory,
      options=options,
      item_handlers={
        _STATE: ocp.StandardCheckpointHandler(),
        _META: ocp.JsonCheckpointHandler(),
      },
    )
    self._sigterm = False
    self._previous_handler = None

  def latest_step(self) -> int | None:
    """The newest committed step, or None if there is none."""
    return self._manager.latest_step()

  def save(
    self,
    step: int,
    state: Any,
    meta: dict[str, Any] | None = None,
    *,
    force: bool = False,
  ) -> bool:
    """Saves at scheduled steps, or at any step with `force=True`.

    Args:
      step: the number of updates `state` holds.
      state: a pytree of jax arrays.
      meta: JSON-serialisable dict stored beside the state.
      force: save even off schedule (preemption, end of training).

    Returns:
      Whether a save was started; False off schedule or if `step` is not
      newer than the latest saved step (so a final forced save after a
      scheduled one is a no-op).
    """
    latest = self._manager.latest_step()
    if latest is not None and step <= latest:
      return False
    args = ocp.args.Composite(
      **{
        _STATE: ocp.args.StandardSave(state),
        _META: ocp.args.JsonSave(meta or {}),
      }
    )
    return self._manager.save(step, args=args, force=force)

  def stored_tree(self) -> Any:
    """The newest checkpoint's state tree as stored (leaves with `.shape`
    and `.dtype`), or None if there is none: to build a restore target for
    parts whose shapes only the checkpoint knows."""
    step = self._manager.latest_step()
    if step is None:
      return None
    with self._unreadable(step):
      return self._manager.item_metadata(step)[_STATE].tree

  def restore_latest(
    self, abstract_state: Any
  ) -> tuple[Any, dict[str, Any], int] | None:
    """Restores the newest checkpoint into the target's shapes and shardings.

    Args:
      abstract_state: a pytree like the saved state whose leaves are
        `jax.ShapeDtypeStruct`s with concrete shardings (see `abstract_like`)
        or concrete arrays, whose shardings are then used.

    Returns:
      `(state, meta, step)`, or None if the directory holds no checkpoint.

    Raises:
      CheckpointMismatchError: naming every path whose presence or shape
        differs; nothing is deleted.
    """
    step = self._manager.latest_step()
    if step is None:
      return None
    abstract_state = abstract_like(abstract_state)
    where = f"{self.directory}/{step}"
    with self._unreadable(step):
      stored = self._manager.item_metadata(step)[_STATE]
    check_structure(abstract_state, stored.tree, f"{where}/{_STATE}")
    with self._unreadable(step):
      restored = self._manager.restore(
        step,
        args=ocp.args.Composite(
          **{
            _STATE: ocp.args.StandardRestore(abstract_state),
            _META: ocp.args.JsonRestore(),
          }
        ),
      )
    return restored[_STATE], dict(restored[_META] or {}), step

  def steps(self) -> list[int]:
    """Every committed step, oldest first."""
    return sorted(self._manager.all_steps())

  def restore_params(self, step: int, abstract_params: Any) -> Any:
    """The `params` of a saved step's train state, nothing else read.

    For evaluating a step of a run: the optimizer moments and the tracker
    stay on disk. A state saved with the batches sampled ahead of it keeps
    its train state under `state`.

    Args:
      step: a committed step (`steps`).
      abstract_params: the target's shapes and shardings (`abstract_like`).

    Returns:
      The parameters, laid out as `abstract_params`.

    Raises:
      ValueError: naming the committed steps, for another `step`.
      CheckpointMismatchError: naming every path whose shape differs.
    """
    if step not in self.steps():
      raise ValueError(
        f"step {step}: {self.directory} holds steps {self.steps()}"
      )
    where = f"{self.directory}/{step}"
    with self._unreadable(step):
      stored = self._manager.item_metadata(step)[_STATE].tree
    target = abstract_like(abstract_params)
    nested = "state" in stored  # saved beside batches sampled ahead
    inner = stored["state"] if nested else stored
    check_structure(target, inner["params"], f"{where}/{_STATE}")
    item = {"state": {"params": target}} if nested else {"params": target}
    restore_args = jax.tree.map(
      lambda x: ocp.ArrayRestoreArgs(sharding=x.sharding), item
    )
    with self._unreadable(step):
      restored = ocp.PyTreeCheckpointer().restore(
        f"{where}/{_STATE}",
        args=ocp.args.PyTreeRestore(
          item=item, restore_args=restore_args, partial_restore=True
        ),
      )
    return (restored["state"] if nested else restored)["params"]

  def _remedy(self, step: int) -> str:
    earlier = [s for s in self._manager.all_steps() if s < step]
    resume = f"resume from step {max(earlier)}" if earlier else "start over"
    return (
      f"the checkpoint is damaged: delete {self.directory}/{step} to "
      f"{resume}, or use a new work directory"
    )

  @contextlib.contextmanager
  def _unreadable(self, step: int):
    """Turns a failure to read a committed step into one naming it."""
    try:
      yield
    except CheckpointMismatchError:
      raise
    except (OSError, ValueError, KeyError) as e:
      raise CheckpointReadError(
        f"{self.directory}/{step}: cannot be read ({type(e).__name__}: "
        f"{e}); {self._remedy(step)}"
      ) from e

  def install_sigterm_handler(self) -> None:
    """Records SIGTERM instead of dying, for `should_stop` to report.

    Single-process only: with several processes JAX's preemption service
    owns SIGTERM (`jax_enable_preemption_service`) and `should_stop` asks its
    sync point, so this call leaves the handler alone. Call from the main
    thread; `close` restores the previous handler.
    """
    if jax.process_count() > 1:
      logging.info(
        "multi-process run: SIGTERM is left to JAX's preemption sync"
      )
      return
    self._previous_handler = signal.signal(signal.SIGTERM, self._on_sigterm)

  def _on_sigterm(self, signum, frame) -> None:
    del signum, frame
    logging.warning("SIGTERM received; stopping at the next step boundary")
    self._sigterm = True

  def should_stop(self, step: int) -> bool:
    """Whether the loop should save now (forced) and exit.

    True once SIGTERM was recorded (single process) or, with several
    processes, once all have reached JAX's preemption sync point for `step`
    (`CheckpointManager.reached_preemption`, which wraps
    `multihost_utils.reached_preemption_sync_point` and is False without a
    distributed client or preemption service). Every process must call it
    at every step so they stop at the same one.
    """
    if jax.process_count() > 1:
      return self._manager.reached_preemption(step)
    return self._sigterm

  def wait(self) -> None:
    """Blocks until any in-flight asynchronous save has committed."""
    self._manager.wait_until_finished()

  def __enter__(self) -> Checkpointer:
    return self

  def __exit__(self, *exc_info) -> None:
    self.close()

  def close(self) -> None:
    """Waits for pending saves, closes the manager, restores SIGTERM."""
    self._manager.wait_until_finished()
    self._manager.close()
    if self._previous_handler is not None:
      signal.signal(signal.SIGTERM, self._previous_handler)
      self._previous_handler = None
