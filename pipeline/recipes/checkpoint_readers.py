"""Every technique that writes checkpoints of its own shape, imported so that their readers are registered with
the loader (`models.checkpoint.register_*`; `models/` itself imports no technique). Every command that loads a
checkpoint imports this first."""

import pipeline.drop.blocks  # noqa: F401  (checkpoints of dropped models: `dropped_blocks`)
import pipeline.quantize.packed  # noqa: F401  (packed 1-bit binary weights)
