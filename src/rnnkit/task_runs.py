"""Run directories of the task models: a classifier or a forecaster, saved and read back safely.

    DIR/config.json        {"format": "rnnkit-classifier" | "rnnkit-forecaster", "version": 1,
                            "model": SequenceConfig, "fit": FitConfig,
                            "data": ClassifierData | ForecasterData}
    DIR/model.safetensors  the weights with the best validation score, standardisation included
    DIR/last.safetensors   the latest weights, AdamW's moments and the trainer's counters: what
                           --resume continues from (`rnnkit.engine`)
    DIR/metrics.csv        every step's loss and learning rate, and each validation loss
    DIR/loss.png           train and validation loss against steps
    DIR/train.lock         held by the training that writes to DIR (`checkpoint.RunLock`)
    DIR/features/          cached audio features (pickle-free .npz)
    DIR/metrics.json       test results; DIR/confusion.png for a classifier

The same rules as the language model's run directory (`rnnkit.checkpoint`): tensors in
safetensors, everything else JSON, atomic writes, shapes checked against config.json before any
tensor is built, nothing unpickled. New inputs are read as the run's data section says
(`read_examples`: its audio features, CSV columns), the same way in training and prediction.

    >>> model, config = load_task("runs/digits")      # SequenceModel (or Ensemble), eval mode; config
    >>> rnnkit.load("runs/digits").predict(["a.wav"])  # the same, wrapped to predict (rnnkit.runs)
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import os
import shutil
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np
import torch

from .audio import AudioConfig, compile_pattern, find_audio, load_features
from .checkpoint import (
    BEST,
    LAST,
    LOCK,
    VERSION,
    RunLock,
    check_version,
    foreign,
    load_weights,
    read_json,
    refuse_theirs,
    require_utf8,
)
from .checkpoint import FORMAT as LANGUAGE_MODEL
from .config import from_dict
from .configs import CALENDAR, FitConfig
from .errors import RnnkitError
from .panel import has_future, input_size
from .runfiles import remove_temp_files, write_json_atomic
from .series import pad, read_labelled_csv, read_npz
from .tasks import Ensemble, SequenceConfig, SequenceModel, sequence_model

SOURCES = ("audio", "csv", "npz")
MEMBERS = "members"  # DIR/members/K: an ensemble member K's checkpoints and metrics
FEATURES = "features"  # DIR/features: audio features computed once, read by every run after


@dataclass
class ClassifierData:
    """What a classifier was trained on, so that prediction reads new inputs the same way."""

    source: str  # "audio" (a folder of files), "csv" or "npz"
    labels: list[str]  # the class names, in the order of the model's outputs
    label_pattern: str | None = None  # audio: the label is the first group of this regex
    columns: list[str] | None = None  # CSV feature columns
    id_column: str = "id"  # CSV column naming each sequence
    label_column: str = "label"  # CSV column holding its class
    audio: dict | None = None  # the AudioConfig of an audio run
    digest: str = ""  # `examples_digest` of what it trained and tested on ("": runs before it)

    def __post_init__(self):
        if self.source not in SOURCES:
            raise RnnkitError(f"data.source must be one of {', '.join(SOURCES)}, got "
                              f"{self.source!r}")
        if len(self.labels) < 2 or len(set(self.labels)) != len(self.labels):
            raise RnnkitError(f"data.labels must be two or more different class names, got "
                              f"{self.labels[:5]}")
        if self.label_pattern is not None:
            compile_pattern(self.label_pattern, "data.label_pattern")
        if self.columns is not None and not self.columns:
            raise RnnkitError("data.columns must name at least one column")
        if self.source == "audio":
            from_dict(AudioConfig, self.audio, "data.audio")


@dataclass
class ForecasterData:
    """The series a forecaster reads: their columns and roles, window, horizon and scale."""

    source: str  # "csv" or "npz"
    columns: list[str]  # the F columns to forecast, in the order of the model's outputs
    window: int  # W: past steps the model reads
    horizon: int  # H: steps it forecasts
    std: list[float]  # (F,) scale of H-step changes in the training part ("run" scale)
    scale: str = "run"  # "run": `std`; "window": each window's own scale (`rnnkit.panel`)
    id_column: str | None = None  # the CSV column naming each row's series; None: one series
    time_column: str | None = None  # the CSV column of times (order, calendar, future times)
    past: list[str] = field(default_factory=list)  # covariates known up to the origin only
    known: list[str] = field(default_factory=list)  # covariates known in advance
    calendar: list[str] = field(default_factory=list)  # "hour", "weekday", "month"
    quantiles: list[float] = field(default_factory=list)  # levels of the head; empty: a mean
    season: int = 1  # m of MASE and of the seasonal naive forecast
    widen: list[float] = field(default_factory=list)  # (Q,) calibration (`intervals.widened`)
    offsets: list[float] = field(default_factory=list)  # (Q,) the calibration of earlier runs
    digest: str = ""  # `examples_digest` of the series it read ("": runs before it)

    def __post_init__(self):
        if self.source not in ("csv", "npz"):
            raise RnnkitError(f"data.source must be 'csv' or 'npz', got {self.source!r}")
        if not self.columns:
            raise RnnkitError("data.columns must name at least one column")
        for name in ("window", "horizon", "season"):
            if getattr(self, name) < 1:
                raise RnnkitError(f"data.{name} must be 1 or more, got {getattr(self, name)}")
        if self.scale not in ("run", "window"):
            raise RnnkitError(f"data.scale must be 'run' or 'window', got {self.scale!r}")
        if self.scale == "run" and (len(self.std) != len(self.columns) or not all(
                math.isfinite(v) and v > 0 for v in self.std)):
            raise RnnkitError(f"data.std must be {len(self.columns)} positive numbers (one per "
                              f"column), got {self.std[:5]}")
        for name in ("widen", "offsets"):
            values = getattr(self, name)
            if values and (len(values) != len(self.quantiles) or not all(
                    math.isfinite(v) for v in values)):
                raise RnnkitError(f"data.{name} must be {len(self.quantiles)} numbers, one per "
                                  f"quantile, got {values[:5]}")
        unknown = sorted(set(self.calendar) - set(CALENDAR))
        if unknown:
            raise RnnkitError(f"data.calendar holds {unknown}; the features are "
                              f"{', '.join(CALENDAR)}")


# format -> (what the run is, the command that makes it, the commands that use it)
KINDS = {
    "rnnkit-classifier": ("classifier", "rnnkit classify train", "rnnkit classify predict"),
    "rnnkit-forecaster": ("forecaster", "rnnkit forecast train", "rnnkit forecast predict"),
    LANGUAGE_MODEL: ("language-model", "rnnkit train", "rnnkit sample or rnnkit eval"),
}
DATA = {"rnnkit-classifier": ClassifierData, "rnnkit-forecaster": ForecasterData}


def examples_digest(*parts) -> str:
    """A digest of the examples a run reads (lists of arrays, names, labels): arrays by their
    shapes and bytes, everything else by its text. --resume compares it, so that a run does not
    continue on other values under the same file names and options."""
    digest = hashlib.sha256()
    for part in parts:
        for item in part:
            if isinstance(item, np.ndarray):
                digest.update(str(item.shape).encode())
                digest.update(np.ascontiguousarray(item).tobytes())
            else:
                digest.update(repr(item).encode("utf-8", "surrogatepass"))
    return digest.hexdigest()[:16]


def check_data(kind: str, data, model: SequenceConfig) -> dict:
    """The data section of a `kind` run, checked field by field and against the model."""
    d = from_dict(DATA[kind], data, "data")
    if isinstance(d, ClassifierData):
        if len(d.labels) != model.output_size:
            raise RnnkitError(f"data.labels names {len(d.labels)} classes; the model has "
                              f"{model.output_size} outputs")
        width = model.input_size  # an .npz says its width itself, and read_npz checks it
        if d.source == "audio":
            width = AudioConfig(**d.audio).feature_size
        elif d.source == "csv" and d.columns:
            width = len(d.columns)
        if width != model.input_size:
            raise RnnkitError(f"data gives {width} features per step; the model reads "
                              f"{model.input_size}")
    else:
        F, Q = len(d.columns), max(1, len(d.quantiles))
        if (input_size(asdict(d)), d.horizon * F * Q) != (model.input_size, model.output_size) \
                or d.quantiles != model.quantiles \
                or model.tail != (d.horizon if has_future(asdict(d)) else 0):
            raise RnnkitError(f"data has {F} columns, horizon {d.horizon} and quantiles "
                              f"{d.quantiles}; the model reads {model.input_size} features and "
                              f"writes {model.output_size} (quantiles {model.quantiles}, tail "
                              f"{model.tail})")
    return asdict(d)


def write_config(run_dir: Path, kind: str, model: SequenceConfig, fit: FitConfig,
                 data: dict, ensemble: dict | None = None) -> None:
    """DIR/config.json; `ensemble`: how many members a classifier trains and why, which a
    resumed run reports as the run's own."""
    data = check_data(kind, data, model)  # what is written is what load_task accepts
    run_dir.mkdir(parents=True, exist_ok=True)
    write_json_atomic(run_dir / "config.json", {"format": kind, "version": VERSION,
                                                "model": asdict(model), "fit": asdict(fit),
                                                "data": data,
                                                **({"ensemble": ensemble} if ensemble else {})})


