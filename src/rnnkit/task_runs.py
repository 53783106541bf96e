"""Run directories of the task models: a classifier or a forecaster, saved and read back safely.

    DIR/config.json        {"format": "rnnkit-classifier" | "rnnkit-forecaster", "version": 1,
                            "model": SequenceConfig, "fit": FitConfig, "data": {...}}
    DIR/model.safetensors  the weights with the best validation score, standardisation included
    DIR/features/          cached audio features (pickle-free .npz)
    DIR/metrics.json       test results; DIR/confusion.png for a classifier

The same rules as the language model's run directory (`rnnkit.checkpoint`): tensors in
safetensors, everything else JSON, atomic writes, shapes checked against config.json before any
tensor is built, nothing unpickled.

    >>> model, config = load_task("runs/digits")      # SequenceModel in eval mode, raw config
"""

from __future__ import annotations

import os
from dataclasses import asdict
from pathlib import Path

import torch

from .checkpoint import load_weights, read_json
from .config import from_dict
from .errors import RnnkitError
from .fit import BEST, FitConfig
from .runfiles import write_json_atomic
from .tasks import SequenceConfig, SequenceModel

VERSION = 1
FORMATS = {"rnnkit-classifier": "rnnkit classify train", "rnnkit-forecaster": "rnnkit forecast train"}


def write_config(run_dir: Path, kind: str, model: SequenceConfig, fit: FitConfig,
                 data: dict) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    write_json_atomic(run_dir / "config.json", {"format": kind, "version": VERSION,
                                                "model": asdict(model), "fit": asdict(fit),
                                                "data": data})


def load_task(run_dir: str | os.PathLike, kind: str | None = None,
              device: str | torch.device = "cpu") -> tuple[SequenceModel, dict]:
    """The trained model of a classifier or forecaster run (eval mode) and its raw config."""
    run_dir = Path(run_dir)
    path = run_dir / "config.json"
    if not path.is_file():
        raise RnnkitError(f"{str(run_dir)!r} is not a task run directory (no config.json); "
                          "train one with: rnnkit classify train DATA --out DIR")
    config = read_json(path, "JSON")
    fmt = config.get("format") if isinstance(config, dict) else None
    if fmt not in FORMATS or (kind is not None and fmt != kind):
        want = kind or " or ".join(FORMATS)
        raise RnnkitError(f"{path} is not a {want} run (format {fmt!r}); "
                          f"train one with: {FORMATS.get(kind or '', 'rnnkit classify train')}")
    if config.get("version") != VERSION:
        raise RnnkitError(f"{run_dir} was written by format version {config.get('version')!r}; "
                          f"this rnnkit reads version {VERSION}")
    if not isinstance(config.get("data"), dict):
        raise RnnkitError(f"{path} has no data section; the run directory is damaged")
    model_cfg = from_dict(SequenceConfig, config.get("model"), "config.json model")
    from_dict(FitConfig, config.get("fit"), "config.json fit")
    model = load_weights(run_dir / BEST, lambda: SequenceModel(model_cfg))
    return model.to(device).eval(), config
