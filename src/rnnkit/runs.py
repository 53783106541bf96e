"""One loader for every run: `rnnkit.load(DIR)` opens what `rnnkit train`, `rnnkit classify
train` or `rnnkit forecast train` wrote, and returns the object that uses it.

    lm = rnnkit.load("runs/shakespeare")         # CharLM: generate, stream, stepper
    lm.generate(prime="ROMEO:", length=200, seed=1)

    clf = rnnkit.load("runs/digits")             # Classifier
    out = clf.predict(["7_a.wav", "3_b.wav"])    # files, read as in training (audio, CSV, .npz)
    out = clf.predict(x, lengths)                # or arrays: (N, T, F) zero-padded, (N,) lengths
    out.labels, out.probs                        # a class name per example, (N, C) probabilities

    fc = rnnkit.load("runs/load")                # Forecaster
    fc.predict("series.csv")                     # (H, F): the H steps after the series' end
    fc.predict(series)                           # or an array (T, F) of the run's columns
    fc.forecasts("shops.csv")                    # Forecasts of every series: ids, point (N, H, F),
                                                 # quantiles (N, H, F, Q), levels, future times

`rnnkit classify predict` and `rnnkit forecast predict` are these objects' `predict`, printed.
A directory that holds no run, or a run of another kind than `kind` asks for, is one RnnkitError
naming what the directory is and the command that makes the run needed.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from . import builtin
from .audio import AUDIO_SUFFIXES, AudioConfig, find_audio, load_features
from .checkpoint import BEST
from .checkpoint import load as load_language_model
from .devices import pick_device
from .errors import RnnkitError, require_size
from .fitting import predict as model_outputs
from .lm import CharLM
from .panel import LARGEST, Panel, decode, encode, future_times, has_future, read_panel
from .series import read_series
from .task_runs import (
    DATA,
    KINDS,
    LANGUAGE_MODEL,
    check_features,
    load_task,
    read_examples,
    read_format,
    to_dataset,
    wrong_kind,
)
from .tasks import Ensemble, SequenceModel

PathLike = str | os.PathLike


def device_of(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


def as_array(values, where: str, largest: float = np.inf) -> np.ndarray:
    """A NumPy or torch array of numbers as finite float32, each at most `largest` in size."""
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu().numpy()
    try:
        array = np.asarray(values, dtype=np.float32)
    except (TypeError, ValueError) as e:
        raise RnnkitError(f"{where} must be numbers ({e})") from None
    if not np.isfinite(array).all():
        raise RnnkitError(f"{where} hold NaN or infinite values")
    if array.size and np.abs(array).max() > largest:
        raise RnnkitError(f"{where} hold values beyond the {largest:.0e} that the model's float32 "
                          "arithmetic can hold; rescale them")
    return array


def by_name(table, columns: list[str]):
    """A table with named columns (a pandas DataFrame) as the run's `columns` in the run's
    order, picked by name: read by position, its columns in another order would be forecast
    under each other's names. Anything else is returned as it is."""
    names = getattr(table, "columns", None)
    if names is None or isinstance(table, (np.ndarray, torch.Tensor)):
        return table
    names = [str(c) for c in names]
    missing = [c for c in columns if c not in names]
    if missing:
        raise RnnkitError(f"the table has no column {missing[0]!r}; the run reads {columns}, "
                          f"the table has {names[:8]}")
    return table[list(columns)]


def is_paths(inputs) -> bool:
    return isinstance(inputs, (list, tuple)) and len(inputs) > 0 and \
        all(isinstance(i, (str, os.PathLike)) for i in inputs)


def sequences(inputs, lengths) -> list[np.ndarray]:
    """Arrays as a list of (T_i, F) sequences: (N, T, F) cut at `lengths`, one (T, F), or a
    list of (T_i, F)."""
    if isinstance(inputs, (list, tuple)):
        if lengths is not None:
            raise RnnkitError("lengths go with one padded array (N, T, F), not with a list of "
                              "sequences, which have their own")
        seqs = [as_array(s, f"inputs[{i}]") for i, s in enumerate(inputs)]
        for i, s in enumerate(seqs):
            if s.ndim != 2:
                raise RnnkitError(f"inputs[{i}] must be one sequence (T, F), got shape {s.shape}")
        return seqs
    x = as_array(inputs, "inputs")
    if x.ndim == 2:
        x = x[None]  # (1, T, F)
    if x.ndim != 3:
        raise RnnkitError(f"inputs must be files, an array (N, T, F), one sequence (T, F) or a "
                          f"list of (T, F) arrays; got an array of shape {x.shape}")
    N, T = x.shape[:2]
    if lengths is None:
        return list(x)
    n = np.asarray(lengths.cpu() if isinstance(lengths, torch.Tensor) else lengths)
    fits = n.shape == (N,) and np.issubdtype(n.dtype, np.integer) and \
        (N == 0 or (n.min() >= 1 and n.max() <= T))
    if not fits:
        raise RnnkitError(f"lengths must be {N} integers in [1, {T}], got {brief_array(n)}")
    return [x[i, :k] for i, k in enumerate(n.tolist())]