@contextlib.contextmanager
def training_run(run_dir: Path, kind: str, resume: bool, main: bool) -> Iterator[bool]:
    """Hold `run_dir` while a `kind` run trains into it; yields whether there is a run to
    resume. Rank 0 (`main`) takes the run lock (`checkpoint.RunLock`), refuses a run of another
    kind, and one of this kind unless `resume`, and clears rnnkit's temporary files that a
    killed process left; the other ranks of a torchrun leave the directory to rank 0."""
    if not main:
        yield resume and (run_dir / "config.json").exists()
        return
    require_utf8(run_dir.absolute())  # before anything is written: see checkpoint.require_utf8
    unstarted, made = False, not run_dir.exists()  # a folder the user made is theirs to keep
    if run_dir.is_dir() and not (run_dir / "config.json").exists():
        # before its config.json a run holds its lock and its features' cache only
        refuse_theirs(run_dir, foreign(run_dir, (LOCK, FEATURES)))
    try:
        with RunLock(run_dir):
            there = (run_dir / "config.json").exists()
            if there:
                fmt, _ = read_format(run_dir, kind)
                if fmt != kind:
                    raise wrong_kind(run_dir, fmt, kind, training=True)
                if not resume:
                    raise RnnkitError(f"{run_dir} already holds a {KINDS[kind][0]} run; add "
                                      "--resume to continue it, or choose another --out")
            remove_temp_files(run_dir)
            try:
                yield there
            except RnnkitError:
                unstarted = not there and next(run_dir.rglob(LAST), None) is None
                if unstarted:
                    remove_unstarted_task_run(run_dir)
                raise
    finally:
        if unstarted:  # the lock released: its file goes, and the folder if the run made it
            (run_dir / LOCK).unlink(missing_ok=True)  # and that empties it (as a language
            if made:  # model's run does, `checkpoint.remove_unstarted_run`)
                with contextlib.suppress(OSError):
                    run_dir.rmdir()


