"""Recipes: which stages a command runs, in which order, with which inputs, resolved before the run
(`options` the settings, `context` their validation, `stage_specs` one factory per stage, `build` the run,
`summary` what it hands on, `single_model` the one-model commands). The top layer: imports stages, never the
reverse."""
