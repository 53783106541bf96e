"""The `rnnkit` command line: every command's options, and the one-line error handling.

    rnnkit train [TEXT_FILE ...] --out DIR [options]    no file: this Python's standard library
    rnnkit train TEXT_FILE ... --init-from RUN --out DIR   fine-tune RUN (or "builtin")
    rnnkit sample [DIR] [--prime TEXT] [--length N] [--temperature T] [--top-k K] [--top-p P]
                      [--repetition-penalty R] [--greedy | --beam K] [--num-samples N]
                      [--precision {fp32,bf16,int8,int4}] [--seed S] [--verbose]
                                                     no DIR: the built-in model
    rnnkit export DIR --format onnx --out FILE       language model, classifier or forecaster
    rnnkit eval DIR [TEXT_FILE]
    rnnkit prepare TEXT_FILE ... --out DATA          then: rnnkit train DATA --out DIR
    rnnkit classify train|predict ..., rnnkit forecast train|predict ...
    rnnkit serve [DIR ...], rnnkit viz DIR TEXT_FILE --out FILE

`python -m rnnkit ...` is the same. Bad input ends with one line on stderr and exit status 2;
set RNNKIT_DEBUG=1 to see a traceback instead.

This module only parses: each command names the function that runs it ("lm_cli.cmd_train",
"task_cli.cmd_classify_train", "serve.cmd_serve", ...), imported once its arguments are read, so
`rnnkit --help` and every usage error answer without loading PyTorch.
"""

from __future__ import annotations

import argparse
import contextlib
import difflib
import errno
import importlib
import math
import os
import re
import signal
import sys
import threading
import warnings
from dataclasses import fields

from . import __version__
from .config import brief
from .configs import (
    CALENDAR,
    CELL_TYPES,
    DEVICES,
    ON_NAN,
    POOLS,
    PRECISIONS,
    STEP_PRECISIONS,
    TOKENIZERS,
    FitConfig,
    TrainConfig,
    quantile_levels,
)
from .errors import RnnkitError

DEFAULT_STEPS = TrainConfig.max_steps


class Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line naming the fix."""

    def error(self, message: str):
        raise RnnkitError(f"{message} (see: {self.prog} --help)")

    def parse_known_args(self, args=None, namespace=None):
        # Leftover arguments are reported by the top parser: note the innermost sub-command
        # that left them, so that the error points at its --help, not at rnnkit's.
        namespace, extras = super().parse_known_args(args, namespace)
        if extras and not hasattr(namespace, "help_prog"):
            namespace.help_prog = self.prog
        return namespace, extras

    def parse_args(self, args=None, namespace=None):
        namespace, extras = self.parse_known_args(args, namespace)
        if extras:
            options = [o for a in self.chosen_actions(namespace) for o in a.option_strings]
            close = [m for e in extras if e.startswith("--")
                     for m in difflib.get_close_matches(e.split("=")[0], options, 1, 0.8)]
            hint = f"; did you mean {close[0]}?" if close else ""
            raise RnnkitError(f"unrecognized arguments: {' '.join(extras)}{hint} (see: "
                              f"{namespace.help_prog} --help)")
        for action in self.chosen_actions(namespace):
            value = getattr(namespace, action.dest, None)
            if action.dest not in MAY_BE_EMPTY and (value == "" or isinstance(value, list)
                                                    and "" in value):
                name = action.option_strings[0] if action.option_strings else action.metavar
                raise RnnkitError(f"{name} is empty (an unset shell variable?); give it a "
                                  "value")
        return namespace

    def chosen_actions(self, namespace) -> list[argparse.Action]:
        """The arguments of this parser and of the sub-commands `namespace` went through."""
        actions = []
        for action in self._actions:
            if isinstance(action, argparse._SubParsersAction):
                chosen = action.choices.get(getattr(namespace, action.dest, None))
                actions += chosen.chosen_actions(namespace) if chosen is not None else []
            else:
                actions.append(action)
        return actions


# An empty prime starts as after a newline; serve names what an empty host would mean itself.
MAY_BE_EMPTY = {"prime", "host", "allow_host"}


def finite(text: str) -> float:
    """A number option's value: NaN and infinities are no setting (the configs refuse them
    too, but by their field names)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid number {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"invalid number {text!r}: give a finite number")
    return value


