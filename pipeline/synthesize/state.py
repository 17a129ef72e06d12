"""Saving and restoring a synthesizer between stages (its generator, optimiser and RNG travel with it)."""

from pathlib import Path

import torch

from pipeline.errors import PipelineError
from pipeline.fileio import atomic_torch_save
from pipeline.models.teacher_view import TeacherView
from pipeline.synthesize.base import Synthesizer, create_synthesizer

SYNTHESIZER_FORMAT = "edge-pipeline/synthesizer-v1"


def save_synthesizer(path: Path, synthesizer: Synthesizer, seed: int) -> None:
    atomic_torch_save(
        {
            "format": SYNTHESIZER_FORMAT,
            "method": synthesizer.name,
            "options": synthesizer.options,
            "seed": seed,
            "state": synthesizer.state_dict(),
        },
        path,
    )


def load_synthesizer(path: Path, teacher: TeacherView, seed: int | None = None) -> Synthesizer:
    """Rebuild the synthesizer saved at `path`; a different `seed` (another torchrun rank) re-seeds its sampling."""
    saved = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(saved, dict) or saved.get("format") != SYNTHESIZER_FORMAT:
        raise PipelineError(f"{path} is not an edge-pipeline synthesizer file")
    synthesizer = create_synthesizer(saved["method"], teacher, saved["options"], saved["seed"])
    synthesizer.load_state_dict(saved["state"])
    if seed is not None and seed != saved["seed"]:
        synthesizer.rng.manual_seed(seed)
    return synthesizer