def remove_unstarted_task_run(run_dir: Path) -> None:
    """A new run refused before its first checkpoint (the data, a split or an option found
    wrong) leaves no run behind, so that the same command with the fix starts afresh: its
    config.json and its members folder go (no member trained), and (`training_run`) its lock
    and the folder when nothing else is left. The feature cache stays (the fixed command
    reads it instead of computing it again)."""
    (run_dir / "config.json").unlink(missing_ok=True)
    shutil.rmtree(run_dir / MEMBERS, ignore_errors=True)


def resumed_config(run_dir: Path, kind: str, model: SequenceConfig, fit: FitConfig,
                   given: set[str], data: dict) -> FitConfig:
    """The training options to continue a run with: its own, with the ones given now. The
    model and the data must be the run's (the same command plus --resume), and so must the
    options that decide which examples meet in a batch."""
    _, config = read_format(run_dir, kind)
    saved = from_dict(FitConfig, config.get("fit"), f"{run_dir / 'config.json'} fit",
                      in_file=True)
    # a field added since the run was made takes its default, which is what the run did
    trained = from_dict(type(model), config.get("model"), "config.json model")
    if trained != model:
        differ = ", ".join(f"{f.name} {getattr(trained, f.name)!r} there, {getattr(model, f.name)!r} "
                           "now" for f in fields(model)
                           if getattr(trained, f.name) != getattr(model, f.name))
        raise RnnkitError(f"the model options differ from those {run_dir} was trained with "
                          f"({differ}); give the same command plus --resume, or train a new "
                          "--out")
    then, now = check_data(kind, config.get("data") or {}, model), check_data(kind, data, model)
    if not then["digest"]:  # a run made before digests: its options are all there is to compare
        now["digest"] = ""
    if {**then, "digest": ""} != {**now, "digest": ""}:
        raise RnnkitError(f"the data or its options differ from those {run_dir} was trained on; "
                          "give the same command plus --resume, or train a new --out")
    if then["digest"] != now["digest"]:  # the same options, other values: other examples
        raise RnnkitError(f"the examples differ from those {run_dir} was trained on (the same "
                          "files and options, other values, labels or split); give the same "
                          "data plus --resume, or train a new --out")
    for name in FitConfig.layout:  # given or not: the seed also drew the splits
        if getattr(fit, name) != getattr(saved, name):
            raise RnnkitError(f"--{name.replace('_', '-')} {getattr(fit, name)} differs from the "
                              f"run's {getattr(saved, name)}; resuming needs the same batches")
    return FitConfig(**{**asdict(saved), **{k: getattr(fit, k) for k in given}})