DURATION_PART = r"\s*(\d+(?:\.\d+)?)\s*(min|[smh]?)\s*"
UNIT_SECONDS = {"": 1, "s": 1, "m": 60, "min": 60, "h": 3600}


def duration(text: str) -> float:
    """Seconds from '90', '90s', '10m', '10min', '1.5h', '1h30m'."""
    parts = re.findall(DURATION_PART, text)
    units = [UNIT_SECONDS[unit] for _, unit in parts]
    several_in_order = all(unit for _, unit in parts) \
        and units == sorted(set(units), reverse=True)  # 1h30m, not 1 30 or 5m 5
    if not re.fullmatch(f"(?:{DURATION_PART})+", text) or not text.strip() \
            or len(parts) > 1 and not several_in_order:
        raise argparse.ArgumentTypeError(f"invalid duration {text!r}; write e.g. 90s, 10m, 1h "
                                         "or 1h30m")
    seconds = sum(float(n) * UNIT_SECONDS[unit] for n, unit in parts)
    if not 0 < seconds < math.inf:
        raise argparse.ArgumentTypeError(f"{brief(repr(text))} is not a usable time limit; give "
                                         "a duration above 0 (e.g. 10m), or leave the option "
                                         "out for none")
    return seconds


def build_parser() -> Parser:
    p = Parser(prog="rnnkit", description="Recurrent neural networks on PyTorch: train character "
               "language models and generate text.")
    p.add_argument("--version", action="version", version=f"rnnkit {__version__}")
    sub = p.add_subparsers(dest="command", required=True, parser_class=Parser)

    t = sub.add_parser("train", help="train a character language model",
                       description="Train a character-level language model on text files (none: "
                       "this Python's standard-library source). The defaults reached 1.46 "
                       "nats/char on tinyshakespeare in 10 minutes on 2 CPU cores.")
    t.set_defaults(run="lm_cli.cmd_train")
    t.add_argument("texts", nargs="*", metavar="TEXT_FILE", help="text files to train on, or one "
                   "directory made by `rnnkit prepare`")
    t.add_argument("--out", required=True, metavar="DIR", help="run directory to write: new, "
                   "empty, or a run to --resume")
    model = t.add_argument_group("model")
    model.add_argument("--cell", choices=CELL_TYPES, help="recurrent cell (default lstm)")
    model.add_argument("--layers", type=int, help="stacked layers (default 2)")
    model.add_argument("--hidden", type=int, help="units per layer (default 384)")
    model.add_argument("--embed", type=int, help="embedding size (default: --hidden)")
    model.add_argument("--dropout", type=finite, help="dropout between layers and before the output layer "
                       "(default 0)")
    opt = t.add_argument_group("training")
    opt.add_argument("--seq-len", type=int, help=f"BPTT steps per batch (default "
                     f"{TrainConfig.seq_len})")
    opt.add_argument("--batch-size", type=int, help=f"streams per batch (default "
                     f"{TrainConfig.batch_size})")
    opt.add_argument("--lr", type=finite, help=f"peak learning rate (default {TrainConfig.lr})")
    opt.add_argument("--lr-min", type=finite, help="final learning rate as a fraction of --lr "
                     f"(default {TrainConfig.lr_min})")
    opt.add_argument("--warmup", type=int, help=f"warm-up steps (default {TrainConfig.warmup})")
    opt.add_argument("--weight-decay", type=finite, help="AdamW weight decay (default 0)")
    opt.add_argument("--grad-clip", type=finite, help="clip the gradient norm; 0 = off "
                     f"(default {TrainConfig.grad_clip})")
    opt.add_argument("--max-steps", type=int, help=f"total steps of the run (default "
                     f"{DEFAULT_STEPS}, or none with --max-time)")
    opt.add_argument("--max-time", type=duration, help="time budget of this invocation, final "
                     "evaluation included, e.g. 90s, 10m, 1h (default: none)")
    opt.add_argument("--val-fraction", type=finite, help="end of the text held out "
                     f"(default {TrainConfig.val_fraction})")
    opt.add_argument("--eval-every", type=int, help=f"steps between evaluations and "
                     f"checkpoints (default {TrainConfig.eval_every})")
    opt.add_argument("--eval-tokens", type=int, help="validation tokens per evaluation, at most "
                     f"(default {TrainConfig.eval_tokens:,}; bounds evaluation on huge corpora)")
    opt.add_argument("--tokenizer", choices=TOKENIZERS, help="char (Unicode) or byte "
                     "(default char)")
    opt.add_argument("--seed", type=int, help=f"random seed (default {TrainConfig.seed})")
    opt.add_argument("--device", choices=("auto", "cpu", "cuda"), help="where to train "
                     "(default auto: cuda when available)")
    opt.add_argument("--resume", action="store_true", help="continue the run in --out on its own "
                     "data (or start it, if it holds none yet)")
    opt.add_argument("--init-from", metavar="RUN", help="start from the weights of run directory "
                     "RUN, or of the built-in model with 'builtin' (fine-tuning: RUN's model and "
                     "tokenizer, this run's own settings; default: from scratch)")
    opt.add_argument("--on-nan", choices=("stop", "rollback"), help="on a NaN or exploding "
                     "loss: stop (default), or roll back to the last checkpoint with half the "
                     "learning rate")
    opt.add_argument("--sample-length", type=int, help="characters sampled into samples.txt at "
                     f"each evaluation and shown at the end (default {TrainConfig.sample_length}; "
                     "0: none)")
    opt.add_argument("--precision", choices=("fp32", "bf16", "fp16"), help="autocast to bf16 or "
                     "fp16 (default fp32)")
    opt.add_argument("--accumulate", type=int, help="micro-batches per step, to save memory "
                     "(default 1)")

    s = sub.add_parser("sample", help="generate text from a trained run",
                       description="Generate text from a trained run, streamed to stdout.")
    s.set_defaults(run="lm_cli.cmd_sample")
    s.add_argument("run_dir", metavar="DIR", nargs="?", help="run directory made by rnnkit "
                   "train (default: the built-in model)")
    s.add_argument("--prime", default="", help="text to start from (default: none, as after a "
                   "newline)")
    s.add_argument("--length", type=int, default=500, help="characters to generate; a byte model's "
                   "(the built-in one's) are bytes (default 500)")
    s.add_argument("--temperature", type=finite, default=1.0, help="softmax temperature "
                   "(default 1.0; lower is more conservative)")
    s.add_argument("--top-k", type=int, help="sample among the K most likely characters only "
                   "(default: all)")
    s.add_argument("--greedy", action="store_true", help="always take the most likely character")
    s.add_argument("--top-p", type=finite, help="nucleus sampling: among the most likely "
                   "characters that make up this much probability, e.g. 0.9 (default: off)")
    s.add_argument("--repetition-penalty", type=finite, default=1.0, help="above 1, characters "
                   "already in the text become less likely (CTRL's rule; default 1: none)")
    s.add_argument("--num-samples", type=int, help="generate N samples in one batch, printed "
                   "one after another (default 1)")
    s.add_argument("--beam", type=int, metavar="K", help="beam search of width K: the most "
                   "likely continuation found, instead of a random one (default: off)")
    s.add_argument("--precision", choices=STEP_PRECISIONS, default="fp32", help="weights while "
                   "stepping: fp32 (exact), bf16, int8 (CPU), int4 (CPU; fastest for one stream) "
                   "(default fp32)")
    s.add_argument("--seed", type=int, help="fix the sampling: same seed, same text (default: "
                   "a random seed)")
    s.add_argument("--device", choices=("auto", "cpu", "cuda"), default="cpu",
                   help="where to run the model (default cpu)")
    s.add_argument("--verbose", action="store_true", help="report characters per second on stderr")

    e = sub.add_parser("eval", help="loss of a trained run on a text file or its held-out text",
                       description="Loss of a trained run, in nats and bits per character, on a "
                       "text file or on the run's held-out text.")
    e.set_defaults(run="lm_cli.cmd_eval")
    e.add_argument("run_dir", metavar="DIR", help="run directory made by rnnkit train, or builtin")
    e.add_argument("text", nargs="?", metavar="TEXT_FILE", help="text to evaluate on (default: "
                   "the run's held-out text)")
    e.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                   help="where to run the model (default auto: cuda when available)")
    e.add_argument("--batch-size", type=int, help="streams per batch (default: the run's)")

    r = sub.add_parser("prepare", help="encode text into a token file for training",
                       description="Encode text files, streamed, into DATA/tokens.bin and "
                       "DATA/data.json; `rnnkit train DATA` then reads it memory-mapped.")
    r.set_defaults(run="lm_cli.cmd_prepare")
    r.add_argument("texts", nargs="+", metavar="TEXT_FILE", help="text files to encode, in order")
    r.add_argument("--out", required=True, metavar="DATA", help="directory to write")
    r.add_argument("--tokenizer", choices=TOKENIZERS, help="char (Unicode) or byte (default "
                   "char; with --vocab, the vocabulary's)")
    r.add_argument("--vocab", metavar="FILE", help="use this vocab.json (or run directory's) "
                   "instead of building one from the text (default: built from the text)")

    x = sub.add_parser("export", help="write a trained run as an ONNX file",
                       description="Export a language model (one step: token and state in, "
                       "logits and state out), a classifier or a forecaster (whole sequences "
                       "in) to ONNX. Needs onnx (the export extra: pip install onnx onnxruntime).")
    x.set_defaults(run="lm_cli.cmd_export")
    x.add_argument("run_dir", metavar="DIR", help="the run directory to export")
    x.add_argument("--format", choices=("onnx",), default="onnx", help="file format (default onnx)")
    x.add_argument("--out", required=True, metavar="FILE", help="file to write, e.g. model.onnx")

    add_task_commands(sub)
    add_serve_commands(sub)
    return p


