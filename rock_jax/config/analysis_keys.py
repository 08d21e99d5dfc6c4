"""The analyses' config keys (`config.analysis` of `configs/analyze_rock.py`).

The training keys are in `rock_jax.config.keys`; `rock_jax.analysis` reads
these through `launch/analyze.py`.
"""

from __future__ import annotations

import ml_collections


def analysis_config(embedded: bool) -> ml_collections.ConfigDict:
  """`config.analysis` of `configs/analyze_rock.py` (`rock_jax.analysis`).

  The real-model defaults are the paper's (K = 100 on 500 problems, groups
  of 100 / 100 / 200, 200 knockout candidates); the embedded task, with 18
  planted rocks in a 337-id vocabulary, scales the sets down.
  """
  a = ml_collections.ConfigDict()
  # Comma list from census, gradients, persistence, knockout, freeze.
  a.analyses = "census,gradients,persistence,knockout,freeze"
  # The student analysed; empty: <workdir>/export (the run's final export).
  a.student = ""
  # Early checkpoint for persistence; empty: the run's earliest
  # export_step_<N> (train.export_every), or no offline persistence.
  a.early = ""
  # "own": each checkpoint on its own rollouts (the paper); "fixed": the
  # late rollouts re-scored by the early student; "both".
  a.persistence_contexts = "both"
  # Where the JSON, figures and report go; empty: <workdir>/analysis.
  a.out_dir = ""
  # The analysis corpus: greedy student rollouts on this split; empty:
  # data.eval_split. max_new_tokens 0: rollout.max_new_tokens.
  a.split = ""
  # Problems of the corpus.
  a.num_examples = 500
  # Problems decoded at once.
  a.batch_size = 128
  # Generation budget of the corpus (0: rollout.max_new_tokens).
  a.max_new_tokens = 0
  # Size of the rock set. The figure recipe (real models) drops the 5 most
  # frequent types and keeps types seen twice; the freeze-list recipe
  # (embedded) neither.
  a.k = 20 if embedded else 100
  # Occurrences a type needs to be selected.
  a.min_count = 1 if embedded else 2
  # The most frequent types never selected.
  a.exclude_most_frequent = 0 if embedded else 5
  # K values of the coverage curve (share of the corpus KL in the top K).
  a.k_sweep = (
    "1,2,5,10,15,20,30,50,75,100"
    if embedded
    else "5,10,20,30,50,75,100,150,200,300,500,750,1000,1500,2000,3000"
  )
  # Nested corpus prefixes (problems) whose top K is compared with the
  # whole corpus's (mean Jaccard).
  a.stability_sizes = "50,100,200,300,400"
  # Size of the rare high-KL group (the embedded student emits only ~35
  # types: 20 rocks leave ~15 others).
  a.high_kl_k = 8 if embedded else 100
  # Occurrences a rare high-KL type needs.
  a.high_kl_min_count = 2
  # Size of the random comparison group.
  a.random_k = 8 if embedded else 200
  # Seed of the random group's draw.
  a.random_seed = 0
  # Batches of train.batch_size corpus sequences for the parameter-gradient
  # share (two backward passes each).
  a.grad_batches = 4
  # Top types banned one at a time in the knockout.
  a.knockout_candidates = 40 if embedded else 200
  # Problems each knockout decodes (0: the whole corpus).
  a.knockout_examples = 0
  # Accuracy change that makes a Strong Pillar or Stumbling Block.
  a.epsilon = 0.01
  # Significance level of the paired tests.
  a.alpha = 0.05
  # Bootstrap resamples.
  a.resamples = 10000
  # Seed of the bootstrap's draws.
  a.bootstrap_seed = 0
  # Finished training runs to compare (comma list; globs allowed).
  a.freeze_runs = ""
  # Steps to this share of the uniform runs' final accuracy.
  a.target_fraction = 0.95
  # "markdown", "html" or both.
  a.formats = "markdown,html"
  return a
