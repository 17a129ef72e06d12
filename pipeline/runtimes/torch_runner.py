"""PyTorch eager (or TorchScript / torch.export GraphModule) runner: the reference side of parity checks."""

import numpy as np
import torch
import torch.nn as nn

from pipeline.runtimes.base import Runner


def set_eval(model: nn.Module) -> dict[nn.Module, bool]:
    """Switch to eval mode and return every submodule's previous flag, so the caller can restore it exactly
    (a model may deliberately keep some submodules in train mode, e.g. frozen BN tricks)."""
    previous = {module: module.training for module in model.modules()}
    try:
        model.eval()
    except NotImplementedError:
        # torch.export's ep.module() refuses train()/eval(): its graph was captured in a fixed mode already.
        pass
    return previous


def restore_modes(previous: dict[nn.Module, bool]) -> None:
    for module, training in previous.items():
        if module.training != training:
            module.training = training


class TorchRunner(Runner):
    name = "torch"

    def __init__(self, model: nn.Module, threads: int | None = None):
        super().__init__()
        self.model = model
        self.threads = threads
        self._previous_threads: int | None = None
        self._previous_modes: dict = {}

    def _device(self) -> torch.device:
        parameter = next(iter(self.model.parameters()), None)
        return parameter.device if parameter is not None else torch.device("cpu")

    def activate_impl(self) -> None:
        # torch's thread count is process-wide: set it while active and give the old value back afterwards.
        if self.threads is not None:
            self._previous_threads = torch.get_num_threads()
            torch.set_num_threads(self.threads)
        self._previous_modes = set_eval(self.model)

    def infer_impl(self, batch: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            output = self.model(torch.from_numpy(batch).to(self._device()))
        return output.detach().float().cpu().numpy()

    def deactivate_impl(self) -> None:
        restore_modes(self._previous_modes)
        self._previous_modes = {}
        if self._previous_threads is not None:
            torch.set_num_threads(self._previous_threads)
            self._previous_threads = None

    def describe_impl(self) -> dict:
        return {
            "runtime": "torch",
            "version": torch.__version__,
            "threads": self.threads or torch.get_num_threads(),
            "device": str(self._device()),
            "includes_transfers": True,  # host tensors in, logits back on the host
            "model": type(self.model).__name__,
        }