def add_task_commands(sub) -> None:
    """`classify` and `forecast`, each with `train` and `predict` (run by `task_cli`)."""
    devices = DEVICES
    c = sub.add_parser("classify", help="classify sequences: audio, CSV or .npz (many-to-one)",
                       description="Train a sequence classifier on audio, CSV or .npz data, "
                       "or label new inputs with a trained one.")
    csub = c.add_subparsers(dest="action", required=True, parser_class=Parser)
    t = csub.add_parser("train", help="train a sequence classifier",
                        description="Train a many-to-one classifier: epochs, the best weights "
                        "on the validation part, then the test accuracy and confusion matrix.")
    t.set_defaults(run="task_cli.cmd_classify_train")
    t.add_argument("data", metavar="DATA", help="audio folder, CSV or .npz")
    t.add_argument("--out", required=True, metavar="DIR", help="run directory to write")
    split = t.add_argument_group("held-out data")
    split.add_argument("--test", metavar="PATH", help="test set (folder, CSV or .npz like DATA; "
                       "default: --test-pattern or a stratified split)")
    split.add_argument("--test-pattern", metavar="REGEX", help="examples whose file name (or CSV "
                       "id) matches are the test set (default: none)")
    split.add_argument("--test-fraction", type=finite, default=0.2, help="otherwise a stratified "
                       "split holds out this fraction (default 0.2)")
    split.add_argument("--val-fraction", type=finite, default=0.1, help="stratified part of the "
                       "training set that picks the best epoch (default 0.1; 0: keep the last)")
    add_data_options(t)
    shape = add_model_options(t, fitted=True)
    shape.add_argument("--conv", type=int, metavar="C", help="width of a convolutional branch "
                       "beside the recurrent one (LSTM-FCN: Conv1d blocks C, 2C, C); 0: none "
                       "(default 128)")
    shape.add_argument("--downsample", type=int, metavar="K", help="the layers read the mean "
                       "of each block of K steps (default: every step; an ensemble's members, "
                       "where sequences differ in length, read blocks of 1, 8, 4, 2... steps, "
                       "the largest leaving the median sequence, as it is read (--pad-to), at "
                       "least 16)")
    shape.add_argument("--pad-to", type=int, metavar="N", help="read a sequence shorter than N "
                       "steps as N steps, padded at the training mean; 0: the padding is not "
                       "read (default: the longest training sequence where lengths vary, unless that "
                       "reads more than 8 times the real steps; else 0)")
    t.add_argument("--ensemble", type=int, metavar="N", help="train N classifiers, each on its "
                   "own seed and validation part, and average their probabilities (default: "
                   "with --max-time, as many as give each about 1000 steps, at most 5; else 1)")

    p = csub.add_parser("predict", help="label and probability for each input",
                        description="Label new inputs with a trained classifier: one line per "
                        "example, its label and probability, tab-separated.")
    p.set_defaults(run="task_cli.cmd_classify_predict")
    p.add_argument("run_dir", metavar="DIR", help="run directory made by rnnkit classify train")
    p.add_argument("files", nargs="+", metavar="FILE", help="audio files or folders, CSV or .npz")
    p.add_argument("--device", choices=devices, default="cpu", help="default cpu")

    f = sub.add_parser("forecast", help="forecast series: one or many, with covariates and "
                       "quantiles", description="Train one forecaster on every series of a CSV "
                       "or .npz, or forecast them with a trained one.")
    fsub = f.add_subparsers(dest="action", required=True, parser_class=Parser)
    t = fsub.add_parser("train", help="train a global forecaster on one or many series",
                        description="Train a forecaster of the next H steps from the last W of "
                        "every series, and report its error on the held-out end of each series "
                        "(MASE, sMAPE, interval coverage) against the seasonal naive forecast.")
    t.set_defaults(run="forecast_cli.train")
    t.add_argument("series", metavar="SERIES", help="CSV (a header, then one row per time step "
                   "and series) or .npz (x [N, T, F], lengths [N], ids [N])")
    t.add_argument("--out", required=True, metavar="DIR", help="run directory to write")
    t.add_argument("--columns", type=columns_list, help="comma-separated columns to forecast "
                   "(default: every column without another role)")
    t.add_argument("--horizon", type=int, default=1, help="steps to forecast, H (default 1)")
    t.add_argument("--window", type=int, help="past steps the model reads (default: 48, or "
                   "two seasons when that is longer)")
    d = t.add_argument_group("many series, covariates and quantiles")
    d.add_argument("--id-column", metavar="NAME", help="CSV column naming each row's series "
                   "(default: the file is one series)")
    d.add_argument("--time-column", metavar="NAME", help="CSV column of times (ISO dates or "
                   "numbers): orders each series' rows, gives --calendar and the season (default none: "
                   "the rows are in order)")
    d.add_argument("--past", type=columns_list, metavar="A,B", help="covariates known only up "
                   "to the forecast origin (default none)")
    d.add_argument("--known", type=columns_list, metavar="A,B", help="covariates known in "
                   "advance; forecasting needs their next H rows (default none)")
    d.add_argument("--calendar", type=calendar_list, metavar="hour,weekday,month",
                   help="calendar features of --time-column, known in advance (default none)")
    d.add_argument("--quantiles", type=quantile_list, metavar="0.1,0.5,0.9", help="forecast "
                   "these quantiles (pinball loss; 0.5, the point forecast, is always added), "
                   "widen each interval, by a multiple of its width, until it covers its share "
                   "of the held-out errors known at the origin, and report its coverage "
                   "(default: a mean forecast, squared error)")
    d.add_argument("--season", type=int, help="season length m of MASE and the seasonal naive "
                   "forecast (default: from --time-column's spacing, else 1)")
    split = t.add_argument_group("held-out data")
    split.add_argument("--origins", type=int, default=1, help="the last K horizons of every "
                       "series are the test set, one forecast origin each (default 1)")
    split.add_argument("--val-origins", type=int, default=1, help="the horizons before them "
                       "pick the best epoch (default 1; 0: keep the last epoch)")
    split.add_argument("--test-fraction", type=finite, help="instead, the last fraction of every "
                       "series is the test set, with an origin at every step (default: "
                       "--origins)")
    split.add_argument("--val-fraction", type=finite, default=0.1, help="with --test-fraction, "
                       "the fraction before it that picks the best epoch (default 0.1)")
    add_model_options(t)

    p = fsub.add_parser("predict", help="forecast the next H steps of every series",
                        description="Forecast the next H steps after the end of every series "
                        "of a CSV or .npz (and, when they are long enough, the error of the "
                        "last H steps against the naive forecasts); writes a plot.")
    p.set_defaults(run="forecast_cli.predict")
    p.add_argument("run_dir", metavar="DIR", help="run directory made by rnnkit forecast train")
    p.add_argument("series", metavar="SERIES", help="CSV or .npz with the run's columns")
    p.add_argument("--plot", metavar="PATH", help="the picture of history, forecast and "
                   "interval (default DIR/forecast.png)")
    p.add_argument("--show", type=columns_list, metavar="ID,ID", help="series to draw (default: "
                   "the first 4)")
    p.add_argument("--device", choices=devices, default="cpu", help="default cpu")


