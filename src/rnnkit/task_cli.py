"""`rnnkit classify`: sequence classification commands, and what the forecast commands
(`rnnkit.forecast_cli`) share with them.

    rnnkit classify train DATA --out DIR [--test PATH | --test-pattern REGEX] [options]
    rnnkit classify predict DIR FILE...

DATA is a folder of audio files (labels from sub-folders or --label-pattern), a CSV (rows of
sequences grouped by an id column, with a label column) or an .npz (x, lengths, y). Training
prints one line per epoch (its seconds and the time left), then the test accuracy and the
confusion matrix (also DIR/confusion.png), a `done:` line saying how the time was spent, and
last `test_accuracy <fraction>`. --max-time is the whole command's budget. With --ensemble N
(by default, with --max-time, as many as the budget affords) N classifiers train one after the
other (where sequences differ in length, each reading them at its own time scale:
`member_scales`), and the run averages their probabilities (`tasks.Ensemble`). Sequences of
different lengths are read padded to the longest training one at the training mean
(`SequenceConfig.pad_to`), unless that would read more than PAD_COST times their steps. The
predict commands print what `rnnkit.load(DIR).predict(...)` returns (`rnnkit.runs`), and the
tests after training go through the same objects. Their options are defined in `cli`, with
every other command's.
"""

from __future__ import annotations

import math
import re
import time
from collections import Counter
from dataclasses import asdict, fields, replace
from pathlib import Path

import numpy as np
import torch

from . import distributed
from .audio import AudioConfig, compile_pattern
from .checkpoint import BEST, load_weights, read_json, write_safetensors
from .config import from_dict
from .configs import MAX_MEMBERS, FitConfig, check_val_fraction
from .devices import pick_device
from .errors import RnnkitError
from .fitting import EVAL_SHARE, accuracy, fit, step_seconds
from .optional import need
from .plots import plot_confusion
from .runfiles import remove_temp_files, write_json_atomic
from .runs import Classifier, load
from .task_runs import (
    FEATURES,
    MEMBERS,
    check_features,
    examples_digest,
    read_examples,
    read_format,
    resumed_config,
    to_dataset,
    training_run,
    write_config,
)
from .tasks import Ensemble, SequenceConfig, SequenceModel

CLASSIFIER, FORECASTER = "rnnkit-classifier", "rnnkit-forecaster"  # their run formats


def fit_config(args) -> tuple[FitConfig, set[str]]:
    """The training options, and the names of those given on the command line."""
    values = {f.name: getattr(args, f.name) for f in fields(FitConfig)
              if getattr(args, f.name) is not None}
    return from_dict(FitConfig, values, "options"), set(values)


def model_config(args, input_size: int, output_size: int, head: str, conv: int = 0,
                 downsample: int = 1, pad_to: int = 0) -> SequenceConfig:
    return SequenceConfig(input_size, output_size, head, args.cell, args.hidden, args.layers,
                          args.dropout, args.bidirectional, args.pool, conv=conv,
                          downsample=downsample, pad_to=pad_to)


def check_model_options(args, head: str) -> None:
    """The model's options judged before any data is read (reading the spoken digits takes
    minutes): the checks of a model of these options, on sizes of 1 that the data replaces."""
    pad_to, downsample = getattr(args, "pad_to", None), getattr(args, "downsample", None)
    if pad_to is not None and pad_to < 0:
        raise RnnkitError(f"--pad-to must be 0 (the padding is not read) or a length, got "
                          f"{pad_to}")
    if downsample is not None and downsample < 1:
        raise RnnkitError(f"--downsample must be at least 1 (1: every step), got {downsample}")
    ensemble = getattr(args, "ensemble", None)
    if ensemble is not None and not 1 <= ensemble <= MAX_MEMBERS:
        raise RnnkitError(f"--ensemble must be 1 to {MAX_MEMBERS}, got {ensemble}")
    conv = getattr(args, "conv", None)
    model_config(args, 1, 1, head, CONV_WIDTH if conv is None else conv, downsample or 1,
                 pad_to or 0)


