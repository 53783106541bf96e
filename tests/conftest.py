"""Shared fixtures: small corpora written to temporary files, and a runner for the CLI."""

import os
import sys
from pathlib import Path

import pytest
import torch

from rnnkit.cli import main

# The test models are tiny: one thread runs them fastest and keeps parallel jobs from thrashing.
torch.set_num_threads(1)
os.environ.setdefault("OMP_NUM_THREADS", "1")

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