def columns_list(text: str) -> list[str]:
    names = [c.strip() for c in text.split(",") if c.strip()]
    if not names:
        raise argparse.ArgumentTypeError("give column names separated by commas")
    return names


def calendar_list(text: str) -> list[str]:
    names = columns_list(text)
    unknown = [n for n in names if n not in CALENDAR]
    if unknown or len(set(names)) != len(names):
        raise argparse.ArgumentTypeError(f"give different features among {', '.join(CALENDAR)}, "
                                         f"separated by commas; got {text!r}")
    return names


def quantile_list(text: str) -> list[float]:
    try:
        return quantile_levels(text)
    except RnnkitError as e:
        raise argparse.ArgumentTypeError(str(e).removeprefix("--quantiles ")) from None


def add_data_options(t) -> None:
    a = t.add_argument_group("audio and CSV input")
    a.add_argument("--label-pattern", metavar="REGEX", help="label = first group of REGEX in "
                   r"the file name, e.g. '^(\d)_' (default: the sub-folder name)")
    a.add_argument("--features", choices=("mfcc", "raw"), default="mfcc", help="audio as MFCC "
                   "frames or raw samples (default mfcc)")
    for name, default, what in (("sample-rate", 22050, "audio is resampled to this rate, Hz"),
                                ("n-mfcc", 13, "MFCC coefficients per frame"),
                                ("n-fft", 2048, "FFT window, samples"),
                                ("hop-length", 512, "samples between frames"),
                                ("n-mels", 128, "mel bands")):
        a.add_argument(f"--{name}", type=int, help=f"{what} (default {default})")
    a.add_argument("--deltas", action="store_true", help="add MFCC deltas and delta-deltas "
                   "(default off)")
    a.add_argument("--columns", type=columns_list, help="CSV feature columns (default: all but "
                   "--id-column and --label-column)")
    a.add_argument("--id-column", default="id", help="CSV column naming each sequence "
                   "(default id)")
    a.add_argument("--label-column", default="label", help="CSV column holding its class "
                   "(default label)")


