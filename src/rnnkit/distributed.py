"""Several processes, one run: torch.distributed as torchrun sets it up.

    torchrun --nproc_per_node 4 -m rnnkit train input.txt --out run      # one machine
    torchrun --nnodes 2 --node_rank 0 --master_addr HOST --nproc_per_node 8 -m rnnkit train ...

torchrun sets RANK, WORLD_SIZE, LOCAL_RANK (and the rendezvous address) in each process's
environment; `setup()` reads them and joins the process group: NCCL on GPUs, gloo on CPUs. The
training loop then wraps the model in DistributedDataParallel, gives each rank its own share of
the B streams, and lets only rank 0 write checkpoints and logs. A single process (no torchrun)
gets `World(rank=0, size=1)` and none of this machinery.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from .errors import RnnkitError


@dataclass(frozen=True)
class World:
    rank: int = 0  # this process's index among all processes
    size: int = 1  # number of processes
    local_rank: int = 0  # index on this machine: which GPU to use

    @property
    def main(self) -> bool:
        """Rank 0 writes the files and the logs."""
        return self.rank == 0


def setup(device_name: str) -> tuple[World, str]:
    """Join the process group if torchrun started us; returns the world and the device to use."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size == 1:
        return World(), device_name
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = device_name == "cuda" or (device_name == "auto" and torch.cuda.is_available())
    if use_cuda:
        torch.cuda.set_device(local_rank)
        device_name = f"cuda:{local_rank}"
    else:
        device_name = "cpu"
    if not dist.is_initialized():
        dist.init_process_group("nccl" if use_cuda else "gloo")
    return World(rank, size, local_rank), device_name


def teardown(world: World) -> None:
    if world.size > 1 and dist.is_initialized():
        dist.destroy_process_group()


def streams_of(world: World, batch_size: int) -> range:
    """The streams (rows of the global batch) this rank reads."""
    if batch_size % world.size:
        raise RnnkitError(f"--batch-size {batch_size} does not split evenly over {world.size} "
                          "processes; choose a multiple of the process count")
    share = batch_size // world.size
    return range(world.rank * share, (world.rank + 1) * share)


def mean(world: World, values: list[float]) -> list[float]:
    """The mean over ranks of each value (the identity in a single process)."""
    if world.size == 1:
        return values
    t = torch.tensor(values, dtype=torch.float64)
    dist.all_reduce(t)  # gloo and NCCL both sum; CPU tensors work with gloo
    return (t / world.size).tolist()


def broadcast(world: World, value: float) -> float:
    """Rank 0's value, on every rank."""
    if world.size == 1:
        return value
    t = torch.tensor([value], dtype=torch.float64)
    dist.broadcast(t, src=0)
    return float(t[0])


def gather_rows(world: World, tensor: torch.Tensor, dim: int) -> torch.Tensor:
    """Every rank's tensor concatenated along `dim`, in rank order (e.g. the batch of a state)."""
    if world.size == 1:
        return tensor
    parts = [torch.empty_like(tensor) for _ in range(world.size)]
    dist.all_gather(parts, tensor.contiguous())
    return torch.cat(parts, dim)


def barrier(world: World) -> None:
    if world.size > 1:
        dist.barrier()
