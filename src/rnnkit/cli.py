"""The `rnnkit` command line: train, sample and evaluate character language models.

    rnnkit train [TEXT_FILE ...] --out DIR [options]    no file: this Python's standard library
    rnnkit train TEXT_FILE ... --init-from RUN --out DIR   fine-tune RUN (or "builtin")
    rnnkit sample [DIR] [--prime TEXT] [--length N] [--temperature T] [--top-k K] [--top-p P]
                      [--repetition-penalty R] [--greedy | --beam K] [--num-samples N]
                      [--precision {fp32,bf16,int8}] [--seed S] [--verbose]
                                                     no DIR: the built-in model
    rnnkit export DIR --format onnx --out FILE       language model, classifier or forecaster
    rnnkit eval DIR [TEXT_FILE]
    rnnkit prepare TEXT_FILE ... --out DATA          then: rnnkit train DATA --out DIR

`python -m rnnkit ...` is the same. Bad input ends with one line on stderr and exit status 2;
set RNNKIT_DEBUG=1 to see a traceback instead.
"""

from __future__ import annotations

import argparse
import math
import os
import re
import sys
import tempfile
import time
import warnings
from dataclasses import fields
from pathlib import Path

from . import __version__, serve, task_cli
from .cells import CELL_TYPES
from .checkpoint import data_dir, load, read_json, read_run_config
from .config import from_dict
from .errors import RnnkitError, require_seed
from .lm import ModelConfig
from .sample import STEP_PRECISIONS
from .text import TOKENIZERS, PreparedData, Vocab, check_corpus_files, prepare
from .training import TrainConfig, evaluate, pick_device, train

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
            raise RnnkitError(f"unrecognized arguments: {' '.join(extras)} (see: "
                              f"{namespace.help_prog} --help)")
        return namespace