# What each FitConfig field means on the command line (the dataclass's comments say the same).
FIT_HELP = {
    "epochs": "passes over the training set, resumes included",
    "batch_size": "examples per optimizer step (all processes together)",
    "lr": "peak learning rate of AdamW", "lr_min": "the cosine decay ends at lr x lr-min",
    "warmup": "steps of linear warm-up", "weight_decay": "AdamW weight decay, on matrices",
    "grad_clip": "clip the gradient norm; 0: off", "seed": "initial weights, splits, shuffling "
    "and dropout: the same seed repeats the run",
    "accumulate": "micro-batches per step, to save memory",
    "precision": "autocast to bf16 or fp16", "on_nan": "on a NaN loss: stop, or roll back to "
    "the last checkpoint with half the learning rate",
}
CHOICES = {"device": DEVICES, "precision": PRECISIONS, "on_nan": ON_NAN}


# The defaults `classify train` fits to its data (`task_cli.fitted_defaults`), as its help says.
FITTED = {"epochs": "until --max-time ends, else about 1000 steps",
          "batch_size": "an eighth of the training set, 16 to 64",
          "bucket": "off where sequences of different lengths are all read padded to one "
                    "length (--pad-to), else on"}


def add_model_options(t, fitted: bool = False):
    """The model and training options of `classify train` and `forecast train` (`fitted`: the
    epochs and batch size default to what suits the data); returns the model group, for a
    command's own model options."""
    m = t.add_argument_group("model")
    m.add_argument("--cell", choices=CELL_TYPES, default="lstm", help="recurrent cell "
                   "(default lstm; rnn is the tanh RNN)")
    m.add_argument("--layers", type=int, default=1, help="stacked layers (default 1)")
    m.add_argument("--hidden", type=int, default=128, help="units per layer and direction "
                   "(default 128)")
    m.add_argument("--dropout", type=finite, default=0.0, help="between layers and before the "
                   "output (default 0)")
    m.add_argument("--bidirectional", action="store_true", help="also read each sequence "
                   "backwards (default off)")
    m.add_argument("--pool", choices=POOLS, default="last", help="summary of the states "
                   "(default last)")
    o = t.add_argument_group("training")
    o.add_argument("--resume", action="store_true", help="continue the run in --out from its "
                   "last checkpoint: the same command plus --resume (or start it, if it holds "
                   "none yet; default: a new run)")
    for f in fields(FitConfig):
        flag = "--" + f.name.replace("_", "-")
        if f.name == "max_time":
            o.add_argument(flag, type=duration, help="time budget of this command, e.g. 90s, "
                           "5m, counted once PyTorch is loaded (a second or two after the start): "
                           "reading data, training and the last evaluation and test fit in it "
                           "(default none)")
        elif f.name == "device":
            o.add_argument(flag, choices=DEVICES, help="default auto (cuda when available)")
        elif f.name in CHOICES:
            o.add_argument(flag, choices=CHOICES[f.name], help=f"{FIT_HELP[f.name]} (default "
                           f"{f.default})")
        elif isinstance(f.default, bool):  # --bucket / --no-bucket (type=bool takes any text)
            default = FITTED[f.name] if fitted and f.name in FITTED else \
                "on" if f.default else "off"
            o.add_argument(flag, action=argparse.BooleanOptionalAction,
                           help=f"batch sequences of similar length together (default {default})")
        else:
            default = FITTED[f.name] if fitted and f.name in FITTED else f.default
            o.add_argument(flag, type=type(f.default), help=f"{FIT_HELP[f.name]} (default "
                           f"{default})")
    return m