def wrong_kind(run_dir: Path, fmt, kind: str | None, training: bool = False) -> RnnkitError:
    """The error for a run of another kind: what it is, what uses it, what to give instead;
    `training` a `kind` run into it, another --out."""
    if training:
        what = f"a {KINDS[fmt][0]} run (made by {KINDS[fmt][1]})" if fmt in KINDS else \
            f"a run of format {fmt!r}"
        return RnnkitError(f"{run_dir} holds {what}, not a {KINDS[kind][0]} run; choose "
                           f"another --out for {KINDS[kind][1]}")
    want = kind or " or ".join(DATA)
    makes = " or ".join(KINDS[k][1] for k in ([kind] if kind else DATA))
    needs = f"{KINDS[kind][2]} needs a run made by {makes}" if kind else \
        f"this needs a run made by {makes}"
    if fmt in KINDS:
        what, made, used = KINDS[fmt]
        return RnnkitError(f"{run_dir} is a {what} run (made by {made}); use it with {used}; "
                           f"{needs}")
    return RnnkitError(f"{run_dir / 'config.json'} is not a {want} run (format {fmt!r}); {needs}")


def read_format(run_dir: Path, kind: str | None = None) -> tuple[str, dict]:
    """The format of the run in `run_dir` (its config.json's "format", as text, whatever the
    JSON holds) and the config; `kind`, the format wanted, only words the error for no run."""
    path = run_dir / "config.json"
    if not path.is_file():
        if kind is None:
            raise RnnkitError(f"{str(run_dir)!r} is not a run directory (no config.json); make "
                              "one with rnnkit train, rnnkit classify train or rnnkit forecast "
                              "train ... --out DIR")
        what = "task run" if kind in DATA else "run"
        raise RnnkitError(f"{str(run_dir)!r} is not a {what} directory (no config.json); train "
                          f"one with: {KINDS[kind][1]} ... --out DIR")
    config = read_json(path, "JSON")
    fmt = config.get("format") if isinstance(config, dict) else None
    return (fmt if isinstance(fmt, str) else repr(fmt)), config  # tampered JSON may hold any value


