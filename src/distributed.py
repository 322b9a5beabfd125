"""Training on several processes (GPUs, or CPU processes for testing) with PyTorch's DDP.

`torchrun --nproc_per_node=N src/train.py ...` starts N copies of the training script and tells each
its RANK, LOCAL_RANK and WORLD_SIZE through environment variables. Each copy holds a full model,
trains on its own slice of the data, and DistributedDataParallel averages the gradients across the
copies during backward, so every copy takes the same optimizer step. The effect is one big batch.

Without torchrun these variables are absent and everything here becomes a no-op for one process.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass
class Dist:
    rank: int = 0  # this process's number among all processes
    local_rank: int = 0  # its number on this machine (which GPU it uses)
    world_size: int = 1

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Only the main process (rank 0) prints, logs and saves."""
        return self.rank == 0


def setup(device_type: str) -> Dist:
    """Join the process group when started by torchrun: NCCL between GPUs, gloo between CPU processes."""
    if "RANK" not in os.environ:
        return Dist()
    info = Dist(int(os.environ["RANK"]), int(os.environ["LOCAL_RANK"]), int(os.environ["WORLD_SIZE"]))
    if device_type == "cuda":
        torch.cuda.set_device(info.local_rank)
    dist.init_process_group(backend="nccl" if device_type == "cuda" else "gloo")
    return info


def teardown(info: Dist) -> None:
    if info.enabled and dist.is_initialized():
        dist.destroy_process_group()


def sum_across(value: torch.Tensor, info: Dist) -> torch.Tensor:
    """Sum a tensor over all processes (the identity for one process)."""
    if not info.enabled:
        return value
    total = value.detach().clone()
    if dist.get_backend() == "nccl":
        total = total.cuda()
    dist.all_reduce(total, op=dist.ReduceOp.SUM)
    return total.to(value.device)


def mean_across(value: torch.Tensor, info: Dist) -> torch.Tensor:
    """Average a tensor over all processes (the identity for one process)."""
    return sum_across(value, info) / info.world_size


def any_across(flag: bool, info: Dist) -> bool:
    """True if `flag` is true in any process: lets all processes agree to stop at the same step."""
    if not info.enabled:
        return flag
    t = torch.tensor([1.0 if flag else 0.0])
    if dist.get_backend() == "nccl":
        t = t.cuda()
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


def gather_to_main(tensor: torch.Tensor, info: Dist) -> list[torch.Tensor]:
    """Every process's copy of a same-shaped tensor, as a list on the main process (used to save each
    process's data-loader position). Each process gets the list; only the main one uses it."""
    if not info.enabled:
        return [tensor]
    device = "cuda" if dist.get_backend() == "nccl" else "cpu"
    parts = [torch.empty_like(tensor, device=device) for _ in range(info.world_size)]
    dist.all_gather(parts, tensor.to(device))
    return [part.cpu() for part in parts]
