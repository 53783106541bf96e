"""torchrun's process group: which backend serves each collective, one-process groups, errors."""

import pytest
import torch
import torch.distributed as dist
from conftest import free_port, one_error_line, torchrun
from torch.distributed.distributed_c10d import BackendConfig

import rnnkit
from rnnkit import checkpoint, distributed


class FakeGroup:
    """A process group of `size` ranks that all hold the same values, with torch's rule for
    which backend serves a tensor: the device-to-backend map of the backend string given to
    init_process_group. A tensor on a device the map lacks fails as it does in torch (a group of
    NCCL alone has no backend for CPU tensors)."""

    def __init__(self, size: int):
        self.size, self.backend, self.calls = size, None, []

    def init_process_group(self, backend):
        self.backend = backend
        self.calls.append(("init_process_group", backend))

    def serve(self, name, tensors):
        served = BackendConfig(self.backend).get_device_backend_map()
        for t in tensors:
            if t.device.type not in served:
                raise RuntimeError(f"No backend type associated with device type {t.device.type}")
            self.calls.append((name, served[t.device.type]))

    def all_reduce(self, tensor):
        self.serve("all_reduce", [tensor])
        tensor.mul_(self.size)  # the sum of equal values

    def broadcast(self, tensor, src):
        self.serve("broadcast", [tensor])

    def all_gather(self, parts, tensor):
        self.serve("all_gather", [tensor, *parts])
        for part in parts:
            part.copy_(tensor)

    def barrier(self):
        self.calls.append(("barrier", BackendConfig(self.backend).get_device_backend_map()))


def torchrun_environment(monkeypatch, rank, size, local_rank, port=29500):
    for name, value in {"RANK": rank, "WORLD_SIZE": size, "LOCAL_RANK": local_rank,
                        "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": port}.items():
        monkeypatch.setenv(name, str(value))


def test_every_collective_has_a_backend_for_its_tensors_on_gpus(monkeypatch):
    """A GPU machine without a GPU: torch.cuda answers as on two GPUs, the group is faked."""
    group = FakeGroup(size=2)
    torchrun_environment(monkeypatch, rank=1, size=2, local_rank=1)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "set_device", lambda i: group.calls.append(("set_device", i)))
    monkeypatch.setattr(dist, "is_initialized", lambda: False)
    for name in ("init_process_group", "all_reduce", "broadcast", "all_gather", "barrier"):
        monkeypatch.setattr(dist, name, getattr(group, name))

    world, device = distributed.setup("auto")
    assert device == "cuda:1" and (world.rank, world.size, world.local_rank) == (1, 2, 1)
    # NCCL binds the GPU that is current when the group starts.
    assert group.calls[:2] == [("set_device", 1), ("init_process_group", group.backend)]
    served = BackendConfig(group.backend).get_device_backend_map()
    assert served["cuda"] == "nccl"  # gradients and states go through NCCL

    assert distributed.mean(world, [2.5, 1.0]) == [2.5, 1.0]
    assert distributed.broadcast(world, 0.75) == 0.75
    state = torch.arange(12.0).view(1, 3, 4)[:, :, ::2]  # (L, B, H), a strided view as sliced
    gathered = distributed.gather_rows(world, state, 1)
    assert gathered.shape == (1, 6, 2)
    torch.testing.assert_close(gathered, torch.cat([state, state], 1))
    distributed.barrier(world)
    done = [name for name, _ in group.calls[2:]]
    assert done == ["all_reduce", "broadcast", "all_gather", "all_gather", "all_gather",
                    "barrier"]


def test_one_process_under_torchrun_joins_the_group_and_trains_the_same(corpus, tmp_path,
                                                                          monkeypatch):
    model_cfg = rnnkit.ModelConfig(hidden=32, layers=1)

    def train_cfg(steps):
        return rnnkit.TrainConfig(seq_len=16, batch_size=4, max_steps=steps, eval_every=10,
                                  warmup=5, sample_length=0, device="cpu")

    def ten_steps_then_resume_to_twenty(run):
        monkeypatch.setenv("MASTER_PORT", str(free_port()))  # read only under torchrun
        rnnkit.train([corpus], run, model_cfg, train_cfg(10), quiet=True)
        monkeypatch.setenv("MASTER_PORT", str(free_port()))
        return rnnkit.train([corpus], run, model_cfg, train_cfg(20), resume=True,
                            given={"max_steps"}, quiet=True)

    ten_steps_then_resume_to_twenty(tmp_path / "plain")

    collectives = []
    for name in ("all_reduce", "broadcast", "all_gather", "barrier"):
        real = getattr(dist, name)
        monkeypatch.setattr(dist, name, lambda *a, real=real, name=name, **k:
                            (collectives.append(name), real(*a, **k))[1])
    torchrun_environment(monkeypatch, rank=0, size=1, local_rank=0)
    summary = ten_steps_then_resume_to_twenty(tmp_path / "group")  # a new group each time
    assert not dist.is_initialized()  # left as found
    # A real gloo group of one: the loss and flags averaged, the state gathered, DDP's setup.
    assert {"all_reduce", "broadcast", "all_gather", "barrier"} <= set(collectives)
    assert summary["steps"] == 20 and summary["processes"] == 1
    plain, group = (checkpoint.read_safetensors(tmp_path / run / "last.safetensors")[0]
                    for run in ("plain", "group"))
    for name, value in plain.items():
        torch.testing.assert_close(group[name], value, atol=1e-5, rtol=0)


def test_world_size_without_torchrun_is_one_line(cli, corpus, tmp_path, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    for name in ("RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(name, raising=False)
    status, _, err = cli("train", corpus, "--out", tmp_path / "run", "--max-steps", 2)
    assert status == 2
    assert "WORLD_SIZE is 2 but RANK, MASTER_ADDR, MASTER_PORT are not set" in one_error_line(err)


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a GPU")
def test_cuda_under_torchrun_without_a_gpu_is_one_line(cli, corpus, tmp_path, monkeypatch):
    torchrun_environment(monkeypatch, rank=0, size=2, local_rank=0)
    status, _, err = cli("train", corpus, "--out", tmp_path / "run", "--device", "cuda")
    assert status == 2 and "torch sees no CUDA GPU" in one_error_line(err)
    assert not dist.is_initialized()


def test_a_refusal_under_torchrun_is_clean_on_every_rank(corpus, tmp_path):
    # rank 0 alone checks --out; the other rank, waiting for it, printed an "internal error"
    # from gloo's closed connection. And a batch the text caps named a number the user never gave.
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    small = ["--hidden", "16", "--layers", "1", "--max-steps", "3"]
    done = torchrun("-m", "rnnkit", "train", corpus, "--out", out, *small, out=out, timeout=120)
    lines = [line for line in done.stderr.splitlines() if line.startswith("rnnkit:")]
    assert done.returncode and "internal error" not in done.stderr, done.stderr[-3000:]
    assert any("holds files rnnkit did not write (notes.txt)" in line for line in lines), lines
    assert (out / "notes.txt").read_text() == "mine"
    capped = tmp_path / "capped"
    done = torchrun("-m", "rnnkit", "train", corpus, "--out", capped, *small, "--seq-len", "64",
                    "--batch-size", "4096", out=capped, timeout=120)
    assert done.returncode and "internal error" not in done.stderr, done.stderr[-3000:]
    assert "fewer than --batch-size 4096, and" in done.stderr and "give --batch-size" in \
        done.stderr, done.stderr[-3000:]