def duration(text: str) -> float:
    """Seconds from '90', '90s', '10m', '1.5h'."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smh]?)\s*", text)
    if not m or float(m.group(1)) <= 0:
        raise argparse.ArgumentTypeError(f"invalid duration {text!r}; write e.g. 90s, 10m or 1h")
    return float(m.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600}[m.group(2)]


def build_parser() -> Parser:
    p = Parser(prog="rnnkit", description="Recurrent neural networks on PyTorch: train character "
               "language models and generate text.")
    p.add_argument("--version", action="version", version=f"rnnkit {__version__}")
    sub = p.add_subparsers(dest="command", required=True, parser_class=Parser)

    t = sub.add_parser("train", help="train a character language model",
                       description="Train a character-level language model on text files (none: "
                       "this Python's standard-library source). The defaults reached 1.46 "
                       "nats/char on tinyshakespeare in 10 minutes on 2 CPU cores.")
    t.set_defaults(run=cmd_train)
    t.add_argument("texts", nargs="*", metavar="TEXT_FILE", help="text files to train on, or one "
                   "directory made by `rnnkit prepare`")
    t.add_argument("--out", required=True, metavar="DIR", help="run directory to write: new, "
                   "empty, or a run to --resume")
    model = t.add_argument_group("model")
    model.add_argument("--cell", choices=CELL_TYPES, help="recurrent cell (default lstm)")
    model.add_argument("--layers", type=int, help="stacked layers (default 2)")
    model.add_argument("--hidden", type=int, help="units per layer (default 384)")
    model.add_argument("--embed", type=int, help="embedding size (default: --hidden)")
    model.add_argument("--dropout", type=float, help="dropout between layers (default 0)")
    opt = t.add_argument_group("training")
    opt.add_argument("--seq-len", type=int, help=f"BPTT steps per batch (default "
                     f"{TrainConfig.seq_len})")
    opt.add_argument("--batch-size", type=int, help=f"streams per batch (default "
                     f"{TrainConfig.batch_size})")
    opt.add_argument("--lr", type=float, help=f"peak learning rate (default {TrainConfig.lr})")
    opt.add_argument("--lr-min", type=float, help="final learning rate as a fraction of --lr "
                     f"(default {TrainConfig.lr_min})")
    opt.add_argument("--warmup", type=int, help=f"warm-up steps (default {TrainConfig.warmup})")
    opt.add_argument("--weight-decay", type=float, help="AdamW weight decay (default 0)")
    opt.add_argument("--grad-clip", type=float, help="clip the gradient norm; 0 = off "
                     f"(default {TrainConfig.grad_clip})")
    opt.add_argument("--max-steps", type=int, help=f"total steps of the run (default "
                     f"{DEFAULT_STEPS}, or none with --max-time)")
    opt.add_argument("--max-time", type=duration, help="time budget of this invocation, final "
                     "evaluation included, e.g. 90s, 10m, 1h (default: none)")
    opt.add_argument("--val-fraction", type=float, help="end of the text held out "
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
    s.set_defaults(run=cmd_sample)
    s.add_argument("run_dir", metavar="DIR", nargs="?", default="builtin", help="run directory "
                   "made by rnnkit train (default: the built-in model)")
    s.add_argument("--prime", default="", help="text to start from (default: none, as after a "
                   "newline)")
    s.add_argument("--length", type=int, default=500, help="characters to generate (default 500)")
    s.add_argument("--temperature", type=float, default=1.0, help="softmax temperature "
                   "(default 1.0; lower is more conservative)")
    s.add_argument("--top-k", type=int, help="sample among the K most likely characters only "
                   "(default: all)")
    s.add_argument("--greedy", action="store_true", help="always take the most likely character")
    s.add_argument("--top-p", type=float, help="nucleus sampling: among the most likely "
                   "characters that make up this much probability, e.g. 0.9 (default: off)")
    s.add_argument("--repetition-penalty", type=float, default=1.0, help="above 1, characters "
                   "already in the text become less likely (CTRL's rule; default 1: none)")
    s.add_argument("--num-samples", type=int, help="generate N samples in one batch, printed "
                   "one after another (default 1)")
    s.add_argument("--beam", type=int, metavar="K", help="beam search of width K: the most "
                   "likely continuation found, instead of a random one (default: off)")
    s.add_argument("--precision", choices=STEP_PRECISIONS, default="fp32", help="weights while "
                   "stepping: fp32 (exact), bf16, int8 (CPU; fastest) (default fp32)")
    s.add_argument("--seed", type=int, help="fix the sampling: same seed, same text (default: "
                   "a random seed)")
    s.add_argument("--device", choices=("auto", "cpu", "cuda"), default="cpu",
                   help="where to run the model (default cpu)")
    s.add_argument("--verbose", action="store_true", help="report characters per second on stderr")

    e = sub.add_parser("eval", help="loss of a trained run on a text file or its held-out text",
                       description="Loss of a trained run, in nats and bits per character, on a "
                       "text file or on the run's held-out text.")
    e.set_defaults(run=cmd_eval)
    e.add_argument("run_dir", metavar="DIR", help="run directory made by rnnkit train, or builtin")
    e.add_argument("text", nargs="?", metavar="TEXT_FILE", help="text to evaluate on (default: "
                   "the run's held-out text)")
    e.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                   help="where to run the model (default auto: cuda when available)")
    e.add_argument("--batch-size", type=int, help="streams per batch (default: the run's)")

    r = sub.add_parser("prepare", help="encode text into a token file for training",
                       description="Encode text files, streamed, into DATA/tokens.bin and "
                       "DATA/data.json; `rnnkit train DATA` then reads it memory-mapped.")
    r.set_defaults(run=cmd_prepare)
    r.add_argument("texts", nargs="+", metavar="TEXT_FILE", help="text files to encode, in order")
    r.add_argument("--out", required=True, metavar="DATA", help="directory to write")
    r.add_argument("--tokenizer", choices=TOKENIZERS, default="char", help="char (Unicode) or "
                   "byte (default char)")
    r.add_argument("--vocab", metavar="FILE", help="use this vocab.json (or run directory's) "
                   "instead of building one from the text (default: built from the text)")

    x = sub.add_parser("export", help="write a trained run as an ONNX file",
                       description="Export a language model (one step: token and state in, "
                       "logits and state out), a classifier or a forecaster (whole sequences "
                       "in) to ONNX. Needs: pip install 'rnnkit[export]'.")
    x.set_defaults(run=cmd_export)
    x.add_argument("run_dir", metavar="DIR", help="the run directory to export")
    x.add_argument("--format", choices=("onnx",), default="onnx", help="file format (default onnx)")
    x.add_argument("--out", required=True, metavar="FILE", help="file to write, e.g. model.onnx")

    # Commands defined next to what they run: each module adds its sub-parsers here.
    task_cli.add_commands(sub)
    serve.add_commands(sub)
    return p


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
    length = train_cfg.sample_length if "sample_length" in given else TrainConfig.sample_length
    if length > 0 and summary["steps_now"] and summary["stopped"] not in ("SIGINT", "SIGTERM"):
        model = load(args.out)
        print("--- sample (temperature 0.8) ---")
        for piece in model.stream(length=length, temperature=0.8, seed=0):
            sys.stdout.write(piece)
        print("\n---")
    best = summary["best_val"]
    print(f"done: {summary['steps']} steps ({summary['steps_now']} in this invocation: "
          f"{summary['train_seconds']:.1f}s training, {summary['eval_seconds']:.1f}s evaluation, "
          f"{time.monotonic() - started:.1f}s in all); best val_loss {best:.4f} nats/char "
          f"({best / math.log(2):.3f} bpc); run directory {args.out}")
    return 130 if summary["stopped"] in ("SIGINT", "SIGTERM") else 0


def cmd_sample(args) -> int:
    if args.seed is not None:
        require_seed(args.seed)
    model = load(args.run_dir, device=pick_device(args.device))
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
        print(f"rnnkit: {n:,} characters in {seconds:.2f}s ({n / max(seconds, 1e-9):,.0f} "
              f"characters/s, {args.precision})", file=sys.stderr)
    return 0


def cmd_export(args) -> int:
    from .export import export

    shape = export(args.run_dir, args.out, args.format)
    print(f"wrote {args.out}: {shape}")
    return 0


def cmd_eval(args) -> int:
    config, _, vocab = read_run_config(args.run_dir)
    device = pick_device(args.device)
    model = load(args.run_dir, device=device)
    train_cfg = from_dict(TrainConfig, config.get("train"), "config.json train")
    batch_size = args.batch_size or train_cfg.batch_size
    seq_len = train_cfg.seq_len
    if args.text:
        with tempfile.TemporaryDirectory() as tmp:
            data = prepare(check_corpus_files([args.text]), tmp, vocab.kind, vocab=vocab,
                           skip_unknown=True)
            if data.skipped:
                warnings.warn(f"{args.text} contains {''.join(data.skipped[:20])!r}, not in the "
                              f"vocabulary of {len(vocab)} symbols; skipped", stacklevel=1)
            loss = evaluate(model, data.tokens, batch_size, seq_len, device)
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
        _, val = PreparedData.open(data_dir(Path(args.run_dir), config)).split(fraction)
        loss = evaluate(model, val, batch_size, seq_len, device)
        source = f"the held-out {fraction:.0%} of the training text ({len(val):,} tokens)"
    print(f"evaluated on {source}")
    print(f"val_loss {loss:.4f} bpc {loss / math.log(2):.4f}")
    return 0


def cmd_prepare(args) -> int:
    vocab = None
    if args.vocab:
        path = Path(args.vocab)
        vocab = Vocab.from_json(read_json(path / "vocab.json" if path.is_dir() else path,
                                          "vocabulary JSON"))
    files = check_corpus_files(args.texts)
    size = sum(f.stat().st_size for f in files)
    start = time.monotonic()
    data = prepare(files, args.out, vocab.kind if vocab else args.tokenizer, vocab=vocab)
    seconds = time.monotonic() - start
    print(f"prepared {len(data.tokens):,} tokens ({data.vocab.kind} vocabulary of "
          f"{len(data.vocab)}) from {len(files)} file(s), {size / 1e6:,.1f} MB in {seconds:.1f}s "
          f"({size / 1e6 / max(seconds, 1e-9):,.1f} MB/s), into {args.out}")
    return 0


def show_warning(message, category, filename, lineno, file=None, line=None):
    print(f"rnnkit: warning: {message}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    debug = bool(os.environ.get("RNNKIT_DEBUG"))
    warnings.showwarning = show_warning
    try:
        args = build_parser().parse_args(argv)
        return args.run(args)
    except RnnkitError as e:
        if debug:
            raise
        print(f"rnnkit: error: {one_line(e)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("rnnkit: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # e.g. `rnnkit sample DIR | head`
        sys.stderr.close()
        return 0
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
        print(f"rnnkit: internal error: {type(e).__name__}: {one_line(e)} (set RNNKIT_DEBUG=1 "
              "for the traceback, and please report it)", file=sys.stderr)
        return 1


def one_line(e: BaseException) -> str:
    return " ".join(str(e).split())


if __name__ == "__main__":
    sys.exit(main())
