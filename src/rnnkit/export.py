"""Export a trained run to ONNX, to run without rnnkit (onnxruntime, or any ONNX runtime).

    rnnkit export runs/shakespeare --format onnx --out model.onnx

What the file computes depends on the run (its inputs and outputs are named):

    language model   one step, so that it streams:
                     token (B,) int64, h (L, B, H) [, c (L, B, H) for an LSTM]
                     -> logits (B, V), h_next [, c_next]; zeros are the initial state
    classifier       a whole sequence: inputs (B, T, F) -> logits (B, C)
    forecaster       a whole window in the series' units: inputs (B, W, F) -> forecast (B, H, F),
                     the same transformation `rnnkit forecast predict` applies around the model

B and T are free. The file's metadata holds what a user needs around it: the vocabulary
(`rnnkit.vocab`, as vocab.json) or the class names (`rnnkit.labels`), and the run's config
(`rnnkit.config`). A classifier's rows must all be T steps long (no padding).

Needs the `export` extra (`pip install 'rnnkit[export]'`: onnx, and onnxruntime to run the file).
The file is written to a temporary name and renamed, so a failed export leaves no partial file.
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

import torch
from torch import Tensor, nn

from .checkpoint import load, read_json
from .errors import RnnkitError
from .optional import need
from .task_runs import load_task

FORMATS = ("onnx",)
OPSET = 17


class LMStep(nn.Module):
    """The language model as one step: token (B,) and state in, logits (B, V) and state out."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, token: Tensor, h: Tensor, c: Tensor | None = None):
        state = (h, c) if c is not None else h
        logits, _, state = self.model(token[:, None], state=state)  # (B, 1, V)
        return (logits[:, 0], *state) if c is not None else (logits[:, 0], state)


class Classifier(nn.Module):
    """A SequenceModel's logits for whole sequences: inputs (B, T, F) -> logits (B, C)."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, inputs: Tensor) -> Tensor:
        return self.model(inputs)[0]


class Forecaster(nn.Module):
    """A forecaster in the series' units: windows (B, W, F) -> forecasts (B, H, F).

    The model reads changes from each window's last value, scaled by `std`, and predicts the
    same (`series.relative`); this wraps it so that the file takes and returns plain values.
    """

    def __init__(self, model, std: list[float], horizon: int):
        super().__init__()
        self.model, self.horizon = model, horizon
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32))  # (F,)

    def forward(self, inputs: Tensor) -> Tensor:
        last = inputs[:, -1:]  # (B, 1, F)
        out = self.model((inputs - last) / self.std)[0]  # (B, H * F)
        return out.reshape(out.shape[0], self.horizon, -1) * self.std + last  # (B, H, F)


def export(run_dir: str | os.PathLike, out: str | os.PathLike, fmt: str = "onnx") -> str:
    """Write the run's model to `out` in `fmt`; returns a line describing the file's interface."""
    if fmt not in FORMATS:
        raise RnnkitError(f"unknown export format {fmt!r}; choose one of {', '.join(FORMATS)}")
    need("onnx", "export")
    run_dir, out = Path(run_dir), Path(out)
    config = read_json(run_dir / "config.json", "JSON") if (run_dir / "config.json").is_file() \
        else None
    kind = config.get("format") if isinstance(config, dict) else None
    if kind in ("rnnkit-classifier", "rnnkit-forecaster"):
        model, config = load_task(run_dir, kind)
        F = model.config.input_size
        x = torch.zeros(2, 5, F)  # (B, T, F): the example input that fixes the graph
        axes = {"inputs": {0: "batch", 1: "time"}}
        if kind == "rnnkit-classifier":
            module, names = Classifier(model), (["inputs"], ["logits"])
            axes["logits"] = {0: "batch"}
            meta = {"rnnkit.labels": json.dumps(config["data"].get("labels"))}
            shape = f"inputs (B, T, {F}) -> logits (B, {model.config.output_size})"
        else:
            data = config["data"]
            module = Forecaster(model, data["std"], data["horizon"])
            names = (["inputs"], ["forecast"])
            axes["forecast"] = {0: "batch"}
            meta = {"rnnkit.columns": json.dumps(data["columns"])}
            shape = f"inputs (B, W, {F}) -> forecast (B, {data['horizon']}, {F})"
        args: tuple = (x,)
    else:
        model = load(run_dir)  # a language model run, or a clear error saying what is missing
        cfg = model.config
        h = torch.zeros(cfg.layers, 2, cfg.hidden)  # (L, B, H)
        lstm = cfg.cell == "lstm"
        module = LMStep(model)
        args = (torch.zeros(2, dtype=torch.long), h, h.clone()) if lstm \
            else (torch.zeros(2, dtype=torch.long), h)
        state = ["h", "c"] if lstm else ["h"]
        names = (["token", *state], ["logits", *[s + "_next" for s in state]])
        axes = {"token": {0: "batch"}, "logits": {0: "batch"},
                **{s: {1: "batch"} for s in state}, **{s + "_next": {1: "batch"} for s in state}}
        meta = {"rnnkit.vocab": json.dumps(model.vocab.to_json())}
        shape = (f"token (B,), {' and '.join(state)} ({cfg.layers}, B, {cfg.hidden}) -> "
                 f"logits (B, {cfg.vocab_size}), {' and '.join(s + '_next' for s in state)}")
    meta["rnnkit.config"] = json.dumps(config if isinstance(config, dict) else {})
    tmp = out.with_name(out.name + ".tmp")
    try:
        with warnings.catch_warnings():  # the exporter's notes on its own deprecation and on LSTM
            warnings.simplefilter("ignore")  # batch sizes do not concern the user
            torch.onnx.export(module.eval(), args, str(tmp), dynamo=False, opset_version=OPSET,
                              input_names=names[0], output_names=names[1], dynamic_axes=axes)
        add_metadata(tmp, meta)
        os.replace(tmp, out)
    except OSError as e:
        raise RnnkitError(f"cannot write {out}: {e.strerror or e}; check the path and free "
                          "space") from None
    finally:
        tmp.unlink(missing_ok=True)
    return shape


def add_metadata(path: Path, meta: dict[str, str]) -> None:
    onnx = need("onnx", "export")
    proto = onnx.load(str(path))
    for key, value in meta.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save(proto, str(path))
