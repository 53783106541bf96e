"""Sampling speed: characters per second streamed from a 2 x 512 LSTM, 1 and 2 CPU threads.

    python benchmarks/sample_speed.py [--length 2000] [--repeats 5] [--threads 1,2]

Side by side, in alternating repeats (the machine may be shared, so every method sees the same
conditions; medians are reported):
  plain     the loop people write first: one call of the fused `torch.nn.LSTM` per character
            (the same weights), softmax, sample;
  fp32      rnnkit's stepper at its default, exact precision;
  bf16, int8, int4  the stepper with lower-precision weights (`--precision`), one stream's
            gates, output layer and draw in native.c;
  bf16_torch_ops, ...  the same with native.c turned off (`RNNKIT_NATIVE=0`), as where no C
            compiler is found: torch's operations alone;
  N=32      32 streams in one batch (`--num-samples 32`) at each precision: characters per
            second summed over the streams.
Targets: at least 5,000 characters/s for one stream, and at N = 32 at least 10 times one
stream's throughput at the same precision, each path at its fastest thread count.

The ceiling: a 32-row step cannot take less time than its matrix products, so at each precision
N = 32 can run at most 32 x (one stream's step time) / (the 32-row products' time) times one
stream, even if everything else in the step cost nothing. The script times those products alone
(the stepper's own `Weights` and output layer: the median of 3 rounds of 200 steps' products)
and prints that ceiling beside the measured gain. int8's and int4's rounded weights are made by a
model's first stream and kept for the next ones (every repeat but the warm-up's reuses them); the
milliseconds from a fresh model's first call to its first character, rounding included, are
timed apart. Threads are set with `torch.set_num_threads`.
The load average before and after each thread count is recorded: on a shared machine the figures
move with the other jobs. A compiled step is measured apart, by step_compile.py.
"""

from __future__ import annotations

import argparse
import copy
import os
import time

import torch
from common import median, save

import rnnkit
from rnnkit import CharLM, ModelConfig, Vocab, native
from rnnkit.sample import STEP_PRECISIONS, Stepper

VOCAB = Vocab("char", tuple(range(32, 97)))  # 65 symbols, as tinyshakespeare
BATCH = 32
REDUCED = [p for p in STEP_PRECISIONS if p != "fp32"]  # where one stream steps through native.c


@torch.inference_mode()
def plain_loop(model: CharLM, length: int) -> float:
    """One call of the fused kernel per character: characters per second."""
    generator = torch.Generator().manual_seed(0)
    x, state = torch.tensor([[0]]), None
    start = time.perf_counter()
    for _ in range(length):
        out, state = model.rnn.rnn(model.embed(x), state)
        probs = torch.softmax(model.head(out[0, -1]), -1)
        x = torch.multinomial(probs, 1, generator=generator).view(1, 1)
    return length / (time.perf_counter() - start)


def rnnkit_stream(model: CharLM, length: int, precision: str = "fp32",
                  num_samples: int | None = None) -> float:
    """`model.stream` from a one-character prime: characters per second over all streams."""
    start = time.perf_counter()
    n = sum(1 for _ in model.stream(prime="A", length=length, seed=0, precision=precision,
                                    num_samples=num_samples))
    return n * (num_samples or 1) / (time.perf_counter() - start)


def torch_ops_alone(run) -> float:
    """`run()` with native.c turned off (`RNNKIT_NATIVE=0`): one stream steps with torch's
    operations alone, as where no C compiler is found."""
    os.environ["RNNKIT_NATIVE"] = "0"
    native.library.cache_clear()
    try:
        return run()
    finally:
        del os.environ["RNNKIT_NATIVE"]
        native.library.cache_clear()


def first_character_ms(model: CharLM, precision: str) -> float:
    """Milliseconds from `model.stream` to its first character, for a model whose stepper
    weights were never made (a fresh copy): int8's and int4's rounding included, which later
    streams of the same model skip."""
    fresh = copy.deepcopy(model)
    start = time.perf_counter()
    next(iter(fresh.stream(prime="A", length=1, seed=0, precision=precision)))
    return (time.perf_counter() - start) * 1e3


