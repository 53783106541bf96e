"""The built-in model: a small byte-level LSTM that ships with rnnkit, to sample from and fine-tune.

    rnnkit sample --prime "def "                          # no run directory: the built-in model
    rnnkit serve                                          # the playground, on the same
    rnnkit train my.txt --init-from builtin --out runs/mine
    model = rnnkit.load("builtin")

Its files are a run directory inside the package, `rnnkit/builtin/`: config.json, vocab.json (all
256 byte values, so any text fine-tunes it), model.safetensors (fp16 weights, read by the same
checked loader as every run and converted to fp32) and recipe.json (its corpus, settings, steps and
validation loss). `benchmarks/builtin_model.py` trains it; the README gives the figures.

The name "builtin" means this model unless a directory of that name exists where rnnkit runs: a
local run comes first, as a local folder does for Hugging Face's `from_pretrained`.
"""

from __future__ import annotations

import os
from pathlib import Path

from .errors import RnnkitError

NAME = "builtin"
DIR = Path(__file__).resolve().parent / "builtin"


def resolve(run_dir: str | os.PathLike) -> Path:
    """The run directory `run_dir` names: the built-in model's for "builtin" (when no directory
    of that name is here), else `run_dir` itself."""
    if not isinstance(run_dir, (str, os.PathLike)) or not os.fspath(run_dir):
        raise RnnkitError(f"a run directory is a path (or \"builtin\"), got {run_dir!r}")
    if os.fspath(run_dir) != NAME or Path(run_dir).exists():
        return Path(run_dir)
    return location()


def location() -> Path:
    """The built-in model's directory: what a command given no run directory uses, whatever
    folders are where it runs."""
    if not (DIR / "config.json").is_file():
        raise RnnkitError(f"the built-in model is not installed with this rnnkit (no "
                          f"{DIR / 'config.json'}); reinstall rnnkit, or give a run directory")
    return DIR


def is_builtin(run_dir: str | os.PathLike) -> bool:
    """Whether `run_dir` names the built-in model."""
    return resolve(run_dir) == DIR