def brief_array(a: np.ndarray) -> str:
    return f"shape {a.shape} of {a.dtype}" if a.ndim != 1 or a.size > 8 else str(a.tolist())


@dataclass
class Predictions:
    """A classifier's answer for N examples."""

    names: list[str]  # each example's name: its file, CSV id or "d.npz[i]"; "inputs[i]" for arrays
    labels: list[str]  # the most probable class of each example
    probs: np.ndarray  # (N, C) probabilities over the run's classes, in the order of the
    # classifier's `classes` (sorted: numbers by their value, names in natural order)


def in_folder(folder: Path) -> tuple[list[Path], list[str]]:
    """The audio files of a folder to predict and their paths in it, as `read_examples` reads
    them."""
    paths, _ = find_audio(folder, labelled=False)
    return paths, [p.relative_to(folder).as_posix() for p in paths]


class Classifier:
    """A trained sequence classifier run: its model (`SequenceModel`, or an `Ensemble` of them;
    eval mode), its class names, and how it reads inputs (its data section: audio features, CSV
    columns)."""

    def __init__(self, model: SequenceModel | Ensemble, data: dict):
        self.model, self.data = model, data
        self.classes: list[str] = data["labels"]

    def read(self, files: list[PathLike]) -> tuple[list[np.ndarray], list[str]]:
        """Sequences (T, F) and names of audio files, CSVs (rows grouped by the id column) and
        .npz files, in the order given, computed with the run's own settings."""
        audio = [f for f in files if Path(f).suffix.lower() in AUDIO_SUFFIXES]
        if audio and self.data["source"] != "audio":
            raise RnnkitError(f"{audio[0]}: the run classifies {self.data['source']} data, not "
                              "audio")
        # each argument's audio files (a folder's, named by their path in it), or None
        found = [([Path(f)], [str(f)]) if Path(f).suffix.lower() in AUDIO_SUFFIXES else
                 in_folder(Path(f)) if self.data["source"] == "audio" and Path(f).is_dir() else
                 None for f in files]
        # One call for every audio file, so a resampling is said once; the run's rate, not an
        # option to suggest.
        every = [path for entry in found if entry for path in entry[0]]
        computed = iter(load_features(every, AudioConfig(**self.data["audio"]), progress=True,
                                      rate_option=False) if every else [])
        seqs, names = [], []
        for f, entry in zip(files, found, strict=True):
            if entry:
                seqs += [next(computed) for _ in entry[0]]
                names += entry[1]
            else:
                s, _, n = read_examples(str(f), dict(self.data), None, training=False)
                seqs += s
                names += n
        return seqs, names

    def predict(self, inputs, lengths=None, batch_size: int = 256) -> Predictions:
        """Label sequences: `inputs` is a file or a list of files (`read`), an array (N, T, F)
        zero-padded with `lengths` (N,) (default: all T steps), one sequence (T, F), or a list
        of (T_i, F) arrays. Arrays hold the features the model reads (for an audio run, what
        `rnnkit.audio.features` computes with the run's `AudioConfig`)."""
        require_size(batch_size=batch_size)
        if inputs is None:
            raise RnnkitError("inputs are files or arrays of sequences to label, got None")
        if isinstance(inputs, (str, os.PathLike)):
            inputs = [inputs]
        if is_paths(inputs):
            if lengths is not None:
                raise RnnkitError("lengths go with arrays; files say their own lengths")
            seqs, names = self.read(list(inputs))
            where = "input"
        else:
            columns = self.data.get("columns")  # a CSV run's: a table is read by them
            if columns:
                inputs = [by_name(i, columns) for i in inputs] if isinstance(inputs, list) \
                    else by_name(inputs, columns)
            seqs = sequences(inputs, lengths)
            names = [f"inputs[{i}]" for i in range(len(seqs))]
            where = "inputs"
        check_features(seqs, names, where)
        F = self.model.config.input_size
        if seqs[0].shape[1] != F:
            raise RnnkitError(f"{names[0]} has {seqs[0].shape[1]} features per step; the model "
                              f"reads {F}")
        logits = model_outputs(self.model, to_dataset(seqs, None), batch_size,
                               device_of(self.model))  # (N, C)
        probs = torch.softmax(logits, dim=-1).numpy()
        return Predictions(names, [self.classes[k] for k in probs.argmax(-1)], probs)