def add_serve_commands(sub) -> None:
    """`serve` and `viz` (run by `serve` and `viz`)."""
    s = sub.add_parser("serve", help="a local web page to generate and look inside runs",
                       description="Serve the playground: streaming generation, next-character "
                       "probabilities, hidden-unit heat maps. Needs the serve extra: pip install "
                       "starlette uvicorn.")
    s.set_defaults(run="serve.cmd_serve")
    s.add_argument("run_dirs", nargs="*", metavar="DIR", help="run directories to offer "
                   "(default: the built-in model)")
    s.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: "
                   "this machine only)")
    s.add_argument("--port", type=int, default=8000, help="port (default 8000; 0: any free one)")
    s.add_argument("--allow-host", action="append", default=[], metavar="NAME",
                   help="a name other machines reach this server by (the Host header), besides "
                   "the loopback names; repeatable; '*.example.org' allows the sub-domains (default: "
                   "loopback names only)")
    s.add_argument("--workers", type=int, default=min(4, os.cpu_count() or 1),
                   help="threads running the models (default: CPU cores, at most 4)")
    s.add_argument("--max-busy", type=int, default=32, help="generations and analyses in "
                   "progress at once; more are refused with 503 (default 32)")

    v = sub.add_parser("viz", help="write the activation and probability views as one HTML file",
                       description="Run a trained model over a text file and write a "
                       "self-contained page: hover a character for the top-5 next characters, "
                       "heat maps of hidden units, units correlated with text features.")
    v.set_defaults(run="viz.cmd_viz")
    v.add_argument("run_dir", metavar="DIR", help="run directory made by rnnkit train")
    v.add_argument("text", metavar="TEXT_FILE", help="text to run the model over")
    v.add_argument("--out", required=True, metavar="FILE", help="HTML file to write")
    v.add_argument("--max-chars", type=int, default=2000, help="read at most this many "
                   "characters of TEXT_FILE, bytes for a byte model (default 2000)")


