"""Where a run computes: the device, autocast and loss scaling, and the DistributedDataParallel
wrapper under torchrun (see `distributed` for the process group itself).

    device = pick_device("auto")                  # cuda when available, else cpu
    with autocast(device, "bf16"): ...            # fp32: no autocast at all
    net = wrap(model, world, device)              # DDP when torchrun started us, else the model
    with denormals_flushed(): ...                 # training on a CPU (see there)
"""

from __future__ import annotations

import contextlib

import numpy as np
import torch

from . import distributed
from .errors import RnnkitError

AUTOCAST = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}  # --precision -> dtype


def flushing() -> bool:
    """Whether this thread reads and writes denormal floats (below 1.2e-38) as 0."""
    return (torch.tensor([1e-39]) * 1.0).item() == 0.0


@contextlib.contextmanager
def denormals_flushed():
    """Denormal floats read and written as 0 on the CPU while training, as they were before
    afterwards (`torch.set_flush_denormal`, in this thread and in the threads PyTorch starts
    meanwhile, which keep it).

    Backpropagation through long sequences makes gradients that fade into denormals, which
    some processors compute at a fraction of their speed: on an Intel Xeon, an LSTM's backward
    pass over 361 steps (batch 16, hidden 128, one thread) took 340 ms with them and 45 ms
    without. A value that small changes no trained weight; outside training (a temperature
    of 5e-324, a user's own arithmetic) Python's floats keep their meaning."""
    before = flushing()
    for dtype in (np.float16, np.float32, np.float64, np.longdouble):
        np.finfo(dtype)  # measured once, kept: measured while flushing, its smallest denormal
        # is 0, and numpy warns of that (on importing numpy.ma, as matplotlib does)
    torch.set_flush_denormal(True)
    try:
        yield
    finally:
        torch.set_flush_denormal(before)


def pick_device(name: str | torch.device, precision: str = "fp32") -> torch.device:
    """The device for --device NAME ("auto": cuda when available); `precision` is refused where
    that device cannot train in it (fp16 on a CPU: oneDNN has no fp16 LSTM)."""
    name = str(name)  # a torch.device too
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        kind = torch.device(name).type
    except RuntimeError:
        raise RnnkitError(f"unknown device {name!r}; give cpu, cuda, cuda:N or auto") from None
    if kind == "meta":  # shapes without data: nothing could run
        raise RnnkitError(f"rnnkit runs on a device that holds data, not {name!r}; give cpu, "
                          "cuda, cuda:N or auto")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise RnnkitError("--device cuda asked for, but torch sees no CUDA GPU; use --device cpu")
    if precision == "fp16" and not name.startswith("cuda"):
        raise RnnkitError("--precision fp16 trains on a GPU only; on the CPU use --precision "
                          "bf16 or fp32")
    return torch.device(name)


def autocast(device: torch.device, precision: str):
    """The forward pass's autocast for --precision: bf16 or fp16, or nothing (fp32)."""
    dtype = AUTOCAST[precision]
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype)


def grad_scaler(device: torch.device, precision: str) -> torch.amp.GradScaler:
    """fp16 gradients underflow without loss scaling; bf16 and fp32 need none (then a no-op)."""
    return torch.amp.GradScaler(device.type, enabled=precision == "fp16")


def wrap(model: torch.nn.Module, world: distributed.World,
         device: torch.device) -> torch.nn.Module:
    """The module the steps call: DDP, which averages the gradients over the processes, under
    torchrun; the model itself otherwise."""
    if not world.joined:
        return model
    return torch.nn.parallel.DistributedDataParallel(
        model, device_ids=[device.index] if device.type == "cuda" else None)


def to_device(batch: torch.Tensor, device: torch.device) -> torch.Tensor:
    """A CPU tensor onto the device; through pinned memory, without waiting, to a GPU."""
    if device.type == "cuda":
        return batch.pin_memory().to(device, non_blocking=True)
    return batch
