"""Shared fixtures: small corpora written to temporary files, and a runner for the CLI."""

import os
import re
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from rnnkit.cli import main

# The test models are tiny: one thread runs them fastest and keeps parallel jobs from thrashing.
torch.set_num_threads(1)
os.environ.setdefault("OMP_NUM_THREADS", "1")
# A process's first optimizer imports torch._dynamo (over a second on these machines): made
# here, once, so that no in-process test's time budget depends on being its process's first.
torch.optim.AdamW([torch.zeros(1, requires_grad=True)])

DATA = Path(os.environ.get("RNNKIT_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
PANGRAM = "the quick brown fox jumps over the lazy dog.\n"

# The smallest useful model and schedule, so that whole training runs take a second or two.
TINY = ["--hidden", "32", "--layers", "1", "--seq-len", "16", "--batch-size", "4",
        "--eval-every", "10", "--sample-length", "0", "--warmup", "5"]


@pytest.fixture
def corpus(tmp_path) -> Path:
    path = tmp_path / "corpus.txt"
    path.write_text(PANGRAM * 60, encoding="utf-8")
    return path


@pytest.fixture
def cli(capsys):
    """Run `rnnkit ARGS...` in process; returns (exit status, stdout, stderr)."""

    def run(*args):
        status = main([str(a) for a in args])
        out, err = capsys.readouterr()
        return status, out, err

    return run


def one_error_line(err: str) -> str:
    """The stderr of a failed command must show exactly one line starting 'rnnkit: error:'.

    What shows is what a terminal keeps: of each line, the part after its last carriage return
    (a progress bar that was cleared leaves nothing).
    """
    lines = [line.split("\r")[-1] for line in err.split("\n")]
    lines = [line for line in lines if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("rnnkit: error: "), err
    assert "Traceback" not in err
    return lines[0]


PYTHON = sys.executable


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun(*argv: str, out: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    """`python -m torch.distributed.run` with two processes on this machine, running `argv`
    (what follows the interpreter: "-m", "rnnkit", ...), which writes the run directory `out`;
    the output is captured.

    On a loaded machine a rank has twice been seen to end by SIGABRT in this suite (its own
    lines lost), which is how gloo's TCP transport ends a process when a socket call fails in
    its own thread (pytorch/gloo#514 is one such case). A launch that ends so is launched once
    more, on a fresh port and from the run directory as it was before it, and its output is
    printed (pytest shows it with a failure). Any other failure counts at once."""
    def launch() -> subprocess.CompletedProcess:
        return subprocess.run([PYTHON, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                               "--master_addr", "127.0.0.1", "--master_port", str(free_port()),
                               *map(str, argv)], capture_output=True, text=True, timeout=timeout)

    before = out.with_name(f"{out.name}.before-torchrun")
    shutil.rmtree(before, ignore_errors=True)
    if out.exists():
        shutil.copytree(out, before)
    run = launch()
    if run.returncode and re.search(r"exitcode\s*: -6\b", run.stderr):
        print(f"torchrun: a rank ended by SIGABRT; launched again. The first launch's output:\n"
              f"{run.stdout}\n{run.stderr}")
        shutil.rmtree(out, ignore_errors=True)
        if before.exists():
            shutil.copytree(before, out)
        run = launch()
    return run