def show_warning(message, category, filename, lineno, file=None, line=None):
    print(f"rnnkit: warning: {message}", file=sys.stderr)


# Errors of the machine rather than of rnnkit, and what to do about each
SYSTEM_LIMITS = {
    errno.ENOSPC: "free some disk space, or write elsewhere",
    errno.EDQUOT: "free some of your disk quota, or write elsewhere",
    errno.EFBIG: "the file outgrew what this system allows a file (see ulimit -f); write "
                 "elsewhere or lift the limit",
    errno.EROFS: "the file system is read-only; write elsewhere",
    errno.EACCES: "check the permissions, or write elsewhere",
    errno.EPERM: "check the permissions, or write elsewhere",
    errno.EIO: "the disk failed to read or write; check it",
}


TRAINING = {"lm_cli.cmd_train", "task_cli.cmd_classify_train", "forecast_cli.train"}


def main(argv: list[str] | None = None) -> int:
    debug = os.environ.get("RNNKIT_DEBUG", "").strip().lower() not in ("", "0", "false", "no")
    if sys.stdout is None:  # started with its output closed (`>&-`): nowhere to write
        if sys.stderr is not None:
            print("rnnkit: error: standard output is closed; send it to a file, or to "
                  "/dev/null to discard it", file=sys.stderr)
        return 2
    warnings.showwarning = show_warning
    for stream in (sys.stdout, sys.stderr):  # text the terminal's encoding lacks: shown as "?"
        if hasattr(stream, "reconfigure") and (stream.errors or "strict") == "strict":
            stream.reconfigure(errors="replace")
    with terminated_as_exception():
        return run_command(argv, debug)


