"""Training on several processes (GPUs, or CPU processes for testing) with PyTorch's DDP.

`torchrun --nproc_per_node=N src/train.py ...` starts N copies of the training script and tells each
its RANK, LOCAL_RANK and WORLD_SIZE through environment variables. Each copy holds a full model,
trains on its own slice of the data, and DistributedDataParallel averages the gradients across the
copies during backward, so every copy takes the same optimizer step. The effect is one big batch.

Without torchrun these variables are absent and every method here becomes a no-op for one process, so the
training loop is written once, for any number of processes.

Who uses it: `train.py` (`Distributed.start`, and the `ddp` object it passes around), the training benchmark.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TypeVar

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from src.engine.errors import UserError

T = TypeVar("T")


@dataclass
class Distributed:
    """This process's place among the training processes, and the few collective operations training needs."""

    rank: int = 0  # this process's number among all processes
    local_rank: int = 0  # its number on this machine (which GPU it uses)
    world_size: int = 1

    @classmethod
    @contextlib.contextmanager
    def start(cls, device: str) -> Iterator[Distributed]:
        """Join the process group when started by torchrun (NCCL between GPUs, gloo between CPU processes),
        and leave it at the end; one process on its own when not."""
        if "RANK" not in os.environ:
            yield cls()
            return
        ddp = cls(int(os.environ["RANK"]), int(os.environ["LOCAL_RANK"]), int(os.environ["WORLD_SIZE"]))
        cuda = device in ("auto", "cuda") and torch.cuda.is_available()
        if cuda:
            torch.cuda.set_device(ddp.local_rank)
        dist.init_process_group(backend="nccl" if cuda else "gloo")
        try:
            yield ddp
        finally:
            if dist.is_initialized():
                dist.destroy_process_group()

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Only the main process (rank 0) prints, logs and saves."""
        return self.rank == 0

    def wrap(self, model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
        """The model DDP averages the gradients of (the model itself for one process).

        `find_unused_parameters=True` is here for exact resume, not for unused parameters (there are none):
        without it, DDP regroups its gradient buckets after a run's first step, so the first step after a
        `--resume` would sum the processes' gradients in another order than the uninterrupted run did, and
        with 3 or more processes the weights would differ in their last bits. It costs one walk over the
        autograd graph per step, small next to the step itself, and one warning per process at the first step
        ("did not find any unused parameters"): expected.
        """
        if not self.enabled:
            return model
        return DistributedDataParallel(model, device_ids=[self.local_rank] if device.type == "cuda" else None,
                                       find_unused_parameters=True)

    def sync_gradients(self, model: torch.nn.Module, sync: bool):
        """Context for one micro-batch's forward and backward: with `sync` False, DDP keeps the gradients
        local (`no_sync`), so accumulating k micro-batches costs one round of communication, not k."""
        if self.enabled and not sync:
            return model.no_sync()
        return contextlib.nullcontext()

    def _reduce(self, value: torch.Tensor, op) -> torch.Tensor:
        total = value.detach().clone()
        if dist.get_backend() == "nccl":
            total = total.cuda()
        dist.all_reduce(total, op=op)
        return total.to(value.device)

    def sum(self, value: torch.Tensor) -> torch.Tensor:
        """Sum a tensor over all processes (the identity for one process)."""
        return self._reduce(value, dist.ReduceOp.SUM) if self.enabled else value

    def mean(self, value: torch.Tensor) -> torch.Tensor:
        """Average a tensor over all processes (the identity for one process)."""
        return self.sum(value) / self.world_size

    def max(self, value: float) -> float:
        """The largest `value` of all processes (the value itself for one process)."""
        if not self.enabled:
            return value
        return self._reduce(torch.tensor([float(value)], dtype=torch.float64), dist.ReduceOp.MAX).item()

    def any(self, flag: bool) -> bool:
        """True if `flag` is true in any process: lets all processes agree to stop at the same step."""
        if not self.enabled:
            return flag
        return bool(self._reduce(torch.tensor([1.0 if flag else 0.0]), dist.ReduceOp.MAX).item())

    def together(self, work: Callable[[], T]) -> T:
        """`work()` on every process, failing on all of them if it fails (a UserError) on any: a process that
        could not read its data (a folder missing on one machine) must not leave the others waiting for it in
        the next collective call until the timeout."""
        error = None
        try:
            result = work()
        except UserError as err:
            error = err
        if self.any(error is not None):
            raise error or UserError("another training process stopped with an error (its message is above)")
        return result

    def gather(self, tensor: torch.Tensor) -> list[torch.Tensor]:
        """Every process's copy of a same-shaped tensor, as a list in rank order (used to save each
        process's data-loader position). Every process gets the list; only the main one uses it."""
        if not self.enabled:
            return [tensor]
        device = "cuda" if dist.get_backend() == "nccl" else "cpu"
        parts = [torch.empty_like(tensor, device=device) for _ in range(self.world_size)]
        dist.all_gather(parts, tensor.to(device))
        return [part.cpu() for part in parts]

    def print(self, *args, **kwargs) -> None:
        """`print`, on the main process only."""
        if self.is_main:
            print(*args, **kwargs)