@dataclass
class Forecasts:
    """A forecaster's answer for N series: the H steps after each one's end."""

    ids: list[str]  # each series' name: its id, or the file's name for a one-series CSV
    columns: list[str]  # the F forecast columns
    point: np.ndarray  # (N, H, F): the median of a quantile run, else the mean forecast
    quantiles: np.ndarray | None  # (N, H, F, Q) at `levels`; None for a run without quantiles
    levels: list[float]  # the Q quantile levels, ascending
    times: list[np.ndarray | None]  # each series' H future times (a run with a time column)
    utc: bool = False  # the times are UTC (the file gave them with offsets)


class Forecaster:
    """A trained forecaster run: its model (`SequenceModel`, eval mode), the columns it reads and
    writes, its window W, horizon H, scale and quantile levels (`rnnkit.panel` reads its
    inputs)."""

    def __init__(self, model: SequenceModel, data: dict):
        self.model, self.data = model, data
        self.columns: list[str] = data["columns"]
        self.window: int = data["window"]
        self.horizon: int = data["horizon"]
        self.levels: list[float] = list(data.get("quantiles") or [])
        self.std = np.asarray(data["std"], np.float32)  # (F,); empty for a "window" scale
        self.many = data.get("id_column") is not None or data["source"] == "npz"

    def read(self, path: PathLike) -> np.ndarray:
        """The run's columns of a one-series CSV file, in the run's order: (T, F)."""
        return read_series(path, self.columns)[0]

    def series(self, path: PathLike) -> Panel:
        """Every series of a CSV or .npz, read as in training; a CSV may end each series with
        the H rows to forecast (targets empty), which a run with known covariates needs."""
        return read_panel(path, self.data, future=self.horizon)[0]

    def outputs(self, panel: Panel, origins: list[np.ndarray], batch_size: int = 512,
                ) -> tuple[np.ndarray, dict]:
        """The model's outputs (n, H * F * Q) at the given origins of every series, in the
        windows' units, and the windows (`panel.encode`)."""
        enc = encode(panel, origins, self.data)
        inputs = {"inputs": torch.from_numpy(enc["inputs"])}
        if (enc["lengths"] != enc["inputs"].shape[1]).any():
            inputs["lengths"] = torch.from_numpy(enc["lengths"])
        return model_outputs(self.model, inputs, batch_size, device_of(self.model)).numpy(), enc

    def run(self, panel: Panel, origins: list[np.ndarray], batch_size: int = 512,
            ) -> tuple[np.ndarray, dict]:
        """Forecasts at the given origins of every series: (n, H, F, Q) in the series' units
        (Q = 1 without quantiles), and the windows (`panel.encode`) they came from."""
        out, enc = self.outputs(panel, origins, batch_size)
        return decode(out, enc, self.horizon, self.levels, self.data.get("widen"),
                      self.data.get("offsets")), enc

    def point(self, forecasts: np.ndarray) -> np.ndarray:
        """(n, H, F, Q) -> (n, H, F): the median, or the one value of a run without quantiles."""
        return forecasts[..., self.levels.index(0.5) if self.levels else 0]

    def forecast(self, windows: np.ndarray, batch_size: int = 512) -> np.ndarray:
        """(N, W, F) windows in the series' units -> (N, H, F) forecasts in the same units."""
        if has_future(self.data) or self.data.get("past"):
            raise RnnkitError("the run reads covariates besides the series; forecast with "
                              "predict(FILE), which reads them")
        windows = as_array(windows, "windows", LARGEST)
        F = len(self.columns)
        if windows.ndim == 2 and F == 1:
            windows = windows[..., None]  # (N, W) of a one-column run -> (N, W, 1)
        if windows.ndim != 3 or windows.shape[2] != F or not windows.shape[1]:
            raise RnnkitError(f"windows must be (N, W, {F}): N windows of W >= 1 steps of "
                              f"{self.columns}" + (" ((N, W) for the one column)" if F == 1 else "")
                              + f"; got shape {windows.shape}")
        panel = Panel([str(i) for i in range(len(windows))], list(windows),
                      [np.zeros((windows.shape[1], 0), np.float32)] * len(windows),
                      [np.zeros((windows.shape[1], 0), np.float32)] * len(windows))
        origins = [np.array([windows.shape[1]])] * len(windows)
        return self.point(self.run(panel, origins, batch_size)[0])

    def forecasts(self, source, where: str | None = None) -> Forecasts:
        """The H steps after the end of every series in `source`: a CSV or .npz file (`series`),
        a `Panel` (read from the file `where` names, for the errors), or one array (T, F) of
        the run's columns ((T,) for one column)."""
        if isinstance(source, (str, os.PathLike)):
            where, panel = str(source), self.series(source)
        elif isinstance(source, Panel):
            where, panel = where or "series", source
        else:
            where, values = "series", as_array(by_name(source, self.columns), "series", LARGEST)
            if values.ndim == 1 and len(self.columns) == 1:
                values = values[:, None]  # (T, 1)
            if values.ndim != 2 or values.shape[1] != len(self.columns):
                raise RnnkitError(f"series must be (T, {len(self.columns)}), one column for each "
                                  f"of {self.columns}; got shape {values.shape}")
            if has_future(self.data) or self.data.get("past"):
                raise RnnkitError("the run reads covariates besides the series; give a file")
            empty = np.zeros((len(values), 0), np.float32)
            panel = Panel(["series"], [values], [empty], [empty], [None])
        for name, values in zip(panel.ids, panel.values, strict=True):
            if not len(values):  # fewer than the window's steps are read as in training
                at = where if len(panel) == 1 else f"{where}, series {name!r}"
                raise RnnkitError(f"{at}: the series has no observed step to forecast from (a "
                                  "file to forecast from holds each series' history, then any "
                                  "rows to forecast)")
        q, _ = self.run(panel, [np.array([len(v)]) for v in panel.values])
        # the times of the rows to forecast where the file gives them (trading days), else the
        # next steps at the series' own
        given = panel.ahead or [None] * len(panel)
        times = [a if a is not None and len(a) == self.horizon else self.next_times(t, where)
                 for t, a in zip(panel.times or [None] * len(panel), given, strict=True)]
        return Forecasts(panel.ids, self.columns, self.point(q),
                         q if self.levels else None, self.levels, times, panel.utc)

    def next_times(self, times: np.ndarray | None, where: str) -> np.ndarray | None:
        """The H times after a series' end, or None (no time column, or uneven times)."""
        try:
            return None if times is None else future_times(times, self.horizon, where)
        except RnnkitError:
            return None

    def predict(self, series) -> np.ndarray | Forecasts:
        """The H steps after the end of `series`: a CSV file with the run's columns, or an array
        (T, F) of those columns in order ((T,) for one column) -> (H, F). A run trained on
        many series (an id column or an .npz) returns `Forecasts` for every series of a file."""
        result = self.forecasts(series)
        if not self.many and len(result.point) > 1:
            where = series if isinstance(series, (str, os.PathLike)) else "the input"
            raise RnnkitError(f"{where} holds {len(result.point)} series, and this run "
                              "forecasts one; give one series, or use forecasts(...) for all")
        return result if self.many else result.point[0]