class Terminated(Exception):
    """SIGTERM before a command handles it itself (training saves and stops on it)."""


@contextlib.contextmanager
def terminated_as_exception():
    """SIGTERM raises `Terminated` while the block runs (in the main thread), so that a command
    stopped before its own handling says so and cleans up as after Ctrl-C: a training stopped
    while it set up left a half-made run and exit 143 with nothing said."""
    def stop(signum, frame):
        raise Terminated

    main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, stop) if main_thread else None
    try:
        yield
    finally:
        if main_thread:
            signal.signal(signal.SIGTERM, previous)


def run_command(argv: list[str] | None, debug: bool) -> int:
    command = None
    try:
        args = build_parser().parse_args(argv)
        command = args.run
        module, function = args.run.split(".")
        return getattr(importlib.import_module(f".{module}", __package__), function)(args)
    except RnnkitError as e:
        if debug:
            raise
        print(f"rnnkit: error: {one_line(e)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("rnnkit: interrupted", file=sys.stderr)
        return 130
    except Terminated:
        print("rnnkit: terminated", file=sys.stderr)
        return 143
    except BrokenPipeError:  # the reader of stdout stopped, e.g. `rnnkit sample DIR | head`
        with contextlib.suppress(OSError, ValueError):  # Python's last flush must not fail
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        if command not in TRAINING:  # the reader had what it wanted
            return 0
        with contextlib.suppress(OSError, ValueError):  # stderr may be the same pipe
            print("rnnkit: error: the output's reader stopped (a pipe into head, say), and "
                  "training stopped with it, the checkpoints written so far kept; run the same "
                  "command again (with --resume once a checkpoint exists), its output sent to "
                  "a file", file=sys.stderr)
        return 2
    except Warning as w:  # warnings made errors (python -W error): still one line
        if debug:
            raise
        print(f"rnnkit: error: {one_line(w)}", file=sys.stderr)
        return 2
    except MemoryError:
        print("rnnkit: error: out of memory; use a smaller --hidden, --batch-size or --seq-len",
              file=sys.stderr)
        return 2
    except Exception as e:  # a bug in rnnkit: still one line, with the way to see more
        if debug:
            raise
        if isinstance(e, OSError) and e.errno in SYSTEM_LIMITS:  # the machine's: a full disk
            where = f"{e.filename}: " if e.filename else ""
            print(f"rnnkit: error: {where}{e.strerror}; {SYSTEM_LIMITS[e.errno]}", file=sys.stderr)
            return 2
        if "torch.distributed" in sys.modules and \
                importlib.import_module(".distributed", __package__).peer_stopped(e):
            print("rnnkit: error: another process of this torchrun stopped, and its own line "
                  "says why; the checkpoints written so far are kept: fix that, then run the "
                  "same command (with --resume once a checkpoint exists)", file=sys.stderr)
            return 2
        print(f"rnnkit: internal error: {type(e).__name__}: {one_line(e)} (set RNNKIT_DEBUG=1 "
              "for the traceback, and please report it)", file=sys.stderr)
        return 1


def one_line(e: BaseException) -> str:
    return " ".join(str(e).split())


if __name__ == "__main__":
    sys.exit(main())
