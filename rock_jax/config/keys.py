"""Every config key with its default: the training config and the analyses'.

Config files in `configs/` build on these (through `presets`);
`launch/train.py` loads them with `lock_config=True`, so a misspelt override
fails at parse time. `validate.validate` checks the values once, before
anything runs.

An empty `teacher.path` (the default) selects the embedded task: the teacher
and the student are small models that the framework trains itself on the
embedded column-addition data and caches
(`rock_jax.embedded.models`).
"""

from __future__ import annotations

import ml_collections

STAGES = ("opd", "kd")
CONTROLS = ("none", "frequency_matched")
PROTECTIONS = ("", "answers", "auto")


def model_config() -> ml_collections.ConfigDict:
  """One role (teacher or student): where it lives and how it is laid out."""
  return ml_collections.ConfigDict(
    {
      # Hugging Face folder (config.json, safetensors, tokenizer). Empty:
      # the embedded task's model of this role.
      "path": "",
      # Tokenizer folder; empty: `path`.
      "tokenizer": "",
      # Replaces the folder's chat template: a .jinja file or Jinja source.
      "chat_template": "",
      # Extra chat-template variables as `k=v,...` (e.g. enable_thinking=False).
      "template_kwargs": "",
      # Parameter dtype (float32, bfloat16).
      "dtype": "float32",
      # Activation dtype; empty: `dtype`.
      "compute_dtype": "",
      # A `rock_jax.sharding` rules preset: fsdp, replicated, expert.
      "rules": "fsdp",
      # Recompute each layer's activations in the backward (less memory).
      "remat": False,
      # Decoder layers per iteration of the layer loop; 0: unrolled whole.
      # A short stack runs faster unrolled (no per-layer residuals stacked
      # and read back), a deep one compiles slower.
      "scan_unroll": 1,
      # `rock_jax.models.attention`: auto (splash on TPU, cuDNN on GPU,
      # blockwise elsewhere: memory linear in length), blockwise, cudnn,
      # splash, or xla (dense [L, S] scores; short sequences only).
      "attention_impl": "auto",
      # Query/key tile of the blockwise and splash kernels.
      "attention_block": 512,
      # Mixture-of-experts models: positions per expert dispatch (0: the
      # whole sequence); bounds the routed intermediates of long sequences.
      "moe_chunk_size": 0,
      # Low-rank adapters (`rock_jax.models.lora`): the base is frozen and
      # only the adapters train. Student only: the teacher is frozen whole.
      "lora": ml_collections.ConfigDict(
        {
          # Rank r of the adapters; 0: no adapters, every weight trains.
          "rank": 0,
          # The update is scaled by alpha / rank (PEFT's lora_alpha).
          "alpha": 16.0,
          # Comma list of the projections adapted: q, k, v, o, gate, up,
          # down (mixture-of-experts blocks take none).
          "targets": "q,k,v,o,gate,up,down",
          # Dropout on each adapter's input while training.
          "dropout": 0.0,
          # The adapters' dtype; the base keeps `dtype`.
          "dtype": "float32",
          # A PEFT adapter folder to start from (its rank, alpha and
          # targets); empty: fresh adapters (B = 0: the base's outputs).
          "adapter": "",
          # Rollouts with the adapters merged into the weights at each
          # weight sync, or applied in every decode step.
          "rollout": "merged",
        }
      ),
    }
  )


