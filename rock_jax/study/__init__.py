"""Analyses of finished runs from a config, and the paper's study.

Modules, in dependency order:
  context    `Context`: the session, the analysis corpus and its `Census`
  sections   one module per report section (census, gradients, ...)
  pipeline   `run(config)`: the configured analyses and the report
  reproduce  `run(root)`: the freeze runs of the embedded task, analysed
  isa_paths  `run(root)`: the default command on every XLA CPU code path
"""