@torch.inference_mode()
def products_seconds(model: CharLM, precision: str, repeats: int = 200) -> float:
    """Seconds of the matrix products of one 32-row step alone (the stepper's `Weights`, on its
    own buffers): the floor under a 32-row step's time."""
    stepper = Stepper(model, precision, BATCH)
    calls = [(W, b, x) for (W, b), x in zip(stepper.layers, stepper.inputs, strict=True)]
    calls[0] = (calls[0][0], stepper.table[:BATCH], calls[0][2])  # layer 0's term: table rows
    times = []
    for _ in range(3):
        start = time.perf_counter()
        for _ in range(repeats):
            for W, b, x in calls:
                W(b, x)
            torch.addmm(stepper.b_y, stepper.h[-1], stepper.W_hy.T)  # the output layer
        times.append((time.perf_counter() - start) / repeats)
    return median(times)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--length", type=int, default=2000, help="characters per single stream run")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", default="1,2", help="thread counts to measure, comma-separated")
    args = p.parse_args()
    torch.manual_seed(0)
    model = CharLM(ModelConfig(vocab_size=len(VOCAB), layers=2, hidden=512), VOCAB).eval()
    short = max(300, args.length // 8)  # the slow plain loop, and each of the N streams
    methods = {
        "plain": lambda: plain_loop(model, short),
        **{precision: (lambda p=precision: rnnkit_stream(model, args.length, p))
           for precision in STEP_PRECISIONS},
        **{f"{precision}_torch_ops": (lambda p=precision: torch_ops_alone(
            lambda: rnnkit_stream(model, args.length, p))) for precision in REDUCED},
        **{f"{precision}_x{BATCH}": (lambda p=precision: rnnkit_stream(model, short, p, BATCH))
           for precision in STEP_PRECISIONS},
    }
    result = {}
    for threads in map(int, args.threads.split(",")):
        torch.set_num_threads(threads)
        load_before = os.getloadavg()[0]
        for run in methods.values():  # warm up
            run()
        rates: dict[str, list[float]] = {name: [] for name in methods}
        for _ in range(args.repeats):
            for name, run in methods.items():
                rates[name].append(run())
        chars = {name: median(r) for name, r in rates.items()}
        first = {p: median([first_character_ms(model, p) for _ in range(args.repeats)])
                 for p in STEP_PRECISIONS}
        batch_gain = {p: chars[f"{p}_x{BATCH}"] / chars[p] for p in STEP_PRECISIONS}
        ceiling = {p: BATCH / chars[p] / products_seconds(model, p) for p in STEP_PRECISIONS}
        result[f"{threads}_thread"] = {
            "chars_per_s": chars,
            "over_fp32": {p: chars[p] / chars["fp32"] for p in STEP_PRECISIONS},
            "native_over_torch_ops": {p: chars[p] / chars[f"{p}_torch_ops"] for p in REDUCED},
            "fp32_over_plain": chars["fp32"] / chars["plain"],
            f"x{BATCH}_over_one_stream": batch_gain,
            f"x{BATCH}_ceiling_products_only": ceiling,
            f"x{BATCH}_over_one_fp32_stream": {p: chars[f"{p}_x{BATCH}"] / chars["fp32"]
                                               for p in STEP_PRECISIONS},
            "first_character_ms": first,
            "load_average": [load_before, os.getloadavg()[0]],
        }
        print(f"{threads} thread(s), chars/s (median of {args.repeats}; load average "
              f"{load_before:.1f} before, {os.getloadavg()[0]:.1f} after): " + ", ".join(
                  f"{name} {c:,.0f}" for name, c in chars.items()), flush=True)
        print("  over fp32: " + ", ".join(f"{p} {chars[p] / chars['fp32']:.2f}x"
                                          for p in STEP_PRECISIONS[1:]) + "; native.c / torch "
              "operations alone: " + ", ".join(f"{p} {chars[p] / chars[p + '_torch_ops']:.2f}x"
                                              for p in REDUCED) + "; fp32 / plain "
              f"{chars['fp32'] / chars['plain']:.1f}x; N={BATCH} / one stream: " + ", ".join(
                  f"{p} {g:.1f}x" for p, g in batch_gain.items()) + "; the ceiling (products "
              "alone): " + ", ".join(f"{p} {c:.1f}x" for p, c in ceiling.items()), flush=True)
        print("  ms to the first character of a model's first stream: " + ", ".join(
            f"{p} {ms:.1f}" for p, ms in first.items()), flush=True)
    # The targets compare the fastest of each, whatever the thread count: a single stream slowed
    # by two threads' barriers on shared cores must not flatter the batch.
    one = {p: max(v["chars_per_s"][p] for v in result.values()) for p in STEP_PRECISIONS}
    many = {p: max(v["chars_per_s"][f"{p}_x{BATCH}"] for v in result.values())
            for p in STEP_PRECISIONS}
    gains = {p: many[p] / one[p] for p in STEP_PRECISIONS}
    best, gain = max(one.values()), max(gains.values())
    print(f"target one stream >= 5,000 chars/s: {'met' if best >= 5000 else 'NOT met'} "
          f"({best:,.0f}); target N={BATCH} >= 10x one stream at the same precision (the fastest "
          f"of each): {'met' if gain >= 10 else 'NOT met'} (" + ", ".join(
              f"{p} {g:.1f}x" for p, g in gains.items()) + ")")
    save("sample_speed", {**result, f"fastest_x{BATCH}_over_fastest_one_stream": gains,
                          "length": args.length, "repeats": args.repeats,
                          "native_c": native.why_not() or "used",
                          "rnnkit_version": rnnkit.__version__})


if __name__ == "__main__":
    main()
