"""What every loader hands back: the model in eval mode and what the pipeline knows about it."""

from dataclasses import dataclass, field
from pathlib import Path

import torch.nn as nn

from pipeline.preprocess import Preprocess


@dataclass
class LoadedModel:
    model: nn.Module  # eval mode, CPU, float32
    arch: str | None  # registry name when known
    num_classes: int
    preprocess: Preprocess
    source_format: str  # "pipeline" | "state_dict" | "torchscript" | "torch.export" | "pickle"
    path: Path
    metadata: dict = field(default_factory=dict)
    # where `preprocess` came from: "recorded" in the file, "guessed" (a bare file that says nothing), "given"
    preprocess_source: str = "recorded"

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return self.preprocess.input_shape

    @property
    def name(self) -> str:
        """How tables and summaries name the model: its registry name, else its class ("TinyNet, unregistered";
        a TorchScript module keeps its Python class name; a torch.export program keeps none)."""
        if self.arch:
            return self.arch
        if self.source_format == "torch.export":
            return "torch.export program, unregistered"
        # inside the wrapper that runs a fixed-batch graph a batch at a time (a ScriptModule's own .graph is its IR)
        model = self.model.graph if getattr(self.model, "fixed_batch", None) else self.model
        inner = getattr(model, "original_name", None) or type(model).__name__
        return f"{inner}, unregistered"
