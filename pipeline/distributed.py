"""torch.distributed, only when launched by torchrun (RANK/WORLD_SIZE in the environment).

Data-parallel training: every rank synthesises its own images (seeded by rank), the student is wrapped
in DistributedDataParallel so gradients are averaged, rank 0 decides when the wall-time budget is spent,
and only rank 0 writes the run folder. NCCL on GPUs, gloo on CPUs. Outside torchrun all of this is a no-op.
"""

import os
from datetime import timedelta

import torch
import torch.distributed as dist


def launched_by_torchrun() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


_finished = False


def init(device: torch.device) -> None:
    if launched_by_torchrun() and not dist.is_initialized() and not _finished:
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend, timeout=timedelta(minutes=30))


def finish() -> None:
    """Leave the process group (after the data-parallel stages; export and bench run on rank 0 alone)."""
    global _finished
    if active():
        dist.barrier()
        dist.destroy_process_group()
        _finished = True


def env_rank() -> int:
    """The launcher's rank, valid before the process group exists."""
    return int(os.environ.get("RANK", "0"))


def active() -> bool:
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    return dist.get_rank() if active() else 0


def world_size() -> int:
    return dist.get_world_size() if active() else 1


def is_main() -> bool:
    return rank() == 0


def barrier() -> None:
    if active():
        dist.barrier()


def broadcast_object(value):
    """Rank 0's value on every rank (decisions such as 'budget spent' or 'stage up to date')."""
    if not active():
        return value
    holder = [value]
    dist.broadcast_object_list(holder, src=0)
    return holder[0]


def gather_objects(value) -> list:
    """Every rank's value, on every rank (small objects, or CPU tensors at the end of a stage)."""
    if not active():
        return [value]
    gathered = [None] * world_size()
    dist.all_gather_object(gathered, value)
    return gathered


def average_buffers(model: torch.nn.Module) -> None:
    """DDP syncs gradients, not BatchNorm running statistics, which each rank updates from its own last batches:
    average them (integer counters come from rank 0) so every rank ends with the same model."""
    if not active():
        return
    for buffer in model.buffers():
        if buffer.is_floating_point():
            dist.all_reduce(buffer, op=dist.ReduceOp.SUM)
            buffer.div_(world_size())
        else:
            dist.broadcast(buffer, src=0)


def local_device(requested: str) -> torch.device:
    """--device auto|cpu|cuda|cuda:N; under torchrun each rank takes the GPU of its LOCAL_RANK."""
    from pipeline.errors import PipelineError

    requested = requested.lower()
    if requested == "auto":
        requested = "cuda" if torch.cuda.is_available() else "cpu"
    if requested.startswith("cuda"):
        if not torch.cuda.is_available():
            raise PipelineError(f"--device {requested}: no CUDA GPU is visible to PyTorch")
        if requested == "cuda":
            requested = f"cuda:{int(os.environ.get('LOCAL_RANK', '0')) % torch.cuda.device_count()}"
        torch.cuda.set_device(torch.device(requested))
    elif requested != "cpu":
        raise PipelineError(f"unknown --device {requested!r} (auto, cpu, cuda, cuda:N)")
    return torch.device(requested)
