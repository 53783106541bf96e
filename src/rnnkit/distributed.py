"""Several processes, one run: torch.distributed as torchrun sets it up.

    torchrun --nproc_per_node 4 -m rnnkit train input.txt --out run      # one machine
    torchrun --nnodes 2 --node_rank 0 --master_addr HOST --nproc_per_node 8 -m rnnkit train ...

torchrun sets RANK, WORLD_SIZE, LOCAL_RANK and the rendezvous address (MASTER_ADDR, MASTER_PORT)
in each process's environment; `setup()` reads them and joins the process group. The training
loop then wraps the model in DistributedDataParallel, gives each rank its own share of the B
streams, and lets only rank 0 write checkpoints and logs. A process that torchrun did not start
gets `World(rank=0, size=1)` and none of this machinery; one that it did start joins the group
even when it is the only one, so `--nproc_per_node 1` runs the same code as 8.

Which backend serves which tensors: NCCL moves only CUDA tensors, gloo moves CPU tensors (and
CUDA ones, slowly). On GPUs the group is "cpu:gloo,cuda:nccl", so that every collective here
works whatever device its tensors are on: the per-step numbers of `mean` and `broadcast` are
Python floats sent as small CPU tensors through gloo, while the gradients (DDP) and the carried
state (`gather_rows`) stay on the GPU and go through NCCL. On CPUs the group is gloo alone.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass

import torch
import torch.distributed as dist

from .errors import RnnkitError

BACKENDS = {"cuda": "cpu:gloo,cuda:nccl", "cpu": "gloo"}  # device type -> process group backend
TORCHRUN_VARIABLES = ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


@dataclass(frozen=True)
class World:
    rank: int = 0  # this process's index among all processes
    size: int = 1  # number of processes
    local_rank: int = 0  # index on this machine: which GPU to use
    joined: bool = False  # a process group exists (torchrun), even of one process
    owner: bool = False  # this `setup` made the group, so its `teardown` ends it

    @property
    def main(self) -> bool:
        """Rank 0 writes the files and the logs."""
        return self.rank == 0


def setup(device_name: str) -> tuple[World, str]:
    """Join the process group if torchrun started us; returns the world and the device to use.

    `device_name` is "auto", "cpu" or "cuda"; under torchrun a GPU run gets "cuda:LOCAL_RANK".
    """
    size = int(os.environ.get("WORLD_SIZE", "1"))
    missing = [name for name in TORCHRUN_VARIABLES if name not in os.environ]
    if missing:
        if size > 1:
            raise RnnkitError(f"WORLD_SIZE is {size} but {', '.join(missing)} are not set; start "
                              "several processes with torchrun (see rnnkit's README)")
        return World(), device_name
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = device_name == "cuda" or (device_name == "auto" and torch.cuda.is_available())
    if use_cuda:
        if not torch.cuda.is_available():
            raise RnnkitError("--device cuda asked for, but torch sees no CUDA GPU; use "
                              "--device cpu")
        if local_rank >= torch.cuda.device_count():
            raise RnnkitError(f"LOCAL_RANK {local_rank} has no GPU: this machine shows "
                              f"{torch.cuda.device_count()}; give torchrun --nproc_per_node "
                              f"{torch.cuda.device_count()} or fewer")
        torch.cuda.set_device(local_rank)  # before the group, so NCCL binds this rank's GPU
        device_name = f"cuda:{local_rank}"
    else:
        device_name = "cpu"
    # A group that exists already is its maker's (an ensemble's members train in one group):
    # joined again, it is left to that maker to end, as making a new one would hang.
    owner = not dist.is_initialized()
    if owner:
        dist.init_process_group(BACKENDS["cuda" if use_cuda else "cpu"])
    return World(rank, size, local_rank, joined=True, owner=owner), device_name


def launched(name: str, default: int) -> int:
    """A number torchrun set in the environment (RANK, WORLD_SIZE), or `default` where torchrun
    did not start this process (not all of its variables are set)."""
    if any(variable not in os.environ for variable in TORCHRUN_VARIABLES):
        return default
    return int(os.environ[name])


def launched_rank() -> int:
    """This process's rank as torchrun set it, before any group is joined (0 without torchrun):
    what a command needs to know to leave the writing and the reports to rank 0."""
    return launched("RANK", 0)


def launched_size() -> int:
    """The number of processes torchrun started (1 without torchrun)."""
    return launched("WORLD_SIZE", 1)


# What a collective raises when another process of the group has gone (gloo's and NCCL's words)
PEER_GONE = ("Connection closed by peer", "Connection reset by peer", "Broken pipe",
             "NCCL communicator was aborted", "remote process exited")


def peer_stopped(error: BaseException) -> bool:
    """Whether `error` is a collective failing because another process of this torchrun stopped
    (refused, failed, or killed): that process says why; this one has nothing to add but that."""
    return launched_size() > 1 and isinstance(error, RuntimeError) and \
        any(words in str(error) for words in PEER_GONE)


def teardown(world: World) -> None:
    """Leave the group this process made (call it from a `finally`). After a normal end the
    ranks leave together, so that none closes its connections while another still uses them.
    With an exception in flight the other ranks may never come, so it leaves at once."""
    if world.joined and world.owner and dist.is_initialized():
        if sys.exc_info()[0] is None:
            dist.barrier()
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
    if not world.joined:
        return values
    t = torch.tensor(values, dtype=torch.float64)  # on the CPU: gloo's part of the group
    dist.all_reduce(t)  # a sum
    return (t / world.size).tolist()


def sum_tensor(world: World, tensor: torch.Tensor) -> torch.Tensor:
    """The sum over ranks of a tensor, in place, on its device: no wait for the GPU."""
    if world.joined:
        dist.all_reduce(tensor)
    return tensor


def broadcast(world: World, value: float) -> float:
    """Rank 0's value, on every rank."""
    if not world.joined:
        return value
    t = torch.tensor([value], dtype=torch.float64)  # on the CPU, as in mean
    dist.broadcast(t, src=0)
    return float(t[0])


def gather_rows(world: World, tensor: torch.Tensor, dim: int) -> torch.Tensor:
    """Every rank's tensor concatenated along `dim`, in rank order (e.g. the batch of a state).

    The tensor stays on its device (NCCL's part of the group for a GPU's tensor).
    """
    if not world.joined:
        return tensor
    tensor = tensor.contiguous()  # all_gather writes whole buffers: no strided views
    parts = [torch.empty_like(tensor) for _ in range(world.size)]
    dist.all_gather(parts, tensor)
    return torch.cat(parts, dim)


def barrier(world: World) -> None:
    if world.joined:
        dist.barrier()
