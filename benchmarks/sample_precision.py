"""Precision of stepping: tinyshakespeare validation loss through the stepper at each precision.

    python benchmarks/sample_precision.py [--minutes 5] [--keep DIR | --run DIR]

Trains a 2 x 512 LSTM on tinyshakespeare (RNNKIT_DATA) for a few minutes with rnnkit's training
defaults on one thread (`--keep DIR` keeps the run, and trains a kept run further; `--run DIR`
measures a trained run as it is), then feeds held-out text (the run's validation split, the
last 10% of the corpus) through `Stepper` one character at a time, 64 streams side by side, at
each precision (fp32, bf16, int8, int4), and reports the mean next-character loss in nats. The
fused forward pass over the same characters is the reference that fp32 stepping must equal.
The first ALONE streams are also stepped one at a time ("_alone"), as one sample is: one row
takes int8's and int4's weight-only kernels and, at bf16, int8 and int4, native.c's gates and
output layer; each is set beside fp32 stepping of the same rows.
Target: every lower precision within 0.01 nats/char of fp32.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch
from common import DATA, require, save
from torch.nn import functional as F

import rnnkit
from rnnkit import ModelConfig, TrainConfig, native
from rnnkit.sample import STEP_PRECISIONS, Stepper

STREAMS, LENGTH = 64, 500  # (B, T) of held-out text: 32,000 characters
ALONE = 8  # of those streams, stepped one at a time: one stream's kernels, and native.c


@torch.inference_mode()
def stepped_loss(model, tokens: torch.Tensor, precision: str) -> float:
    """Mean next-character cross-entropy of tokens (B, T), the B rows stepped side by side."""
    stepper = Stepper(model, precision, batch=tokens.shape[0])
    losses = [F.cross_entropy(stepper.feed(tokens[:, t]), tokens[:, t + 1])
              for t in range(tokens.shape[1] - 1)]
    return float(torch.stack(losses).mean())


@torch.inference_mode()
def one_stream_loss(model, tokens: torch.Tensor, precision: str) -> float:
    """`stepped_loss` with each row of tokens (B, T) stepped alone, as one stream is sampled."""
    losses = []
    for row in tokens:
        stepper, ids = Stepper(model, precision), row.tolist()
        losses += [F.cross_entropy(stepper.feed(ids[t]), row[t + 1]) for t in range(len(ids) - 1)]
    return float(torch.stack(losses).mean())


def held_out(model, corpus_text: str) -> torch.Tensor:
    """The first STREAMS x LENGTH characters of the validation split, as (B, T) ids."""
    ids, _ = model.vocab.encode(corpus_text[int(len(corpus_text) * 0.9):])
    return torch.tensor(ids[:STREAMS * LENGTH]).view(STREAMS, LENGTH)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--minutes", type=float, default=5.0, help="training time")
    p.add_argument("--keep", help="train into this directory and keep the run")
    p.add_argument("--run", help="measure this trained run instead of training one")
    args = p.parse_args()
    corpus = require(DATA / "tinyshakespeare.txt")
    torch.set_num_threads(1)  # two threads' barriers stall when other jobs share the two cores
    result = {}
    with tempfile.TemporaryDirectory() as tmp:
        run = args.run or args.keep or f"{tmp}/run"
        if not args.run:
            t0 = time.monotonic()
            summary = rnnkit.train(
                [str(corpus)], run, ModelConfig(layers=2, hidden=512),
                TrainConfig(max_steps=0, max_time=args.minutes * 60, eval_every=1_000_000,
                            sample_length=0, device="cpu"), quiet=True,
                resume=Path(run, "config.json").exists())  # --keep of a kept run: train more
            result["training"] = {"seconds_this_call": round(time.monotonic() - t0, 1),
                                  "steps_this_call": summary["steps_now"],
                                  "steps": summary["steps"], "val_loss": summary["best_val"]}
            print(f"trained {summary['steps_now']} steps in {time.monotonic() - t0:.0f} s "
                  f"({summary['steps']} in all), validation loss {summary['best_val']:.4f}",
                  flush=True)
            if summary["stopped"] in ("SIGINT", "SIGTERM"):  # an untrained model proves nothing
                sys.exit(f"training was stopped by {summary['stopped']}; nothing measured")
        model = rnnkit.load(run)
        tokens = held_out(model, corpus.read_text(encoding="utf-8"))
        with torch.inference_mode():
            _, fused, _ = model(tokens[:, :-1], tokens[:, 1:])
        losses = {"fused": float(fused)}
        for precision in STEP_PRECISIONS:
            losses[precision] = stepped_loss(model, tokens, precision)
        for precision in STEP_PRECISIONS:
            losses[f"{precision}_alone"] = one_stream_loss(model, tokens[:ALONE], precision)
    result["loss"] = losses
    result["difference_from_fp32"] = {
        **{p: losses[p] - losses["fp32"] for p in STEP_PRECISIONS[1:]},
        **{f"{p}_alone": losses[f"{p}_alone"] - losses["fp32_alone"] for p in STEP_PRECISIONS[1:]}}
    for name, loss in losses.items():
        fp32 = losses["fp32_alone" if name.endswith("_alone") else "fp32"]
        print(f"{name:10s} {loss:.5f} nats/char ({loss - fp32:+.5f} against fp32)")
    worst = max(abs(d) for d in result["difference_from_fp32"].values())
    print(f"target {', '.join(STEP_PRECISIONS[1:])} within 0.01 nats/char of fp32: "
          f"{'met' if worst <= 0.01 else 'NOT met'} (largest difference {worst:.5f})")
    save("sample_precision", {**result, "streams": STREAMS, "alone": ALONE, "length": LENGTH,
                              "native_c": native.why_not() or "used",
                              "rnnkit_version": rnnkit.__version__})


if __name__ == "__main__":
    main()
