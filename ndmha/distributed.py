"""Multi-GPU training with PyTorch's own engine: torchrun starts the processes,
DistributedDataParallel (DDP) averages the gradients, a DistributedSampler shards the data.

``train`` (ndmha.train) reads the environment torchrun sets (``WORLD_SIZE``, ``RANK``,
``LOCAL_RANK``); with one process it is plain single-device training. Rank 0 alone writes logs,
checkpoints and the model. ``ndmha.launch`` starts torchrun when the train rule asks for more than
one GPU.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class Ranks:
    """This process's place in the job."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world > 1

    @classmethod
    def from_env(cls) -> "Ranks":
        """What torchrun set (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``); one process without it."""
        return cls(int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)),
                   int(os.environ.get("LOCAL_RANK", 0)))


def init(device: str) -> tuple[Ranks, torch.device | None]:
    """Join the process group torchrun set up (nccl on GPU, gloo on CPU); the device of this rank
    (None: single process, the caller resolves it)."""
    ranks = Ranks.from_env()
    if not ranks.distributed:
        return ranks, None
    gpu = torch.cuda.is_available() and device != "cpu"
    if gpu:  # before the process group: NCCL binds each rank's communicator to this device
        torch.cuda.set_device(ranks.local_rank)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if gpu else "gloo")
    if gpu:
        return ranks, torch.device("cuda", ranks.local_rank)
    return ranks, torch.device("cpu")


def all_true(flag: torch.Tensor) -> torch.Tensor:
    """Whether ``flag`` (a bool tensor on this rank's device) holds on every rank, as a bool
    tensor on the same device, so that all ranks skip a step together; no host sync."""
    if not dist.is_initialized():
        return flag
    value = flag.to(torch.float32)
    dist.all_reduce(value, op=dist.ReduceOp.MIN)
    return value > 0.5


def all_sum(values: list[float], device: torch.device) -> list[float]:
    """Element-wise sum over the ranks."""
    if not dist.is_initialized():
        return values
    tensor = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(tensor)
    return tensor.tolist()


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def shutdown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()
