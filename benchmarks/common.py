"""Shared helpers for the benchmark scripts: where the data is, what machine this is, saving results."""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
DATA = Path(os.environ.get("RNNKIT_DATA", ROOT.parent / "shared" / "data"))
RESULTS = Path(__file__).resolve().parent / "results"


def no_options(doc: str) -> None:
    """The command line of a script that takes no options: `--help` prints its docstring, and
    anything else is refused before a run starts."""
    argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter
                            ).parse_args()


def require(path: Path) -> Path:
    """The data file, or exit 0 with the reason when it is absent (benchmarks skip, never fail)."""
    if not path.exists():
        print(f"skipped: {path} not found (set RNNKIT_DATA to the data folder)")
        sys.exit(0)
    return path


def machine() -> dict:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info = {"cpu": cpu, "cores": os.cpu_count(), "torch": torch.__version__,
            "threads": torch.get_num_threads(), "python": platform.python_version()}
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(torch.cuda.current_device())
        info.update(gpu=torch.cuda.get_device_name(), gpus=torch.cuda.device_count(),
                    gpu_memory_gib=round(props.total_memory / 2**30, 1),
                    cuda=torch.version.cuda, cudnn=torch.backends.cudnn.version())
    return info


def plain_lstm_loop(tokens, V: int, layers: int, hidden: int, B: int, T: int, steps: int,
                    device: str | torch.device = "cpu") -> float:
    """The baseline of the throughput figures: a textbook training loop on torch's fused LSTM
    (cuDNN on a GPU), state carried between batches. Returns characters per second."""
    from rnnkit.text import Streams

    device = torch.device(device)
    torch.manual_seed(0)
    embed = torch.nn.Embedding(V, hidden).to(device)
    lstm = torch.nn.LSTM(hidden, hidden, layers, batch_first=True).to(device)
    head = torch.nn.Linear(hidden, V).to(device)
    params = [*embed.parameters(), *lstm.parameters(), *head.parameters()]
    optimizer = torch.optim.AdamW(params, lr=2e-3, weight_decay=0.0)
    streams = Streams(tokens, B, T)
    state = None
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    sync()
    start = time.perf_counter()
    for i in range(steps):
        x, y, _ = streams.batch(i)
        x, y = torch.from_numpy(x).to(device), torch.from_numpy(y).to(device)
        out, state = lstm(embed(x), state)  # (B, T, H)
        loss = torch.nn.functional.cross_entropy(head(out).reshape(-1, V), y.reshape(-1))
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        state = tuple(s.detach() for s in state)
    sync()
    return steps * B * T / (time.perf_counter() - start)


def rnnkit_train_speed(corpus: Path, out: Path, layers: int, hidden: int, B: int, T: int,
                       steps: int, device: str = "cpu") -> float:
    """`rnnkit train`'s own characters per second on the same model and batches (its loop,
    evaluation and checkpoint writing excluded)."""
    import rnnkit

    summary = rnnkit.train(
        [corpus], out, rnnkit.ModelConfig(cell="lstm", layers=layers, hidden=hidden),
        rnnkit.TrainConfig(seq_len=T, batch_size=B, lr=2e-3, max_steps=steps, warmup=0,
                           eval_every=10 * steps, eval_tokens=B * (T + 1), sample_length=0,
                           device=device), quiet=True)
    return summary["chars_per_second"]


def median(values) -> float:
    return statistics.median(values)


def spread(values: list[float]) -> tuple[float, float, float, float]:
    """Mean, sample standard deviation (0 for one value), minimum and maximum over runs."""
    return (statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0,
            min(values), max(values))


def save(name: str, result: dict) -> Path:
    """Write benchmarks/results/NAME.json with the machine description added."""
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps({**result, "machine": machine()}, indent=2) + "\n")
    print(f"wrote {path.relative_to(ROOT)}")
    return path