def load(run_dir: PathLike, device: str | torch.device = "cpu", checkpoint: str = BEST,
         kind: str | None = None) -> CharLM | Classifier | Forecaster:
    """The run in `run_dir`, on `device`, in eval mode: a `CharLM` (language model), a
    `Classifier` or a `Forecaster`. `kind` ("rnnkit-run", "rnnkit-classifier",
    "rnnkit-forecaster") refuses runs of any other kind; `checkpoint` picks a language model's
    "last.safetensors" (a task run keeps one checkpoint). "builtin" is the built-in model."""
    kinds = (LANGUAGE_MODEL, *DATA)
    if kind is not None and kind not in kinds:
        raise RnnkitError(f"kind must be one of {', '.join(map(repr, kinds))}, got {kind!r}")
    device = pick_device(device)  # "auto", and one line where torch has no such device
    run_dir = builtin.resolve(run_dir)
    fmt, _ = read_format(run_dir, kind)
    if kind is not None and fmt != kind:
        raise wrong_kind(run_dir, fmt, kind)
    if fmt == LANGUAGE_MODEL:
        return load_language_model(run_dir, device, checkpoint)
    if fmt not in DATA:
        raise RnnkitError(f"{run_dir / 'config.json'} is not an rnnkit run (format {fmt!r}); "
                          "rnnkit.load opens runs made by rnnkit train, rnnkit classify train "
                          "or rnnkit forecast train")
    if checkpoint != BEST:
        raise RnnkitError(f"{run_dir} is a {KINDS[fmt][0]} run, which keeps one checkpoint, "
                          f"{BEST}; leave out checkpoint={checkpoint!r}")
    model, config = load_task(run_dir, fmt, device)
    return (Classifier if fmt == "rnnkit-classifier" else Forecaster)(model, config["data"])
