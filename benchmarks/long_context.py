"""Long-context training memory and blockwise-attention speed.

Memory: the student's forward + backward under the OPD loss (chunked exact
reverse KL against a teacher's hidden states) at Qwen3-4B's shapes (D 2,560,
32 query / 8 kv heads of 128, F 9,728, V 151,936) with 2 of its 36 layers,
bfloat16 compute, float32 parameters, remat, 8 sequences over a 4-device
`fsdp` mesh of fake CPU devices. Compiled only (abstract arguments, nothing
allocated): XLA's temp bytes per device are deterministic.

Speed: forward + backward of the tiny model of benchmarks/model_step.py at
2 x 2,048 positions on this machine's default device, blockwise against XLA's
dense attention, as interleaved medians (and cuDNN where a GPU is present).

Keys of the JSON line:
  temp_gib_by_len: {length: temp GiB per device} with `--impl` attention
    (default "blockwise"; the preset default "auto" picks it on CPU).
  xla_temp_gib_by_len: the same with dense XLA attention.
  growth_8k_over_4k: temp(8,192) / temp(4,096) (goal <= 2.2: linear).
  blockwise_over_xla_time: blockwise / XLA time at 2,048 (goal <= 1.3).
  cudnn_over_xla_time: the same for cuDNN (GPU only).
"""

import os

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=4")

import argparse  # noqa: E402

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from _timing import interleaved_medians, print_result  # noqa: E402
from model_step import CFG as TINY  # noqa: E402

from rock_jax import losses, models  # noqa: E402
from rock_jax import sharding as shd  # noqa: E402

QWEN3_4B_2L = models.ModelConfig(
  model_type="qwen3",
  vocab_size=151936,
  hidden_size=2560,
  intermediate_size=9728,
  num_layers=2,
  num_heads=32,
  num_kv_heads=8,
  head_dim=128,
  qk_norm=True,
  tie_word_embeddings=True,
  dtype="bfloat16",
  param_dtype="float32",
  remat=True,
)
LENGTHS = (2048, 4096, 8192)


def opd_loss(cfg, sharder=None):
  """The student's OPD loss against given teacher hidden states and head."""

  def loss(params, tokens_BxL, mask_BxL, teacher_BxLxD, teacher_head_DxV):
    hidden = models.hidden_states(
      cfg, params, tokens_BxL, attention_mask_BxL=mask_BxL, sharder=sharder
    )
    per_token = losses.chunked_token_divergence(
      hidden, models.lm_head(cfg, params), teacher_BxLxD, teacher_head_DxV
    )
    return losses.reduce(per_token, mask_BxL)[0]

  return loss


def compiled_temp_gib(cfg, sharder, batch, length):
  """Temp GiB per device of the compiled loss gradient, nothing allocated."""
  params = models.param_shapes(cfg)
  batch_sharding = sharder.sharding((shd.BATCH, shd.LENGTH), (batch, length))
  hidden = sharder.sharding(
    (shd.BATCH, shd.LENGTH, shd.EMBED), (batch, length, cfg.hidden_size)
  )
  args = (
    params,
    jax.ShapeDtypeStruct((batch, length), jnp.int32),
    jax.ShapeDtypeStruct((batch, length), jnp.bool_),
    jax.ShapeDtypeStruct((batch, length, cfg.hidden_size), cfg.compute_dtype),
    jax.ShapeDtypeStruct((cfg.hidden_size, cfg.vocab_size), cfg.compute_dtype),
  )
  step = jax.jit(
    jax.grad(opd_loss(cfg, sharder)),
    in_shardings=(
      models.param_shardings(cfg, sharder),
      batch_sharding,
      batch_sharding,
      hidden,
      None,
    ),
  )
  compiled = step.lower(*args).compile()
  return round(compiled.memory_analysis().temp_size_in_bytes / 2**30, 3)


def timed_fwd_bwd(impls, batch, length, repeats):
  """Interleaved median seconds of the tiny model's loss gradient per impl."""
  rng = np.random.default_rng(0)
  tokens = jnp.asarray(rng.integers(0, TINY.vocab_size, (batch, length)))
  mask = jnp.ones((batch, length), bool).at[0, :100].set(False)
  teacher = jnp.asarray(rng.normal(size=(batch, length, TINY.hidden_size)))
  teacher = teacher.astype(jnp.float32)
  fns = {}
  for impl in impls:
    cfg = TINY.replace(attention_impl=impl)
    params = models.init(cfg, jax.random.key(0))
    head = models.lm_head(cfg, params)
    grad = jax.jit(jax.grad(opd_loss(cfg)))
    fns[impl] = lambda g=grad, p=params, h=head: g(p, tokens, mask, teacher, h)
  return interleaved_medians(fns, repeats=repeats)


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument("--impl", default="blockwise")
  parser.add_argument("--batch", type=int, default=8)
  parser.add_argument("--devices", type=int, default=4)
  parser.add_argument("--repeats", type=int, default=5)
  args = parser.parse_args()
  mesh = shd.make_mesh(
    [("data", 1), ("fsdp", args.devices), ("tensor", 1)],
    jax.devices("cpu")[: args.devices],
  )
  sharder = shd.Sharder(mesh, shd.get_rules("fsdp"))
  temp, xla_temp = {}, {}
  for length in LENGTHS:
    for impl, table in ((args.impl, temp), ("xla", xla_temp)):
      cfg = QWEN3_4B_2L.replace(attention_impl=impl)
      table[length] = compiled_temp_gib(cfg, sharder, args.batch, length)
  impls = ["xla", "blockwise"] + (
    ["cudnn"] if jax.default_backend() == "gpu" else []
  )
  seconds = timed_fwd_bwd(impls, 2, 2048, args.repeats)
  result = {
    "benchmark": "long_context",
    "impl": args.impl,
    "temp_gib_by_len": temp,
    "xla_temp_gib_by_len": xla_temp,
    "growth_8k_over_4k": round(temp[8192] / temp[4096], 3),
    "blockwise_over_xla_time": round(seconds["blockwise"] / seconds["xla"], 3),
    "seconds_2048": {k: round(v, 4) for k, v in seconds.items()},
    "backend": jax.default_backend(),
  }
  if "cudnn" in seconds:
    result["cudnn_over_xla_time"] = round(seconds["cudnn"] / seconds["xla"], 3)
  print_result(result)


if __name__ == "__main__":
  main()
