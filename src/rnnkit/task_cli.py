"""`rnnkit classify`: sequence classification commands, and what the forecast commands
(`rnnkit.forecast_cli`) share with them.

    rnnkit classify train DATA --out DIR [--test PATH | --test-pattern REGEX] [options]
    rnnkit classify predict DIR FILE...

DATA is a folder of audio files (labels from sub-folders or --label-pattern), a CSV (rows of
sequences grouped by an id column, with a label column) or an .npz (x, lengths, y). Training
prints one line per epoch (its seconds and the time left), then the test accuracy and the
confusion matrix (also DIR/confusion.png), a `done:` line saying how the time was spent, and
last `test_accuracy <fraction>`. --max-time is the whole command's budget. The predict commands
print what `rnnkit.load(DIR).predict(...)` returns (`rnnkit.runs`), and the tests after training
go through the same objects. Their options are defined in `cli`, with every other command's.
"""

from __future__ import annotations

import math
import re
import time
from collections import Counter
from dataclasses import asdict, fields
from pathlib import Path

import numpy as np
import torch

from . import distributed
from .audio import AudioConfig, compile_pattern
from .config import from_dict
from .configs import FitConfig
from .devices import pick_device
from .errors import RnnkitError
from .fitting import accuracy, fit
from .optional import need
from .plots import plot_confusion
from .runfiles import write_json_atomic
from .runs import Classifier, load
from .task_runs import (
    check_features,
    read_examples,
    resumed_config,
    to_dataset,
    training_run,
    write_config,
)
from .tasks import SequenceConfig, SequenceModel

CLASSIFIER, FORECASTER = "rnnkit-classifier", "rnnkit-forecaster"  # their run formats


def fit_config(args) -> tuple[FitConfig, set[str]]:
    """The training options, and the names of those given on the command line."""
    values = {f.name: getattr(args, f.name) for f in fields(FitConfig)
              if getattr(args, f.name) is not None}
    return from_dict(FitConfig, values, "options"), set(values)


def model_config(args, input_size: int, output_size: int, head: str,
                 conv: int = 0) -> SequenceConfig:
    return SequenceConfig(input_size, output_size, head, args.cell, args.hidden, args.layers,
                          args.dropout, args.bidirectional, args.pool, conv=conv)


# Defaults a classifier's run fits to its data (set only where the command line leaves them).
CONV_WIDTH = 128  # the LSTM-FCN branch (Karim et al.: 128, 256, 128 channels)
STEPS = 1000  # without --max-time, the epochs default to about this many optimizer steps,
EPOCHS = (30, 1000)  # within these bounds


