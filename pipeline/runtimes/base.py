"""One small runner interface (after Polygraphy's): activate, infer float32 NCHW -> logits, deactivate.

Every stage that runs a model (parity, latency, accuracy) goes through a Runner, so swapping the
runtime never changes how a number is measured.
"""

from abc import ABC, abstractmethod

import numpy as np

from pipeline.errors import PipelineError


class Runner(ABC):
    name: str = "runner"

    def __init__(self) -> None:
        self.is_active = False

    # --- lifecycle -------------------------------------------------------------------------------
    def activate(self) -> None:
        """Load the model / create the session. Expensive set-up lives here, never in `infer`."""
        if not self.is_active:
            self.activate_impl()
            self.is_active = True

    def deactivate(self) -> None:
        if self.is_active:
            try:
                self.deactivate_impl()
            finally:
                self.is_active = False

    def __enter__(self) -> "Runner":
        self.activate()
        return self

    def __exit__(self, *exc) -> None:
        self.deactivate()

    # --- inference -------------------------------------------------------------------------------
    def infer(self, batch: np.ndarray) -> np.ndarray:
        """float32 NCHW batch in, float32 logits [N, classes] out."""
        if not self.is_active:
            raise PipelineError(f"runner {self.name!r} is not active: use it as a context manager or call activate()")
        batch = np.ascontiguousarray(batch, dtype=np.float32)
        if batch.ndim != 4:
            raise PipelineError(f"runner {self.name!r} expects an NCHW batch, got shape {tuple(batch.shape)}")
        return np.asarray(self.infer_impl(batch), dtype=np.float32)

    def describe(self) -> dict:
        """Runtime name, version, threads and device/providers, for reports."""
        return {"runner": self.name, **self.describe_impl()}

    # --- what a runtime implements ---------------------------------------------------------------
    @abstractmethod
    def activate_impl(self) -> None: ...

    @abstractmethod
    def infer_impl(self, batch: np.ndarray) -> np.ndarray: ...

    @abstractmethod
    def deactivate_impl(self) -> None: ...

    @abstractmethod
    def describe_impl(self) -> dict: ...
