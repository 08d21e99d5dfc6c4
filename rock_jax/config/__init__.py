"""The config a run is described by, and the process settings it runs with.

Modules, in dependency order:
  keys      every training key with its default (`base_config`)
  analysis_keys  the analyses' keys (`analysis_config`)
  presets   model pairs, hardware meshes, `base(arg, name)`
  fields    reading values: workdir, cache folder, comma lists, k=v options
  placement each role's devices and mesh (teacher.devices, rollout.devices)
  validate  every check that needs no model or data, with the field's name
  compile_cache  JAX's persistent compilation cache, keyed on the code
  runtime   JAX and library settings of the commands, the multi-process join
  reference docs/configuration.md, generated from `keys`
"""
