"""This process's place in a torchrun job, and the collectives the training loop makes.

Every collective runs on tensors of the training device: NCCL, the process group on GPUs, has no
backend for CPU tensors."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass
class Distributed:
    """This process's place in a torchrun job (rank 0 of 1 without torchrun)."""

    rank: int = 0
    local_rank: int = 0
    world_size: int = 1

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def all_reduce(self, tensor: torch.Tensor, op: str = "sum") -> torch.Tensor:
        """tensor reduced over the ranks in place (itself without torchrun); enqueued on the device, no host sync."""
        if self.enabled:
            dist.all_reduce(tensor, op={"sum": dist.ReduceOp.SUM, "max": dist.ReduceOp.MAX}[op])
        return tensor

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()


def init_distributed() -> Distributed:
    """Join the process group that torchrun describes in the environment (NCCL on GPUs, gloo on CPUs)."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return Distributed()
    info = Distributed(int(os.environ["RANK"]), int(os.environ["LOCAL_RANK"]), int(os.environ["WORLD_SIZE"]))
    if torch.cuda.is_available():
        torch.cuda.set_device(info.local_rank)
        dist.init_process_group("nccl", device_id=torch.device("cuda", info.local_rank))
    else:
        dist.init_process_group("gloo")
    return info
