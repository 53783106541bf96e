"""What `rnnkit train`, `sample`, `eval`, `prepare` and `export` do, once `cli` has read their
arguments: the character language model's commands.
"""

from __future__ import annotations

import contextlib
import math
import sys
import tempfile
import time
import warnings
from dataclasses import fields
from pathlib import Path

from . import builtin, native
from .checkpoint import load, read_json, read_run_config, read_vocab
from .config import from_dict
from .configs import MAX_STRING
from .errors import RnnkitError, require_seed
from .export import export
from .lm import ModelConfig
from .runfiles import is_temp_name, remove_temp_files, writer
from .text import check_corpus_files, prepare, skipped_words
from .training import TrainConfig, loss_words, open_run_data, pick_device, text_loss, train


def configs_from_args(args) -> tuple[ModelConfig, TrainConfig, set[str]]:
    """Map flags onto the config dataclasses; `given` are the options set on the command line."""
    values = {k: v for k, v in vars(args).items() if v is not None}
    model_keys = {f.name for f in fields(ModelConfig)}
    train_keys = {f.name for f in fields(TrainConfig)}
    given = (set(values) & (model_keys | train_keys))
    train_values = {k: values[k] for k in given & train_keys}
    if "max_time" in train_values and "max_steps" not in train_values:
        train_values["max_steps"] = 0  # a time budget alone: train until it runs out
    model_cfg = from_dict(ModelConfig, {k: values[k] for k in given & model_keys}, "options")
    train_cfg = from_dict(TrainConfig, train_values, "options")
    return model_cfg, train_cfg, given


def cmd_train(args) -> int:
    started = time.monotonic()
    model_cfg, train_cfg, given = configs_from_args(args)
    summary = train(args.texts, args.out, model_cfg, train_cfg, resume=args.resume, given=given)
    if summary.get("rank", 0):
        return 0
    if "sample_length" in given or not args.resume:
        length = train_cfg.sample_length
    else:  # the run's own setting, as the rest of a resumed run's options
        saved = read_json(Path(args.out) / "config.json", "JSON").get("train", {})
        length = saved.get("sample_length", TrainConfig.sample_length)
    if length > 0 and summary["steps_now"] and summary["stopped"] not in ("SIGINT", "SIGTERM"):
        model = load(args.out)
        print("--- sample (temperature 0.8) ---")
        for piece in model.stream(length=length, temperature=0.8, seed=0):
            sys.stdout.write(piece)
        print("\n---")
    best = summary["best_val"]
    which = "val_loss" if summary.get("held_out", True) else "train_loss (no text held out)"
    loss = f"best {which} {loss_words(best, summary.get('unit', 'chars'))}" \
        if math.isfinite(best) else "no evaluation yet"
    print(f"done: {summary['steps']} steps ({summary['steps_now']} in this invocation: "
          f"{summary['train_seconds']:.1f}s training, {summary['eval_seconds']:.1f}s evaluation, "
          f"{time.monotonic() - started:.1f}s in all); {loss}; run directory {args.out}")
    return 130 if summary["stopped"] in ("SIGINT", "SIGTERM") else 0


def cmd_sample(args) -> int:
    if args.seed is not None:
        require_seed(args.seed)
    if args.num_samples == 1:  # one sample streams, as without the option
        args.num_samples = None
    if args.num_samples is not None and args.length * args.num_samples > MAX_STRING:
        # each of N samples is printed whole once all are done: they are held in memory
        raise RnnkitError(f"--length {args.length:,} x --num-samples {args.num_samples} is more "
                          f"than the {MAX_STRING:,} characters that are held to print them; "
                          "lower either, or stream one sample (no --num-samples)")
    model = load(args.run_dir or builtin.location(), device=pick_device(args.device))
    start = time.perf_counter()
    pieces = model.stream(args.prime, args.length, args.temperature, args.top_k, args.greedy,
                          args.seed, top_p=args.top_p, repetition_penalty=args.repetition_penalty,
                          num_samples=args.num_samples, beam=args.beam,
                          precision=args.precision)  # checks the options before anything is printed
    if args.num_samples is None:
        sys.stdout.write(args.prime)
        for piece in pieces:
            sys.stdout.write(piece)
            sys.stdout.flush()
        sys.stdout.write("\n")
    else:  # N streams in one batch: each printed whole once all are done
        texts = ["".join(row) for row in zip(*pieces, strict=True)] or [""] * args.num_samples
        for i, text in enumerate(texts, start=1):
            print(f"--- sample {i} of {len(texts)} ---\n{args.prime}{text}")
    if args.verbose:
        seconds = time.perf_counter() - start
        n = args.length * (args.num_samples or 1)
        unit = "bytes" if model.vocab.kind == "byte" else "characters"  # what --length counts
        how = args.precision
        if how != "fp32" and args.num_samples is None and args.beam is None:  # one stream
            reason = native.why_not()  # where native.c would have stepped it
            how += f"; torch operations alone: {reason}" if reason else ""
        print(f"rnnkit: {n:,} {unit} in {seconds:.2f}s ({n / max(seconds, 1e-9):,.0f} "
              f"{unit}/s, {how})", file=sys.stderr)
    return 0