def base_config() -> ml_collections.ConfigDict:
  """Every key the trainer reads, with the embedded default task's values."""
  c = ml_collections.ConfigDict()
  # The run's name: its default work directory.
  c.name = "opd_rock"
  # "opd": the student samples (Stage 2); "kd": the teacher samples and the
  # student is trained off-policy on its answers (Stage 1).
  c.stage = "opd"
  # Rollout keys and data order.
  c.seed = 0
  # Where checkpoints, logs, the export and summary.json go; empty:
  # ./workdir/<name>; a folder or a gs:// URL. Re-running with the same
  # workdir resumes.
  c.workdir = ""
  # JAX's persistent compilation cache: auto (<cache_dir>/jax_compile, keyed
  # on the code; embedded.cache_dir's folder), a folder or gs:// URL, or off.
  c.compile_cache = "auto"
  # The student's mesh as axis:size pairs (-1: the remaining devices).
  c.mesh = "data:-1,fsdp:1,tensor:1"
  # Several processes: `auto` lets JAX detect the cluster (TPU VMs, SLURM);
  # else a coordinator address with the process count and this one's id.
  c.distributed = ml_collections.ConfigDict(
    {
      # Let JAX detect the cluster.
      "auto": False,
      # host:port of process 0; empty: one process (unless `auto`).
      "coordinator_address": "",
      # With a coordinator address: the process count.
      "num_processes": 1,
      # With a coordinator address: this process's id.
      "process_id": 0,
    }
  )
  c.teacher = model_config()
  c.student = model_config()
  # The frozen teacher is only read, so it is replicated by default.
  c.teacher.rules = "replicated"
  # Its own devices: a slice start:stop of the global device list (e.g.
  # 4:8); empty: the student's mesh. Only completion ids go there and only
  # its completion hidden states come back (`rock_jax.config.placement`).
  c.teacher.devices = ""
  # Its mesh over those devices; empty: `mesh`.
  c.teacher.mesh = ""
  # Distil across tokenizers: each completion's text is re-tokenised by the
  # teacher's tokenizer after its own prompt and aligned to the student's
  # tokens (byte-level BPE both; docs/cross_tokenizer.md).
  c.teacher.cross_tokenizer = False
  # The teacher's completion width in its own tokens (a longer completion is
  # skipped and counted); 0: twice rollout.max_new_tokens. With the teacher's
  # prompt width it must fit its max_position_embeddings.
  c.teacher.completion_len = 0

  c.data = ml_collections.ConfigDict(
    {
      # A `rock_jax.data.builders.BUILDERS` name.
      "name": "embedded",
      # Root of prepared datasets (a folder or gs:// URL); empty:
      # <cache_dir>/data.
      "data_dir": "",
      # Builder options as `k=v,...` (e.g. source=/data/gsm8k).
      "options": "",
      # Split the prompts of training come from.
      "train_split": "train",
      # Graded greedy evaluation split; empty: none.
      "eval_split": "test",
      # The longest student prompt in tokens, any width (arrays are padded to
      # its power-of-two bucket); 0: measured from the data. Longer: an error.
      "student_prompt_len": 32,
      # The teacher's, alike (its prompt may hold privileged information).
      "teacher_prompt_len": 32,
    }
  )
  c.rollout = ml_collections.ConfigDict(
    {
      # Generation budget per completion.
      "max_new_tokens": 64,
      # Completions sampled per prompt.
      "num_samples": 1,
      # Sampling temperature (0: greedy).
      "temperature": 1.0,
      # Keep the k most likely tokens (0: all).
      "top_k": 0,
      # Keep the smallest set of tokens with this much probability (1: all).
      "top_p": 1.0,
      # KV slots decoding at once (bounds the rollout's KV memory); 0: one
      # per sequence (train.batch_size x num_samples). A finished
      # sequence's slot starts the next one.
      "slots": 0,
      # Tokens per KV page: decode steps read each sequence's filled pages.
      "page_size": 128,
      # Own devices for sampling (start:stop of the device list; empty: the
      # student's mesh); the student's weights are copied there per update.
      "devices": "",
      # The rollout's mesh over rollout.devices; empty: `mesh`.
      "mesh": "",
      # The rollout's sharding rules; empty: student.rules.
      "rules": "",
      # Updates by which the sampler's weights lag the student's: 0 samples
      # step t's batch with the weights after update t - 1 (lockstep); 1
      # samples it with those after t - 2, so the rollout of step t + 1 runs
      # on rollout.devices while step t updates (needs rollout.devices).
      "staleness": 0,
    }
  )
  c.loss = ml_collections.ConfigDict(
    {
      # `rock_jax.losses.DIVERGENCES`: reverse_kl (exact, full vocabulary),
      # forward_kl, jsd, k3, or pg_reverse_kl (the sampled-token policy
      # gradient of reverse KL). k1 has no useful gradient and is rejected.
      "kind": "reverse_kl",
      # JSD's mixture weight (0: forward KL, 1: reverse KL).
      "beta": 0.5,
      # Both models' logits are divided by it before the softmax.
      "temperature": 1.0,
      # Weight of the divergence against cross-entropy on the sampled ids.
      "kd_ratio": 1.0,
      # Positions per chunk of the loss (never [B, T, V] logits at once).
      "chunk_size": 128,
      # `rock_jax.losses.NORMALIZERS`: tokens (Σwℓ / valid tokens, the
      # paper's), weights (Σwℓ / Σw), sequences, sequence_weights.
      "normalize": "tokens",
      # Truncation c of the importance weights min(c, p_current / p_sampler)
      # applied per position when rollout.staleness > 0.
      "is_cap": 2.0,
    }
  )
  c.rock = ml_collections.ConfigDict(
    {
      # Weight of Rock Tokens: 0 freezes them, 1 is uniform OPD.
      "lam": 0.0,
      # A position's weight follows the "emitted" token (the paper's) or the
      # "context" one before it.
      "align": "emitted",
      # Size of the rock set: the top k ids by R(v) (the paper's K = 100).
      "k": 100,
      # Occurrences an id needs before it can be selected.
      "min_count": 1,
      # Never select this many of the most frequent ids.
      "exclude_most_frequent": 0,
      # Only ids whose loss stagnates (`rock.improvement`, the fast EMA's
      # relative drop below the slow one, at most this): a token still being
      # learnt is no rock. Negative disables it (R(v) alone).
      "max_improvement": 0.1,
      # Only ids whose loss per occurrence is at least this multiple of the
      # mean over all positions: a frequent content token ranking high by
      # R(v) on its count alone stays trained. 0 disables it (the paper's).
      "min_loss_ratio": 1.0,
      # Only ids with R(v) at least this fraction of the largest. 0: off.
      "min_score_ratio": 0.01,
      # R(v) from the tracker's moving averages ("ema") or totals ("total").
      "source": "ema",
      # The tracker's slow moving-average decay per step.
      "decay": 0.99,
      # The fast moving average's decay (`rock.improvement` compares both).
      "fast_decay": 0.9,
      # Uniform steps before the first selection.
      "warmup_steps": 100,
      # Steps between selections after the first (0: keep the first).
      "refresh_every": 0,
      # A rock.json to weight instead of the tracker's selection.
      "static_list": "",
      # "frequency_matched": a random set matched to the selection's token
      # frequencies instead (the paper's control).
      "control": "none",
      # Seed of the frequency-matched control's draw.
      "control_seed": 0,
      # "answers": never select a token of the training split's reference
      # answers (its first protect_examples records), such as the digits of
      # a sum; fails at start-up on data without references. "auto":
      # "answers" where the data has references, else min_loss_ratio alone.
      # "": no guard (the paper's).
      "protect": "auto",
      # Training records whose reference answers `protect` reads.
      "protect_examples": 2048,
    }
  )
  c.optim = ml_collections.ConfigDict(
    {
      # Peak learning rate of the warm-up + cosine schedule.
      "learning_rate": 1e-3,
      # Linear warm-up steps.
      "warmup_steps": 5,
      # Where the cosine decay ends.
      "min_lr": 1e-5,
      # AdamW's first-moment decay.
      "b1": 0.9,
      # AdamW's second-moment decay.
      "b2": 0.98,
      # AdamW's decoupled weight decay.
      "weight_decay": 0.0,
      # Global-norm gradient clipping (<= 0: none).
      "clip_norm": 1.0,
    }
  )
  c.train = ml_collections.ConfigDict(
    {
      # Updates of the run.
      "steps": 300,
      # Prompts per step over all processes (times rollout.num_samples
      # sequences).
      "batch_size": 32,
      # Sequences per forward/backward over the whole mesh (0: all of the
      # step's batch_size x rollout.num_samples at once). Gradients and the
      # teacher's scoring accumulate over micro-batches inside the step, so
      # peak activation memory follows this and the update does not change.
      "micro_batch_size": 0,
      # Steps between metric logs.
      "log_every": 10,
      # Steps between student evaluations (0: at the start and end only).
      "eval_every": 50,
      # Evaluation problems (0: the whole split), greedy decoding.
      "eval_examples": 256,
      # Problems decoded at once when evaluating.
      "eval_batch_size": 128,
      # Steps between checkpoints (orbax, under <workdir>/checkpoints).
      "checkpoint_every": 100,
      # Checkpoints kept.
      "keep_checkpoints": 2,
      # On a nan/inf loss or gradient: "raise" stops naming the step window,
      # "skip" logs it and goes on.
      "nonfinite": "raise",
      # Export the student as a Hugging Face folder to <workdir>/export.
      "export": True,
      # Also export the student every this many steps to <workdir>/
      # export_step_<N> (0: never), e.g. for `launch/analyze.py`'s persistence.
      "export_every": 0,
      # Graded completions logged per evaluation (the first and last too).
      "log_samples": 3,
      # Steps "a:b" (or "a") to trace with jax.profiler into
      # <workdir>/profile (TensorBoard/XProf and Perfetto); "": none.
      "profile_steps": "",
    }
  )
  c.embedded = ml_collections.ConfigDict(
    {
      # Cache of prepared data, tokenizer and trained models (a folder or
      # gs:// URL); empty: $ROCK_JAX_CACHE or ~/.cache/rock_jax.
      "cache_dir": "",
      # `rock_jax.data.embedded_task.DIFFICULTIES`: default, easy, hard,
      # long_tail (rare unit words in every answer).
      "difficulty": "default",
      # Problems in the train split.
      "train_size": 20000,
      # Problems in the test split (the evaluation's).
      "test_size": 500,
      # A teacher across tokenizers: its own byte-level BPE of at most this
      # many ids on the task's corpus (fewer merges: words split otherwise,
      # other ids; needs teacher.cross_tokenizer). 0: the task's tokenizer.
      "teacher_vocab": 0,
      # Both are 2-layer Qwen3 decoders of width 64 (115k parameters),
      # measured on the train split's last eval_examples problems (held out
      # from their training). The teacher trains its 600 steps on its
      # privileged prompt and must then reach 0.95; the student is the same
      # model on the student prompt, kept at the first measurement (every
      # 10 steps of an 800-step schedule) in [0.45, 0.55]: a weaker Stage-1
      # checkpoint of the same quality on any CPU.
      "teacher": embedded_model(
        hidden_size=64,
        layers=2,
        steps=600,
        mixed_prefix=0.5,
        accuracy_band=(0.95, 1.0),
      ),
      "student": embedded_model(
        hidden_size=64,
        layers=2,
        steps=800,
        schedule_steps=800,
        accuracy_band=(0.45, 0.55),
        eval_every=10,
      ),
    }
  )
  return c


