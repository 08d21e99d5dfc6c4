"""A full OPD step's efficiency against the machine's matmul peak.

Shape: the "tiny-OPD" pair (student = teacher: D 256,
4 layers, 4 query / 2 kv heads of 64, F 768, V 32,768, tied), float32,
8 sequences of 32 prompt + 224 completion tokens. Model FLOPs are the
matmuls `gemm_floor` lists (the usual count: the LM head included, causal
attention at half, no remat recompute, the chunked loss's recomputed logits
not counted either).

Reports, as interleaved medians in one process:
  step_over_matmul: model FLOP/s of the jitted train step (student forward
    and backward through the chunked reverse KL, teacher forward, AdamW,
    tracker) over the FLOP/s of a jitted 2048^3 float32 matmul (goal >= 0.5).
  opd_over_matmul: the same with the rollout (prefill + KV-cache decode of
    the 224 tokens) included in both FLOPs and time.
  rollout_share: rollout time / (rollout + train step) time.
  gemm_ceiling: opd_over_matmul of a step that ran nothing but its matmuls,
    each at its own shape (`gemm_floor`): the most these shapes allow here.
"""

import argparse

import gemm_floor
import jax
import jax.numpy as jnp
import numpy as np
from _timing import interleaved_medians, print_result
from model_step import CFG

from rock_jax import models, rock
from rock_jax.losses import DEFAULT_CHUNK_SIZE
from rock_jax.opd import optim, train_state
from rock_jax.opd.batch import OPDBatch
from rock_jax.opd.train_step import StepConfig, make_train_step
from rock_jax.sampler import rollout


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument("--batch", type=int, default=8)
  parser.add_argument("--prompt", type=int, default=32)
  parser.add_argument("--new", type=int, default=224)
  parser.add_argument("--repeats", type=int, default=5)
  parser.add_argument("--chunk_size", type=int, default=DEFAULT_CHUNK_SIZE)
  args = parser.parse_args()
  cfg, b, p, n = CFG, args.batch, args.prompt, args.new

  student = models.init(cfg, jax.random.key(0))
  teacher = models.init(cfg, jax.random.key(1))
  optimizer = optim.make_optimizer(learning_rate=1e-4, total_steps=1000)
  state = train_state.create(student, optimizer, cfg.vocab_size)
  step = make_train_step(
    StepConfig(
      student=cfg,
      teacher=cfg,
      rock=rock.Policy(
        lam=0.0,
        selection=rock.Selection(k=100),
        warmup_steps=1,
        refresh_every=1,
      ),
    ),
    optimizer,
  )
  rng = np.random.default_rng(0)
  tokens = rng.integers(0, cfg.vocab_size, (b, p + n)).astype(np.int32)
  mask = np.ones((b, p + n), bool)
  batch = OPDBatch(tokens, mask, tokens, mask, mask[:, p:])
  prompts = tokens[:, :p]

  def train():
    nonlocal state
    state, metrics = step(state, teacher, batch, None)
    return metrics

  def sample():
    return rollout.generate(
      cfg,
      student,
      prompts,
      mask[:, :p],
      jax.random.key(2),
      n,
      "temperature",
      stop_token_ids=(),
      crop=False,
    ).tokens

  size = 2048
  a = jax.random.normal(jax.random.key(3), (size, size), jnp.float32)
  matmul = jax.jit(lambda x, y: x @ y)
  times = interleaved_medians(
    {"matmul": lambda: matmul(a, a), "train": train, "rollout": sample},
    repeats=args.repeats,
  )
  peak = 2 * size**3 / times["matmul"]
  both = times["train"] + times["rollout"]
  forward = gemm_floor.forward_gemms(cfg, b, p + n)
  # The student's forward and backward, and the teacher's forward.
  gemms = {
    "train": forward + gemm_floor.backward_gemms(forward) + forward,
    "rollout": gemm_floor.decode_gemms(cfg, b, p, n),
  }
  train_flops, sample_flops = map(gemm_floor.flops, gemms.values())
  matmuls = gemm_floor.seconds(gemms)
  print_result(
    {
      "benchmark": "train_step",
      "device": jax.devices()[0].device_kind,
      "matmul_gflops": round(peak / 1e9, 1),
      "step_over_matmul": round(train_flops / times["train"] / peak, 3),
      "opd_over_matmul": round((train_flops + sample_flops) / both / peak, 3),
      "rollout_share": round(times["rollout"] / both, 3),
      "gemm_ceiling": round(
        (train_flops + sample_flops) / sum(matmuls.values()) / peak, 3
      ),
      "train_step_ms": round(1e3 * times["train"], 1),
      "rollout_ms": round(1e3 * times["rollout"], 1),
      "train_gflop": round(train_flops / 1e9, 1),
      "rollout_gflop": round(sample_flops / 1e9, 1),
    }
  )


if __name__ == "__main__":
  main()
