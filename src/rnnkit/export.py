"""Export a trained run to ONNX, to run without rnnkit (onnxruntime, or any ONNX runtime).

    rnnkit export runs/shakespeare --format onnx --out model.onnx

What the file computes depends on the run (its inputs and outputs are named):

    language model   one step, so that it streams:
                     token (B,) int64, h (L, B, H) [, c (L, B, H) for an LSTM]
                     -> logits (B, V), h_next [, c_next]; zeros are the initial state
    classifier       a whole sequence: inputs (B, T, F) -> logits (B, C)
    forecaster       a window of W steps in the series' units: inputs (B, W, F) -> forecast
                     (B, H, F), or (B, H, F, Q) with quantiles (levels in `rnnkit.quantiles`):
                     what `rnnkit forecast predict` does around the model; runs that read
                     covariates are not exported yet

B is free, and T for classifiers. The file's metadata holds what a user needs around it: the vocabulary
(`rnnkit.vocab`, as vocab.json) or the class names (`rnnkit.labels`), and the run's config
(`rnnkit.config`). A classifier's rows must all be T steps long (no padding); a classifier that
reads short sequences padded (`pad_to`) takes T of at least `rnnkit.pad_to` steps, a shorter
sequence padded at its end with `rnnkit.pad_value` (the training mean of each feature), as the
model pads it itself.

Needs the `export` extra (`pip install onnx onnxruntime`: onnx, and onnxruntime to run the file).
The file is written to a temporary name and renamed, so a failed export leaves no partial file.
"""

from __future__ import annotations

import contextlib
import json
import os
import warnings
from pathlib import Path

import torch
from torch import Tensor, nn

from . import builtin
from .checkpoint import output_file, read_json
from .errors import RnnkitError
from .intervals import WIDTH_FLOOR, interval_ends
from .lm import CharLM
from .optional import need
from .panel import has_future
from .runfiles import move_into, staging_path
from .runs import Classifier, load

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