def load_task(run_dir: str | os.PathLike, kind: str | None = None,
              device: str | torch.device = "cpu") -> tuple[SequenceModel | Ensemble, dict]:
    """The trained model of a classifier or forecaster run (eval mode) and its config, every
    section checked (`data` as `ClassifierData` or `ForecasterData`, back as a dict).

    `rnnkit.load` wraps them in the object that predicts (`rnnkit.runs`)."""
    run_dir = Path(run_dir)
    path = run_dir / "config.json"
    fmt, config = read_format(run_dir, kind or "rnnkit-classifier")
    if fmt not in DATA or (kind is not None and fmt != kind):
        raise wrong_kind(run_dir, fmt, kind)
    check_version(run_dir, config)
    model_cfg = from_dict(SequenceConfig, config.get("model"), "config.json model")
    from_dict(FitConfig, config.get("fit"), "config.json fit")
    try:
        config["data"] = check_data(fmt, config.get("data"), model_cfg)
    except RnnkitError as e:
        raise RnnkitError(f"{path}: {e}; the run directory is damaged, train it again") from None
    model = load_weights(run_dir / BEST, lambda: sequence_model(model_cfg))
    return model.to(device).eval(), config


# --- inputs, read the way the run was trained ----------------------------------------------

def read_examples(path: str, data: dict, cache_dir: Path | None,
                  training: bool = True) -> tuple[list[np.ndarray], list[str], list[str]]:
    """Sequences, labels and names of the examples in a folder, CSV or .npz (`data`: the run's
    input options). Not `training`: a CSV needs no label column, and the audio settings are
    the run's, not options to suggest."""
    p = Path(path)
    if p.is_dir():
        if data["source"] != "audio":
            raise RnnkitError(f"{p} is a folder, but the run reads {data['source']} data")
        cfg = AudioConfig(**data["audio"])
        files, labels = find_audio(p, data.get("label_pattern"), labelled=training)
        seqs = load_features(files, cfg, cache_dir, progress=True, rate_option=training)
        # file names (what --test-pattern reads); predictions name the path in the folder
        return seqs, labels, [f.name if training else f.relative_to(p).as_posix() for f in files]
    if not p.exists():
        raise RnnkitError(f"{p}: no such file or folder")
    if p.suffix.lower() == ".npz":
        seqs, labels = read_npz(p, labelled=training)
        return seqs, labels, [f"{p.name}[{i}]" for i in range(len(seqs))]
    if p.suffix.lower() == ".csv":
        seqs, labels, ids, columns = read_labelled_csv(
            p, data.get("columns"), data["id_column"], data["label_column"] if training else None)
        if data.get("columns") is None:
            data["columns"] = columns
        return seqs, labels, ids
    audio = "an audio folder" if training else "audio files (or a folder of them)"
    raise RnnkitError(f"{p}: expected {audio}, a .csv or an .npz file")


def check_features(seqs: list[np.ndarray], names: list[str], where: str) -> None:
    if not seqs:
        raise RnnkitError(f"{where}: no examples")
    width = seqs[0].shape[1]
    for s, n in zip(seqs, names, strict=True):
        if len(s) == 0:
            raise RnnkitError(f"{where}: {n} is an empty sequence")
        if s.shape[1] != width:
            raise RnnkitError(f"{where}: {n} has {s.shape[1]} features, others {width}")


def to_dataset(seqs: list[np.ndarray], targets) -> dict[str, torch.Tensor]:
    x, lengths = pad(seqs)  # (N, T_max, F), (N,)
    data = {"inputs": torch.from_numpy(x), "lengths": torch.from_numpy(lengths)}
    if targets is not None:
        data["targets"] = torch.as_tensor(np.asarray(targets), dtype=torch.long)
    return data