def cmd_export(args) -> int:
    shape = export(args.run_dir, args.out, args.format)
    print(f"wrote {args.out}: {shape}")
    return 0


def cmd_eval(args) -> int:
    config, _, vocab = read_run_config(args.run_dir)
    device = pick_device(args.device)
    model = load(args.run_dir, device=device)
    train_cfg = from_dict(TrainConfig, config.get("train"),
                          f"{Path(args.run_dir) / 'config.json'} train", in_file=True)
    if args.batch_size is not None and args.batch_size < 1:
        raise RnnkitError(f"--batch-size must be at least 1, got {args.batch_size}")
    batch_size = args.batch_size or train_cfg.batch_size
    seq_len = train_cfg.seq_len
    if args.text:
        with tempfile.TemporaryDirectory() as tmp:
            data = prepare(check_corpus_files([args.text]), tmp, vocab.kind, vocab=vocab,
                           skip_unknown=True)
            if data.skipped:
                warnings.warn(skipped_words(args.text, data.skipped, vocab), stacklevel=1)
            loss = text_loss(model, data.tokens, batch_size, seq_len, device)
            del data
        source = args.text
    elif "data" not in config:  # the built-in model ships without its corpus
        raise RnnkitError(f"{args.run_dir} comes without its training text; give a TEXT_FILE "
                          "to evaluate on")
    else:
        fraction = train_cfg.val_fraction
        if not fraction:
            raise RnnkitError(f"{args.run_dir} was trained with no held-out text "
                              "(--val-fraction 0); give a TEXT_FILE to evaluate on")
        _, val = open_run_data(Path(args.run_dir), config).split(fraction)
        loss = text_loss(model, val, batch_size, seq_len, device)
        source = f"the held-out {fraction:.0%} of the training text ({len(val):,} tokens)"
    print(f"evaluated on {source}")
    print(f"val_loss {loss:.4f} bpc {loss / math.log(2):.4f}")
    return 0


def cmd_prepare(args) -> int:
    vocab = None
    if args.vocab:
        path = builtin.resolve(args.vocab)  # a run directory, its vocab.json, or "builtin"
        vocab = read_vocab(path / "vocab.json" if path.is_dir() else path,
                           "give --vocab a run directory or its vocab.json")
        if args.tokenizer and args.tokenizer != vocab.kind:
            raise RnnkitError(f"--tokenizer {args.tokenizer} differs from the {vocab.kind} "
                              f"vocabulary of --vocab {args.vocab}; drop --tokenizer, or "
                              "--vocab to build a vocabulary from the text")
    files = check_corpus_files(args.texts)
    out = Path(args.out)
    if out.is_dir():
        remove_temp_files(out, keep_writers=True)  # what an interrupted prepare left there
        busy = [w for w in map(writer, filter(is_temp_name, (e.name for e in out.iterdir()))) if w]
        if busy:
            raise RnnkitError(f"another rnnkit process (pid {busy[0]}) is preparing data into "
                              f"{out}; wait for it to finish, or prepare into another folder")
        if any(out.iterdir()):  # runs trained on a DATA folder read it as it was
            raise RnnkitError(f"{out} is not empty; prepare into a new or empty folder (a run "
                              "trained on prepared data reads that folder, so it is never "
                              "rewritten)")
    size = sum(f.stat().st_size for f in files)
    start = time.monotonic()
    made = not out.exists()
    try:
        data = prepare(files, out, vocab.kind if vocab else args.tokenizer or "char", vocab=vocab)
    except BaseException:  # nothing half-written left behind: the folder, if made here, goes
        if made:
            with contextlib.suppress(OSError):
                out.rmdir()  # (only if empty: the token file is written aside, then moved in)
        raise
    seconds = time.monotonic() - start
    print(f"prepared {len(data.tokens):,} tokens ({data.vocab.kind} vocabulary of "
          f"{len(data.vocab)}) from {len(files)} file(s), {size / 1e6:,.1f} MB in {seconds:.1f}s "
          f"({size / 1e6 / max(seconds, 1e-9):,.1f} MB/s), into {args.out}")
    return 0