def fitted_defaults(fit_cfg: FitConfig, given: set[str], n_train: int) -> FitConfig:
    """The training options a classifier takes from its training set's size where they were
    not given: a batch of about an eighth of the set (16 to 64 examples), so that tens of
    sequences still make several steps an epoch; and, with --max-time, epochs until the time is
    up (the schedule fitted to it), else about STEPS steps."""
    values = asdict(fit_cfg)
    if "batch_size" not in given:
        values["batch_size"] = min(64, max(16, n_train // 8))
    if "epochs" not in given:
        per_epoch = math.ceil(n_train / values["batch_size"])
        values["epochs"] = 0 if fit_cfg.max_time else \
            min(EPOCHS[1], max(EPOCHS[0], math.ceil(STEPS / per_epoch)))
    return FitConfig(**values)


def audio_config(args) -> AudioConfig:
    values = {k: getattr(args, k) for k in ("sample_rate", "n_mfcc", "n_fft", "hop_length",
                                            "n_mels") if getattr(args, k) is not None}
    return AudioConfig(features=args.features, deltas=args.deltas, **values)


# --- classification ---------------------------------------------------------------------------

def stratified(labels: list[int], fraction: float, seed: int, what: str) -> tuple[list, list]:
    """Indices of a stratified split: (kept, held out)."""
    train_test_split = need("sklearn.model_selection", "tasks").train_test_split
    index = np.arange(len(labels))
    counts = Counter(labels)
    held = max(round(fraction * len(labels)), len(counts))
    if min(counts.values()) < 2 or held >= len(labels):
        raise RnnkitError(f"a stratified {what} split needs at least 2 examples of every class; "
                          f"the rarest has {min(counts.values())}; give --test PATH or lower "
                          "the fraction")
    keep, out = train_test_split(index, test_size=held, stratify=labels, random_state=seed)
    return sorted(keep.tolist()), sorted(out.tolist())


def cmd_classify_train(args) -> int:
    started = time.monotonic()  # --max-time is this command's budget, reading data included
    out = Path(args.out)
    fit_cfg, given = fit_config(args)
    # Imported now, not after training: its import time stays out of the budget's test share,
    # and a missing matplotlib fails before any work.
    need("matplotlib.figure", "tasks")
    for name in ("test_fraction", "val_fraction"):
        if not 0.0 <= getattr(args, name) < 1.0:
            raise RnnkitError(f"--{name.replace('_', '-')} must be in [0, 1), got "
                              f"{getattr(args, name)}")
    if args.test and args.test_pattern:
        raise RnnkitError("give --test PATH or --test-pattern REGEX, not both")
    if args.label_pattern:
        compile_pattern(args.label_pattern, "--label-pattern")
    main = distributed.launched_rank() == 0  # under torchrun, rank 0 alone writes and reports
    with training_run(out, CLASSIFIER, args.resume, main) as resuming:
        return classify_train(args, fit_cfg, given, resuming, main, started)


def classify_train(args, fit_cfg: FitConfig, given: set[str], resuming: bool, main: bool,
                   started: float) -> int:
    """`rnnkit classify train`, in its run directory held by `training_run`."""
    out = Path(args.out)
    say = print if main else (lambda *a, **k: None)
    data: dict = {"source": "audio" if Path(args.data).is_dir() else
                  Path(args.data).suffix[1:].lower(),
                  "label_pattern": args.label_pattern, "columns": args.columns,
                  "id_column": args.id_column, "label_column": args.label_column}
    if data["source"] == "audio":
        data["audio"] = asdict(audio_config(args))
    cache = out / "features"
    seqs, labels, names = read_examples(args.data, data, cache)
    check_features(seqs, names, args.data)
    if args.test:
        test_seqs, test_labels, test_names = read_examples(args.test, data, cache)
        check_features(test_seqs, test_names, args.test)
        how = f"test set {args.test}"
    elif args.test_pattern:
        regex = compile_pattern(args.test_pattern, "--test-pattern")
        is_test = [bool(regex.search(n)) for n in names]
        if all(is_test) or not any(is_test):
            raise RnnkitError(f"--test-pattern {args.test_pattern!r} matches "
                              f"{sum(is_test)} of {len(names)} examples; it must select some, "
                              "not all")
        test_seqs = [s for s, t in zip(seqs, is_test, strict=True) if t]
        test_labels = [s for s, t in zip(labels, is_test, strict=True) if t]
        seqs = [s for s, t in zip(seqs, is_test, strict=True) if not t]
        labels = [s for s, t in zip(labels, is_test, strict=True) if not t]
        how = f"--test-pattern {args.test_pattern!r}"
    else:
        test_seqs, test_labels, how = [], [], ""
    classes = sorted(set(labels), key=natural_key)
    if len(classes) < 2:
        raise RnnkitError(f"{args.data}: every example has the label {classes[0]!r}; a "
                          "classifier needs at least two classes")
    index = {c: i for i, c in enumerate(classes)}
    y = [index[c] for c in labels]
    if not args.test and not args.test_pattern:
        keep, held = stratified(y, args.test_fraction, fit_cfg.seed, "test")
        test_seqs, test_labels = [seqs[i] for i in held], [labels[i] for i in held]
        seqs, y = [seqs[i] for i in keep], [y[i] for i in keep]
        how = f"stratified {args.test_fraction:.0%} split (seed {fit_cfg.seed})"
    unknown = sorted(set(test_labels) - set(classes))
    if unknown:
        raise RnnkitError(f"the test set has labels {unknown[:5]} that the training set lacks")
    if test_seqs[0].shape[1] != seqs[0].shape[1]:
        raise RnnkitError(f"the test set has {test_seqs[0].shape[1]} features per step, the "
                          f"training set {seqs[0].shape[1]}")
    val_seqs, val_y = [], []
    if args.val_fraction:
        keep, held = stratified(y, args.val_fraction, fit_cfg.seed, "validation")
        val_seqs, val_y = [seqs[i] for i in held], [y[i] for i in held]
        seqs, y = [seqs[i] for i in keep], [y[i] for i in keep]
    say(f"data: {len(seqs)} train / {len(val_seqs)} validation / {len(test_seqs)} test "
          f"examples, {len(classes)} classes, {seqs[0].shape[1]} features per step; test from "
          f"{how}")

    F = seqs[0].shape[1]
    fit_cfg = fitted_defaults(fit_cfg, given, len(seqs))
    conv = CONV_WIDTH if args.conv is None else args.conv
    torch.manual_seed(fit_cfg.seed)  # the initial weights, so that --seed repeats the run
    model = SequenceModel(model_config(args, F, len(classes), "classify", conv))
    frames = np.concatenate(seqs)  # (sum of T, F)
    model.set_standardization(torch.from_numpy(frames.mean(0)), torch.from_numpy(frames.std(0)))
    data["labels"] = classes
    if resuming:
        fit_cfg = resumed_config(out, CLASSIFIER, model.config, fit_cfg, given, data)
    elif main:
        write_config(out, CLASSIFIER, model.config, fit_cfg, data)
    train = to_dataset(seqs, y)
    val = to_dataset(val_seqs, val_y) if val_seqs else None
    n_params = sum(p.numel() for p in model.parameters())
    say(f"model: {model.config.layers} x {model.config.hidden} {model.config.cell}"
          f"{' bidirectional' if model.config.bidirectional else ''}, pool {model.config.pool}"
          f"{f', convolutional branch {model.config.conv}' if model.config.conv else ''}, "
          f"{n_params:,} parameters; batch {fit_cfg.batch_size}, "
          f"{f'{fit_cfg.epochs} epochs' if fit_cfg.epochs else 'epochs until the time is up'}")
    fitted = time.monotonic()
    summary = fit(model, train, val, fit_cfg, out, metric=accuracy, started=started,
                  test_rows=len(test_seqs), resume=resuming)
    stopped = 130 if summary["stopped"] in ("SIGINT", "SIGTERM") else 0
    if not main:
        return stopped
    tested = time.monotonic()
    predicted = Classifier(model, data).predict(test_seqs).probs.argmax(-1)  # (N,)
    truth = np.array([index[c] for c in test_labels])
    test_acc = float((predicted == truth).mean())
    matrix = confusion(truth, predicted, len(classes))
    print_confusion(matrix, classes)
    plot_confusion(matrix, classes, out / "confusion.png")
    write_json_atomic(out / "metrics.json", {
        "test_accuracy": test_acc, "test_examples": len(test_seqs), "confusion": matrix.tolist(),
        "labels": classes, "epochs": len(summary["history"]), "best_epoch": summary["best_epoch"],
        "train_seconds": summary["seconds"], "history": summary["history"]})
    print(done(summary, fit_cfg, fitted - started, time.monotonic() - tested, out))
    print(f"test_accuracy {test_acc:.4f}")
    return stopped


def done(summary: dict, cfg: FitConfig, reading: float, testing: float, out: Path) -> str:
    """The line that ends training: the epochs (and whether the time budget cut them short) and
    how the command's time was spent."""
    epochs = len(summary["history"])
    if summary["stopped"] == "time" and not cfg.epochs:
        what = f"{epochs} evaluations (until the --max-time budget of {cfg.max_time:g}s)"
    elif summary["stopped"] == "time":
        what = (f"{epochs} of {cfg.epochs} planned epochs (the --max-time budget of "
                f"{cfg.max_time:g}s cut them short)")
    elif summary["stopped"]:
        what = f"{epochs} of {cfg.epochs} planned epochs (stopped by {summary['stopped']})"
    elif epochs == cfg.epochs:
        what = f"{epochs} epochs"
    else:  # evaluated every few epochs (`fitting.MAX_EVALS`)
        what = f"{cfg.epochs} epochs, {epochs} evaluations"
    total = reading + summary["seconds"] + testing
    return (f"done: {what} in {total:.1f}s: {reading:.1f}s reading data, "
            f"{summary['train_seconds']:.1f}s training, {summary['eval_seconds']:.1f}s "
            f"validating and saving, {testing:.1f}s testing; best epoch {summary['best_epoch']}; "
            f"run directory {out}")


def natural_key(label: str):
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", label)]


def confusion(truth: np.ndarray, predicted: np.ndarray, n: int) -> np.ndarray:
    """(n, n) counts: row = true class, column = predicted class."""
    matrix = np.zeros((n, n), dtype=np.int64)
    np.add.at(matrix, (truth, predicted), 1)
    return matrix


def print_confusion(matrix: np.ndarray, classes: list[str]) -> None:
    width = max(5, *(len(c) for c in classes), len(str(matrix.max())))
    print("confusion matrix (rows: true, columns: predicted)")
    print(" " * width + " " + " ".join(c[:width].rjust(width) for c in classes))
    for c, row in zip(classes, matrix, strict=True):
        print(c[:width].rjust(width) + " " + " ".join(str(v).rjust(width) for v in row))


def cmd_classify_predict(args) -> int:
    classifier = load(args.run_dir, pick_device(args.device), kind=CLASSIFIER)
    result = classifier.predict(args.files)
    for name, label, p in zip(result.names, result.labels, result.probs, strict=True):
        print(f"{name}\t{label}\t{float(p.max()):.4f}")
    return 0
