"""A tiny deterministic training loop checkpointed like the trainer's.

Run as a subprocess by tests/test_checkpoint.py (SIGKILL and SIGTERM resume):

  python tests/checkpoint_loop.py DIR NUM_STEPS SAVE_EVERY SLEEP OUT.npz

It prints `resumed N`, `step N`, `saved N`, `stopped N` and `done` lines
(flushed) so the parent knows where it is, and writes the final params.
"""

import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from rock_jax import checkpoint

_SEED = 0
# Large enough that an asynchronous write takes a moment to commit.
_SHAPE = (256, 512)


@jax.jit
def update(params, step):
  """One "training" step: RNG from fold_in(key, step), as the trainer does."""
  key = jax.random.fold_in(jax.random.key(_SEED), step)
  noise = jax.random.normal(key, params["w"].shape)
  w = 0.9 * params["w"] + 0.1 * jnp.tanh(noise + params["w"])
  return {"w": w, "b": params["b"] + w.mean(axis=0)}


def init_params(mesh):
  w = jnp.zeros(_SHAPE, jnp.float32)
  b = jnp.zeros(_SHAPE[1:], jnp.float32)
  return {
    "w": jax.device_put(w, NamedSharding(mesh, PartitionSpec("data", None))),
    "b": jax.device_put(b, NamedSharding(mesh, PartitionSpec())),
  }


def make_mesh():
  return Mesh(np.array(jax.devices()), ("data",))


def run(directory, num_steps, save_every, sleep, out):
  ckpt = checkpoint.Checkpointer(directory, keep=2, save_every=save_every)
  ckpt.install_sigterm_handler()
  params = init_params(make_mesh())
  start = 0
  restored = ckpt.restore_latest(checkpoint.abstract_like(params))
  if restored is not None:
    params, meta, start = restored
    assert meta["position"] == start, (meta, start)
    print(f"resumed {start}", flush=True)
  step = start
  while step < num_steps:
    params = update(params, step)
    step += 1
    print(f"step {step}", flush=True)
    meta = {"position": step}
    if ckpt.should_stop(step):
      ckpt.save(step, params, meta, force=True)
      ckpt.close()
      print(f"stopped {step}", flush=True)
      return
    if ckpt.save(step, params, meta):
      print(f"saved {step}", flush=True)
    time.sleep(sleep)
  ckpt.save(step, params, {"position": step}, force=True)
  ckpt.close()
  np.savez(out, **jax.device_get(params))
  print("done", flush=True)


if __name__ == "__main__":
  assert "xla_force_host_platform_device_count" in os.environ["XLA_FLAGS"]
  jax.config.update("jax_numpy_rank_promotion", "raise")
  directory, num_steps, save_every, sleep, out = sys.argv[1:]
  run(directory, int(num_steps), int(save_every), float(sleep), out)