class ClassifierModule(nn.Module):
    """A SequenceModel's logits for whole sequences: inputs (B, T, F) -> logits (B, C)."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, inputs: Tensor) -> Tensor:
        return self.model(inputs)[0]


class ForecasterModule(nn.Module):
    """A forecaster in the series' units: windows (B, W, F) -> forecasts (B, H, F), or
    (B, H, F, Q) at the run's quantile levels: what `panel.encode` and `panel.decode` do around
    the model, written in torch for windows of exactly W steps.

    The model reads each window's changes from its last value, divided by a scale (the run's
    `std`, or for a "window" scale the window's mean absolute step), and predicts departures from
    the seasonal naive forecast in the same units; each interval is widened by its calibration.
    """

    def __init__(self, model, data: dict):
        super().__init__()
        W, H, F = data["window"], data["horizon"], len(data["columns"])
        m = data.get("season", 1)
        levels = list(data.get("quantiles") or [])
        self.model, self.H, self.W, self.quantiles = model, H, W, bool(levels)
        self.window_scale = data.get("scale") == "window"
        std = data.get("std") or [1.0] * F
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32))  # (F,)
        Q = max(1, len(levels))  # the calibration, as `intervals.widened` applies it
        offsets, widen = data.get("offsets") or [0.0] * Q, data.get("widen") or [0.0] * Q
        self.register_buffer("offsets", torch.tensor(offsets, dtype=torch.float32))  # (Q,)
        self.register_buffer("widen", torch.tensor(widen, dtype=torch.float32))  # (Q,)
        lower, upper = interval_ends(levels) if levels else ([0], [0])
        self.register_buffer("lower", torch.tensor(lower, dtype=torch.long))  # (Q,)
        self.register_buffer("upper", torch.tensor(upper, dtype=torch.long))  # (Q,)
        # The seasonal naive forecast's step h, as a step of the window: its season's last value.
        base = [W - m + h % m if m < W else W - 1 for h in range(H)]
        self.register_buffer("base", torch.tensor(base, dtype=torch.long))  # (H,)

    def forward(self, inputs: Tensor) -> Tensor:
        B, W, F = inputs.shape
        last = inputs[:, -1:]  # (B, 1, F)
        if self.window_scale:
            steps = (inputs[:, 1:] - inputs[:, :-1]).abs().sum(1, keepdim=True)  # (B, 1, F)
            floor = torch.clamp(1e-3 * last.abs(), min=1e-6)
            scale = torch.maximum(steps / max(self.W - 1, 1), floor)  # (B, 1, F)
        else:
            scale = self.std.expand(B, 1, F)
        out = self.model((inputs - last) / scale)[0]  # (B, H * F * Q)
        y = out.reshape(B, self.H, F, -1) + self.offsets  # (B, H, F, Q)
        width = (y[..., self.upper] - y[..., self.lower]).clamp_min(WIDTH_FLOOR)
        y = y + self.widen * width
        y = y * scale[..., None] + inputs[:, self.base][..., None]
        y = y.sort(-1).values  # quantiles never cross
        return y if self.quantiles else y[..., 0]


def export(run_dir: str | os.PathLike, out: str | os.PathLike, fmt: str = "onnx") -> str:
    """Write the run's model to `out` in `fmt`; returns a line describing the file's interface."""
    if fmt not in FORMATS:
        raise RnnkitError(f"unknown export format {fmt!r}; choose one of {', '.join(FORMATS)}")
    need("onnx", "export")
    run = load(run_dir)  # any run, or one line saying what the directory lacks
    out = output_file(out, run_dir)
    config = read_json(builtin.resolve(run_dir) / "config.json", "JSON")
    if isinstance(run, CharLM):
        parts = language_model(run)
    elif isinstance(run, Classifier):
        parts = classifier(run)
    else:
        parts = forecaster(run, run_dir)
    module, args, names, axes, meta, shape = parts
    meta["rnnkit.config"] = json.dumps(config)
    tmp = staging_path(out)
    try:
        with warnings.catch_warnings():  # the exporter's notes on its own deprecation and on LSTM
            warnings.simplefilter("ignore")  # batch sizes do not concern the user
            torch.onnx.export(module.eval(), args, str(tmp), dynamo=False, opset_version=OPSET,
                              input_names=names[0], output_names=names[1], dynamic_axes=axes)
        add_metadata(tmp, meta)
        move_into(tmp, out)
    except OSError as e:
        raise RnnkitError(f"cannot write {out}: {e.strerror or e}; check the path and free "
                          "space") from None
    finally:
        with contextlib.suppress(OSError):  # a folder that is not one: the error above says so
            tmp.unlink(missing_ok=True)
    return shape


def language_model(model: CharLM):
    """The step module of a language model, its example inputs, names, free axes, metadata and
    a line describing it."""
    cfg = model.config
    h = torch.zeros(cfg.layers, 2, cfg.hidden)  # (L, B, H)
    lstm = cfg.cell == "lstm"
    token = torch.zeros(2, dtype=torch.long)  # (B,)
    args = (token, h, h.clone()) if lstm else (token, h)
    state = ["h", "c"] if lstm else ["h"]
    names = (["token", *state], ["logits", *[s + "_next" for s in state]])
    axes = {"token": {0: "batch"}, "logits": {0: "batch"},
            **{s: {1: "batch"} for s in state}, **{s + "_next": {1: "batch"} for s in state}}
    meta = {"rnnkit.vocab": json.dumps(model.vocab.to_json())}
    shape = (f"token (B,), {' and '.join(state)} ({cfg.layers}, B, {cfg.hidden}) -> "
             f"logits (B, {cfg.vocab_size}), {' and '.join(s + '_next' for s in state)}")
    return LMStep(model), args, names, axes, meta, shape


def classifier(run: Classifier):
    """The classifier's module, example input (B, T, F), names, free axes, metadata and line.
    A model that reads short sequences padded (`pad_to` n) is exported for rows of at least n
    steps; the metadata says n and the value to pad with (the training mean)."""
    config = run.model.config
    F, n = config.input_size, config.pad_to
    args = (torch.zeros(2, max(5, n), F),)  # (B, T, F): the example input that fixes the graph
    axes = {"inputs": {0: "batch", 1: "time"}, "logits": {0: "batch"}}
    meta = {"rnnkit.labels": json.dumps(run.classes)}
    shape = f"inputs (B, T, {F}) -> logits (B, {config.output_size})"
    if n:
        first = run.model.members[0] if config.members > 1 else run.model  # they share it
        meta |= {"rnnkit.pad_to": str(n), "rnnkit.pad_value": json.dumps(first.pad_value.tolist())}
        shape += f", T at least {n} (pad shorter rows with rnnkit.pad_value)"
    return ClassifierModule(run.model), args, (["inputs"], ["logits"]), axes, meta, shape


def forecaster(run, run_dir):
    """The forecaster's module, example input (B, W, F): windows of exactly W steps, names, free
    axes, metadata and line; a run that reads covariates is refused."""
    data = run.data
    if has_future(data) or data.get("past"):
        raise RnnkitError(f"{run_dir} reads covariates besides the series, which rnnkit export "
                          "does not write yet; forecast with rnnkit forecast predict or "
                          "rnnkit.load")
    W, F, H, Q = run.window, len(run.columns), run.horizon, len(run.levels)
    args = (torch.zeros(2, W, F),)
    axes = {"inputs": {0: "batch"}, "forecast": {0: "batch"}}
    meta = {"rnnkit.columns": json.dumps(run.columns), "rnnkit.quantiles": json.dumps(run.levels)}
    shape = f"inputs (B, {W}, {F}) -> forecast (B, {H}, {F}{f', {Q}' if Q else ''})"
    return ForecasterModule(run.model, data), args, (["inputs"], ["forecast"]), axes, meta, shape


def add_metadata(path: Path, meta: dict[str, str]) -> None:
    onnx = need("onnx", "export")
    proto = onnx.load(str(path))
    for key, value in meta.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save(proto, str(path))
