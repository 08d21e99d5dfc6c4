"""`train.profile_steps`: a `jax.profiler` trace of chosen training steps.

The trace lands in `<workdir>/profile/plugins/profile/<time>/`: an
`.xplane.pb` for TensorBoard's profile plugin (or XProf) and a
`perfetto_trace.json.gz` that https://ui.perfetto.dev opens as it is. A
`gs://` work directory gets the folder uploaded when the trace stops.
"""

from __future__ import annotations

import dataclasses
import tempfile

import jax

from rock_jax import storage
from rock_jax.config import fields


@dataclasses.dataclass
class Profiler:
  """Starts the trace before the window's first step runs and stops it
  once its last step has finished on the devices."""

  window: tuple[int, int] | None
  folder: str
  local: str | None = None
  _staging: tempfile.TemporaryDirectory | None = None

  @classmethod
  def create(cls, config, workdir: str) -> Profiler:
    t = config.train
    window = fields.profile_window(t.profile_steps, t.steps)
    return cls(window, storage.join(workdir, "profile"))

  def before(self, step: int) -> None:
    """Called before update `step` (1-based) is dispatched."""
    if self.window is None or self.local is not None:
      return
    first, last = self.window
    if first <= step <= last:
      if storage.is_url(self.folder):
        self._staging = tempfile.TemporaryDirectory(prefix="rock_jax-trace-")
        self.local = self._staging.name
      else:
        self.local = self.folder
      jax.profiler.start_trace(self.local, create_perfetto_trace=True)

  def after(self, step: int, state) -> None:
    """Called after update `step` is dispatched; `state` is its output."""
    if self.local is not None and step >= self.window[1]:
      jax.block_until_ready(state)
      self.stop()

  def stop(self) -> None:
    """Ends a running trace (also at a run's early end) and publishes it."""
    if self.local is None:
      return
    jax.profiler.stop_trace()
    if self._staging is not None:
      storage.upload(self.local, self.folder)
      self._staging.cleanup()
    if jax.process_index() == 0:
      print(f"profile of steps {self.window} in {self.folder}", flush=True)
    self.local = self._staging = None
