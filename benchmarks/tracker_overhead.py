"""Cost of the Rock-Token tracker relative to the loss it tracks.

Shape: N = B·T = 8 x 256 = 2,048 tokens, D = E = 256, V = 151,936 (the Qwen
vocabulary: the tracker's [V] buffers are largest there), float32. The loss is
the chunked reverse-KL loss+grad; the tracker step is `rock.update` on its
per-token values, alone and followed by `rock.refresh` with a top-100
selection due at every step (the worst case; real runs refresh rarely).
Interleaved medians in one process.

Keys of the JSON line:
  tracker_over_loss_time: median update / median loss+grad (goal <= 0.02).
  refresh_over_loss_time: median update+refresh / median loss+grad.
  loss_ms, update_ms, refresh_ms: the medians.
"""

import argparse

import jax
from _timing import interleaved_medians, print_result
from loss_memory import opd_loss
from loss_speed import random_inputs

from rock_jax import losses, rock


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument("--repeats", type=int, default=5)
  args = parser.parse_args()
  batch, length, dim, vocab = 8, 256, 256, 151936
  inputs = random_inputs(batch, length, dim, vocab)
  ids = jax.random.randint(jax.random.key(1), (batch, length), 0, vocab)
  mask = inputs[-1]
  loss_grad = jax.jit(jax.value_and_grad(opd_loss("chunked"), (0, 1)))
  per_token = losses.chunked_token_divergence(*inputs[:4])
  update = jax.jit(rock.update)

  @jax.jit
  def refresh(state, ids, per_token, mask):
    state = rock.update(state, ids, per_token, mask)
    return rock.refresh(state, rock.Selection(k=100), refresh_every=1)

  state = update(rock.init(vocab), ids, per_token, mask)
  times = interleaved_medians(
    {
      "loss": lambda: loss_grad(*inputs),
      "update": lambda: update(state, ids, per_token, mask),
      "refresh": lambda: refresh(state, ids, per_token, mask),
    },
    repeats=args.repeats,
  )
  print_result(
    {
      "benchmark": "tracker_overhead",
      "device": jax.devices()[0].device_kind,
      "N": batch * length,
      "V": vocab,
      "tracker_over_loss_time": round(times["update"] / times["loss"], 5),
      "refresh_over_loss_time": round(times["refresh"] / times["loss"], 5),
      "loss_ms": round(1e3 * times["loss"], 1),
      "update_ms": round(1e3 * times["update"], 3),
      "refresh_ms": round(1e3 * times["refresh"], 3),
    }
  )


if __name__ == "__main__":
  main()