# Defaults a classifier's run fits to its data (set only where the command line leaves them).
CONV_WIDTH = 128  # the LSTM-FCN branch (Karim et al.: 128, 256, 128 channels)
STEPS = 1000  # without --max-time, the epochs default to about this many optimizer steps,
EPOCHS = (30, 1000)  # within these bounds
# An ensemble (`--ensemble`): with --max-time, as many members as the budget gives STEPS steps
AUTO_MEMBERS = 5  # at most this many
MIN_BLOCK_STEPS = 16  # an ensemble's coarsest member reads at least this many steps of the
#                      median training sequence
PROBE_STEPS = 5  # optimizer steps timed to see how many steps the budget holds
PAD_COST = 8  # sequences of different lengths are read padded to the longest unless that reads
#               more than this many times their real steps (a few very long ones)
MEMBER_DONE = "member.json"  # in a member's folder once its training ended: its summary


def fitted_defaults(fit_cfg: FitConfig, given: set[str], n_train: int, padded: bool,
                    ) -> FitConfig:
    """The training options a classifier takes from its training set where they were not
    given: a batch of about an eighth of the set (16 to 64 examples), so that tens of sequences
    still make several steps an epoch; with --max-time, epochs until the time is up (the
    schedule fitted to it), else about STEPS steps; and where sequences of different lengths
    are all read `padded` to one length, batches drawn without regard to length (grouping them
    by length saves no steps then, and where length goes with the class it makes batches of a
    few classes)."""
    values = asdict(fit_cfg)
    if padded and "bucket" not in given:
        values["bucket"] = False
    if "batch_size" not in given:
        values["batch_size"] = min(64, max(16, n_train // 8))
    if "epochs" not in given:
        per_epoch = math.ceil(n_train / values["batch_size"])
        values["epochs"] = 0 if fit_cfg.max_time else \
            min(EPOCHS[1], max(EPOCHS[0], math.ceil(STEPS / per_epoch)))
    return FitConfig(**values)


def member_scales(lengths: list[int], members: int) -> list[int]:
    """Without --downsample, an ensemble's members read sequences of different lengths at
    different time scales (`SequenceConfig.scales`): every step (1), then blocks of the most
    steps, a power of 2, that leave the median training sequence (of `lengths`, as the model
    reads them) MIN_BLOCK_STEPS steps or more, then each smaller power of 2 in turn, round
    again: 1, 8, 4, 2, 1 for five members on 136 steps. Short sequences and one model read
    every step (an empty list)."""
    top, median = 1, float(np.median(lengths))
    while median / (2 * top) >= MIN_BLOCK_STEPS:
        top *= 2
    ladder = [1] + [top >> j for j in range(top.bit_length() - 1)]  # 1, top, top / 2, ..., 2
    return [ladder[k % len(ladder)] for k in range(members)] if members > 1 < top else []


def audio_config(args) -> AudioConfig:
    values = {k: getattr(args, k) for k in ("sample_rate", "n_mfcc", "n_fft", "hop_length",
                                            "n_mels") if getattr(args, k) is not None}
    return AudioConfig(features=args.features, deltas=args.deltas, **values)


def refuse_inapplicable(args, source: str) -> None:
    """An input option that the data cannot use is refused, not saved with the run to be used
    on other data at prediction: audio options on a CSV, CSV columns on audio, MFCC settings
    with raw samples."""
    given = {"--label-pattern": args.label_pattern is not None,
             "--features": args.features != "mfcc", "--deltas": args.deltas,
             **{f"--{k.replace('_', '-')}": getattr(args, k) is not None
                for k in ("sample_rate", "n_mfcc", "n_fft", "hop_length", "n_mels")},
             "--columns": args.columns is not None, "--id-column": args.id_column != "id",
             "--label-column": args.label_column != "label"}
    audio = {"--label-pattern", "--features", "--deltas", "--sample-rate", "--n-mfcc", "--n-fft",
             "--hop-length", "--n-mels"}
    needs = {**dict.fromkeys(audio, ("audio", "an audio folder")),
             **dict.fromkeys(("--columns", "--id-column", "--label-column"), ("csv", "a CSV file"))}
    kind = "an audio folder" if source == "audio" else f"a .{source} file"
    for option, (wanted, what) in needs.items():
        if given[option] and source != wanted:
            raise RnnkitError(f"{option} applies to {what}, and {args.data} is {kind}; leave it "
                              "out")
    if source == "audio" and args.features == "raw":
        for option in ("--deltas", "--n-mfcc", "--n-fft", "--hop-length", "--n-mels"):
            if given[option]:
                raise RnnkitError(f"{option} applies to MFCC features, not to --features raw "
                                  "(raw samples); leave it out")


# --- classification ---------------------------------------------------------------------------

def held_out(n: int, fraction: float, classes: int) -> int:
    """How many of n examples a stratified split holds out: the fraction, and at least one of
    every class."""
    return max(round(fraction * n), classes)


def stratified(labels: list[int], fraction: float, seed: int, what: str) -> tuple[list, list]:
    """Indices of a stratified split: (kept, held out)."""
    train_test_split = need("sklearn.model_selection", "tasks").train_test_split
    index = np.arange(len(labels))
    counts = Counter(labels)
    held = held_out(len(labels), fraction, len(counts))
    option = "--test-fraction" if what == "test" else "--val-fraction"
    if min(counts.values()) < 2:
        fix = "give --test PATH or --test-pattern REGEX" if what == "test" else \
            "give --val-fraction 0 (no validation part)"
        raise RnnkitError(f"a stratified {what} split holds out an example of every class and "
                          f"needs another to train on; the rarest class has "
                          f"{min(counts.values())}; {fix}")
    if held >= len(labels):
        raise RnnkitError(f"{option} {fraction} holds out {held} of {len(labels)} examples and "
                          "leaves none to train on; lower it")
    keep, out = train_test_split(index, test_size=held, stratify=labels, random_state=seed)
    return sorted(keep.tolist()), sorted(out.tolist())


def cmd_classify_train(args) -> int:
    started = time.monotonic()  # --max-time is this command's budget, reading data included
    out = Path(args.out)
    fit_cfg, given = fit_config(args)
    # Imported now, not after training: its import time stays out of the budget's test share,
    # and a missing matplotlib fails before any work.
    need("matplotlib.figure", "tasks")
    if not 0.0 <= args.test_fraction < 1.0 or not (args.test_fraction or args.test
                                                   or args.test_pattern):
        raise RnnkitError(f"--test-fraction must be above 0 and below 1 (a test part is always "
                          f"held out; --test PATH gives your own), got {args.test_fraction}")
    check_val_fraction(args.val_fraction)
    if args.test and args.test_pattern:
        raise RnnkitError("give --test PATH or --test-pattern REGEX, not both")
    if args.label_pattern:
        compile_pattern(args.label_pattern, "--label-pattern")
    check_model_options(args, "classify")
    main = distributed.launched_rank() == 0  # under torchrun, rank 0 alone writes and reports
    with training_run(out, CLASSIFIER, args.resume, main) as resuming:
        return classify_train(args, fit_cfg, given, resuming, main, started)


def classify_train(args, fit_cfg: FitConfig, given: set[str], resuming: bool, main: bool,
                   started: float) -> int:
    """`rnnkit classify train`, in its run directory held by `training_run`."""
    out = Path(args.out)
    say = print if main else (lambda *a, **k: None)
    if not Path(args.data).exists():  # before any option is judged by what the data would be
        raise RnnkitError(f"{args.data}: no such file or folder")
    data: dict = {"source": "audio" if Path(args.data).is_dir() else
                  Path(args.data).suffix[1:].lower(),
                  "label_pattern": args.label_pattern, "columns": args.columns,
                  "id_column": args.id_column, "label_column": args.label_column}
    refuse_inapplicable(args, data["source"])
    if data["source"] == "audio":
        data["audio"] = asdict(audio_config(args))
    cache = out / FEATURES
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
    data["digest"] = examples_digest(seqs, labels, test_seqs, test_labels)
    classes = sorted(set(labels), key=lambda label: (natural_key(label), label))  # "01", "1"
    if len(classes) < 2:
        left = f" left for training by {how}" if args.test_pattern else ""
        raise RnnkitError(f"{args.data}: every example{left} has the label {classes[0]!r}; a "
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
    n_val = held_out(len(seqs), args.val_fraction, len(classes)) if args.val_fraction else 0
    say(f"data: {len(seqs) - n_val} train / {n_val} validation / {len(test_seqs)} test "
        f"examples, {len(classes)} classes, {seqs[0].shape[1]} features per step; test from "
        f"{how}")

    F = seqs[0].shape[1]
    lengths = [len(q) for q in seqs]
    ragged = min(lengths) < max(lengths)
    cost = max(lengths) * len(lengths) / sum(lengths)  # steps read padded / real steps
    pad_to = args.pad_to if args.pad_to is not None else \
        max(lengths) if ragged and cost <= PAD_COST else 0
    if ragged and args.pad_to is None and not pad_to:
        say(f"sequences of {min(lengths)} to {max(lengths)} steps: the padding is not read "
            f"(padded to the longest they would be {cost:.1f} times their steps; --pad-to N "
            "reads them padded to N)")
    fit_cfg = fitted_defaults(fit_cfg, given, len(seqs) - n_val,
                              padded=ragged and pad_to >= max(lengths))
    conv = CONV_WIDTH if args.conv is None else args.conv
    one = model_config(args, F, len(classes), "classify", conv, args.downsample or 1, pad_to)
    data["labels"] = classes
    # Members at several time scales for sequences of different lengths; sequences of one length
    # are read at every step by every member (README, "Classification against the field")
    ladder = member_scales([max(n, pad_to) for n in lengths], MAX_MEMBERS) \
        if args.downsample is None and ragged else []
    members, why, scales, paces = ensemble_size(args, one, fit_cfg, to_dataset(seqs, y),
                                                started, resuming, out, ladder)
    config = replace(one, members=members, scales=scales)
    chosen = {"members": members, "why": why}  # how the first call chose; metrics.json's
    if resuming:
        fit_cfg = resumed_config(out, CLASSIFIER, config, fit_cfg, given, data)
        chosen = read_format(out, CLASSIFIER)[1].get("ensemble") or chosen
    elif main:
        write_config(out, CLASSIFIER, config, fit_cfg, data, chosen)
    n_params = sum(p.numel() for p in SequenceModel(one).parameters())
    say(f"model: {one.layers} x {one.hidden} {one.cell}"
        f"{' bidirectional' if one.bidirectional else ''}, pool {one.pool}"
        f"{f', convolutional branch {one.conv}' if one.conv else ''}"
        f"{f', reading means of {one.downsample} steps' if one.downsample > 1 else ''}"
        f"{f', shorter sequences padded to {pad_to} steps at the training mean' if pad_to else ''}, "
        f"{n_params:,} parameters{f' x {members} members' if members > 1 else ''}; batch "
        f"{fit_cfg.batch_size}, "
        f"{f'{fit_cfg.epochs} epochs' if fit_cfg.epochs else 'epochs until the time is up'}")
    if members > 1:
        say(f"ensemble: {members} members, {why}"
            f"{'; the means of blocks of ' + ', '.join(map(str, scales)) + ' steps' if scales else ''}")
    elif fit_cfg.max_time:  # the budget chose one model: said as the choice of more is
        say(f"ensemble: 1 model, {why}")
    fitted = time.monotonic()
    # Under torchrun the members train in one process group, joined once for all of them.
    world, _ = distributed.setup(fit_cfg.device) if members > 1 else (None, None)
    try:
        trained, summaries = train_members(args, seqs, y, fit_cfg, config, resuming, main,
                                           len(test_seqs), started, say, paces)
    finally:
        if world is not None:
            distributed.teardown(world)
    stopped = 130 if summaries[-1]["stopped"] in ("SIGINT", "SIGTERM") else 0
    if not main or (stopped and members > 1):  # an ensemble stopped midway has no test
        return stopped
    if members > 1:
        model = Ensemble(config)
        for member, weights in zip(model.members, trained, strict=True):
            member.load_state_dict(weights.state_dict())
        write_safetensors(out / BEST, model.state_dict())
    else:
        model = trained[0]
    tested = time.monotonic()
    predicted = Classifier(model, data).predict(test_seqs).probs.argmax(-1)  # (N,)
    truth = np.array([index[c] for c in test_labels])
    test_acc = float((predicted == truth).mean())
    matrix = confusion(truth, predicted, len(classes))
    print_confusion(matrix, classes)
    plot_confusion(matrix, classes, out / "confusion.png")
    write_json_atomic(out / "metrics.json", {
        "test_accuracy": test_acc, "test_examples": len(test_seqs), "confusion": matrix.tolist(),
        "labels": classes, "ensemble": chosen, "members": [
            {"seed": fit_cfg.seed + k, "epochs": s["epochs"], "evaluations": len(s["history"]),
             "best_epoch": s["best_epoch"],
             "best_val_accuracy": s["best"], "seconds": s["seconds"],
             "train_seconds": s["train_seconds"], "eval_seconds": s["eval_seconds"],
             "history": s["history"]} for k, s in enumerate(summaries)]})
    print(done(summaries, fit_cfg, fitted - started, time.monotonic() - tested, out))
    print(f"test_accuracy {test_acc:.4f}")
    return stopped


def train_members(args, seqs: list[np.ndarray], y: list[int], fit_cfg: FitConfig,
                  config: SequenceConfig, resuming: bool, main: bool, n_test: int,
                  started: float, say, paces: list[float] | None = None,
                  ) -> tuple[list[SequenceModel], list[dict]]:
    """Train the members one by one, member k from seed --seed + k at its own scale, each with
    a share of what is left of the budget: in proportion to its measured seconds a step
    (`paces`, from `ensemble_size`), so that each makes about as many steps, else an equal
    share; stops after a member that SIGINT or SIGTERM stopped."""
    trained, summaries, members = [], [], config.members
    # What a short sequence is padded with (`pad_to`): one value for the run, taken before each
    # member draws its own validation part.
    pad = torch.from_numpy(np.concatenate(seqs).mean(0)) if config.pad_to else None
    for k in range(members):
        cfg_k = replace(fit_cfg, seed=fit_cfg.seed + k)  # its own weights, validation, order
        if members > 1 and fit_cfg.max_time:  # its share of what is left
            left = fit_cfg.max_time - (time.monotonic() - started)
            share = paces[k] / sum(paces[k:members]) if paces else 1 / (members - k)
            cfg_k = replace(cfg_k, max_time=max(left, 1e-3) * share)
        member = config.member(k)
        if members > 1:
            scale = "" if not config.scales else ", every step" if member.downsample == 1 else \
                f", means of {member.downsample} steps"
            say(f"member {k + 1} of {members} (seed {cfg_k.seed}{scale})")
        model, summary = train_member(
            seqs, y, args.val_fraction, cfg_k, member, pad,
            Path(args.out) / MEMBERS / str(k) if members > 1 else Path(args.out), members > 1,
            resuming, main, test_rows=n_test * members * (k + 1 == members),
            started=None if members > 1 and fit_cfg.max_time else started)
        trained.append(model)
        summaries.append(summary)
        if members > 1 and summary["stopped"] in ("SIGINT", "SIGTERM"):
            say(f"stopped by {summary['stopped']} in member {k + 1} of {members}; the same "
                "command plus --resume continues it")
            break
    return trained, summaries


def train_member(seqs: list[np.ndarray], y: list[int], val_fraction: float, cfg: FitConfig,
                 config: SequenceConfig, pad: torch.Tensor | None, run_dir: Path, member: bool,
                 resuming: bool, main: bool, test_rows: int, started: float | None,
                 ) -> tuple[SequenceModel, dict]:
    """Train one classifier on `seqs` less a stratified validation part drawn with its seed
    (the weights are drawn from it too, so that --seed repeats the run), checkpoints in
    `run_dir`; short sequences padded with `pad` (`pad_to`). An ensemble's `member` whose
    training ended before is read back, not trained."""
    if member and (run_dir / MEMBER_DONE).exists():
        summary = read_json(run_dir / MEMBER_DONE, "JSON")
        # finished before fit's summary gave its epochs: the last evaluation's, at the end
        summary.setdefault("epochs", summary["history"][-1]["epoch"] if summary["history"] else 0)
        return load_weights(run_dir / BEST, lambda: SequenceModel(config)), summary
    if member and main:
        run_dir.mkdir(parents=True, exist_ok=True)
        remove_temp_files(run_dir)  # the run lock is held (`training_run`)
    val_seqs, val_y = [], []
    if val_fraction:
        keep, held = stratified(y, val_fraction, cfg.seed, "validation")
        val_seqs, val_y = [seqs[i] for i in held], [y[i] for i in held]
        seqs, y = [seqs[i] for i in keep], [y[i] for i in keep]
    torch.manual_seed(cfg.seed)
    model = SequenceModel(config)
    frames = np.concatenate(seqs)  # (sum of T, F)
    model.set_standardization(torch.from_numpy(frames.mean(0)), torch.from_numpy(frames.std(0)),
                              pad)
    val = to_dataset(val_seqs, val_y) if val_seqs else None
    summary = fit(model, to_dataset(seqs, y), val, cfg, run_dir, metric=accuracy,
                  started=started, test_rows=test_rows, resume=resuming)
    if member and main and summary["stopped"] not in ("SIGINT", "SIGTERM"):
        write_json_atomic(run_dir / MEMBER_DONE, summary)
    return model, summary


def ensemble_size(args, config: SequenceConfig, cfg: FitConfig, train: dict, started: float,
                  resuming: bool, out: Path, ladder: list[int],
                  ) -> tuple[int, str, list[int], list[float] | None]:
    """How many classifiers to train (`--ensemble`), why, the scales they read (the first of
    `ladder`; [] for one model) and each one's seconds a step where they were measured: the
    number given; a resumed run's own; else, with --max-time and one process, as many (at most
    AUTO_MEMBERS) as the budget affords each the STEPS optimizer steps a run without one takes;
    else 1. The pace of each scale of `ladder` (`member_scales`; a coarser member steps faster)
    is PROBE_STEPS steps timed on a copy of the model, wherever members of several scales share
    a budget in one process (`train_members` shares it by pace)."""
    one_process, paces = distributed.launched_size() == 1, None
    if args.ensemble is not None:  # in 1..MAX_MEMBERS (`check_model_options`)
        members, why = args.ensemble, "given by --ensemble"
    elif resuming:
        _, saved = read_format(out, CLASSIFIER)
        members, why = (saved.get("model") or {}).get("members", 1), "the resumed run's"
        # the run's own budget where none is given now (`resumed_config` keeps it)
        cfg = replace(cfg, max_time=cfg.max_time or (saved.get("fit") or {}).get("max_time") or 0.0)
    elif not cfg.max_time or not one_process:
        return 1, "no --max-time to share" if not cfg.max_time else "under torchrun", [], None
    elif cfg.max_time <= time.monotonic() - started:  # spent already: training refuses it
        return 1, "the --max-time budget is spent", [], None
    else:
        probed = ladder[:AUTO_MEMBERS] or [config.downsample] * AUTO_MEMBERS
        pace = paces_of(config, cfg, train, probed)
        left = cfg.max_time - (time.monotonic() - started)
        members = affordable([pace[k] for k in probed], left * (1 - EVAL_SHARE))
        paces = [pace[k] for k in probed[:members]]
        why = (f"as many as {left:.0f}s affords each {STEPS} steps at "
               f"{', '.join(f'{p * 1e3:.0f}' for p in paces)} ms a step (at most {AUTO_MEMBERS})")
    scales = ladder[:members] if members > 1 else []
    if paces is None and cfg.max_time and one_process and len(set(scales)) > 1:
        pace = paces_of(config, cfg, train, scales)
        paces = [pace[k] for k in scales]
        why += f", the budget shared at {', '.join(f'{p * 1e3:.0f}' for p in paces)} ms a step"
    return members, why, scales, paces


def paces_of(config: SequenceConfig, cfg: FitConfig, train: dict, scales: list[int],
             ) -> dict[int, float]:
    """Seconds an optimizer step takes at each of `scales` (PROBE_STEPS timed on a new model)."""
    return {k: step_seconds(SequenceModel(replace(config, downsample=k)), train, cfg,
                            PROBE_STEPS) for k in sorted(set(scales))}


def affordable(paces: list[float], seconds: float) -> int:
    """How many members, taken in order (at least one), can each make STEPS steps at their
    seconds a step (`paces`) in `seconds`."""
    members = 1
    while members < len(paces) and STEPS * sum(paces[:members + 1]) <= seconds:
        members += 1
    return members


def done(summaries: list[dict], cfg: FitConfig, reading: float, testing: float,
         out: Path) -> str:
    """The line that ends training: the epochs (and whether the time budget cut them short) and
    how the command's time was spent; an ensemble's sums over its members."""
    first = summaries[0]
    epochs = "+".join(str(s["epochs"]) for s in summaries)
    evals = "+".join(str(len(s["history"])) for s in summaries)
    if first["stopped"] == "time" and not cfg.epochs:
        what = f"{epochs} epochs (until the --max-time budget of {cfg.max_time:g}s)"
    elif first["stopped"] == "time":
        what = (f"{epochs} of {cfg.epochs} planned epochs (the --max-time budget of "
                f"{cfg.max_time:g}s cut them short)")
    elif first["stopped"]:
        what = f"{epochs} of {cfg.epochs} planned epochs (stopped by {first['stopped']})"
    else:
        what = f"{epochs} epoch{'' if epochs == '1' else 's'}"
    if evals != epochs:  # evaluated every few epochs (`fitting.MAX_EVALS`)
        what += f", {evals} evaluations"
    if len(summaries) > 1:
        what += f" in {len(summaries)} members"
    seconds = {k: sum(s[k] for s in summaries) for k in ("seconds", "train_seconds",
                                                          "eval_seconds")}
    best = ", ".join(str(s["best_epoch"]) for s in summaries)
    total = reading + seconds["seconds"] + testing
    return (f"done: {what} in {total:.1f}s: {reading:.1f}s reading data, "
            f"{seconds['train_seconds']:.1f}s training, {seconds['eval_seconds']:.1f}s "
            f"validating and saving, {testing:.1f}s testing; best epoch{'s' * (len(summaries) > 1)} "
            f"{best}; run directory {out}")


def natural_key(label: str) -> tuple:
    """Class names in the order people expect: numbers by their value (-1 before 1, which the
    digits alone put after it), before names in natural order (digit runs as numbers)."""
    try:
        value = float(label)
    except ValueError:
        value = math.nan
    if math.isfinite(value):
        return (0, value, [])
    return (1, 0.0, [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", label)])


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