def embedded_model(
  *,
  hidden_size: int,
  layers: int,
  steps: int,
  schedule_steps: int = 0,
  mixed_prefix: float = 0.0,
  accuracy_band: tuple[float, float] = (0.0, 1.0),
  eval_every: int = 0,
) -> ml_collections.ConfigDict:
  """A model the embedded task trains with supervised fine-tuning.

  It takes at most `steps` steps of a warm-up + cosine schedule
  `schedule_steps` long (0: `steps`, the full schedule). A `mixed_prefix`
  share of its solutions open in another style and switch to the tagged one
  at a random slot (trained from the switch on), so a teacher follows its
  tag whatever the student wrote before. The model kept is the first whose
  greedy accuracy on `eval_examples` held-out problems lies in
  `accuracy_band`, measured every `eval_every` steps (0: once, at the end);
  see `rock_jax.embedded.sft.SFTSpec`.
  """
  return ml_collections.ConfigDict(
    {
      # Width of the Qwen3 decoder.
      "hidden_size": hidden_size,
      # Decoder layers.
      "layers": layers,
      # Attention heads (a divisor of hidden_size).
      "heads": 4,
      # Supervised steps at most.
      "steps": steps,
      # Length of the warm-up + cosine schedule (0: steps).
      "schedule_steps": schedule_steps,
      # Share of solutions that open in another style and switch to the
      # tagged one (trained from the switch on).
      "mixed_prefix": mixed_prefix,
      # Solutions per supervised step.
      "batch_size": 64,
      # Peak learning rate.
      "learning_rate": 3e-3,
      # Initialisation and data order.
      "seed": 0,
      # Held-out greedy accuracy the kept model lands in (inclusive).
      "accuracy_band": accuracy_band,
      # Steps between accuracy measurements (0: once, at the end).
      "eval_every": eval_every,
      # Held-out problems (the train split's last) it is measured on.
      "eval_examples": 512,
    }
  )
