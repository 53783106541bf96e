"""Sampling speed: characters per second streamed from a 2 x 512 LSTM, 1 and 2 CPU threads.

    python benchmarks/sample_speed.py [--length 3000]

Side by side with the plain loop people write first: feed one character per call to the fused
`torch.nn.LSTM` (the same weights), softmax, sample. rnnkit's stepper runs the cell equations on
the same weights laid out for one-row products (see rnnkit/sample.py). Target: at least 1,500
characters/s for rnnkit on this machine.
"""

from __future__ import annotations

import argparse
import time

import torch
from common import median, save

import rnnkit
from rnnkit import CharLM, ModelConfig, Vocab

VOCAB = Vocab("char", tuple(range(32, 97)))  # 65 symbols, as tinyshakespeare


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


def rnnkit_stream(model: CharLM, length: int) -> float:
    start = time.perf_counter()
    n = sum(1 for _ in model.stream(prime="a", length=length, seed=0))
    return n / (time.perf_counter() - start)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--length", type=int, default=3000)
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()
    torch.manual_seed(0)
    model = CharLM(ModelConfig(vocab_size=len(VOCAB), layers=2, hidden=512), VOCAB).eval()
    result = {}
    for threads in (1, 2):
        torch.set_num_threads(threads)
        plain_loop(model, 50), rnnkit_stream(model, 50)  # warm up
        plain = [plain_loop(model, max(300, args.length // 10)) for _ in range(args.repeats)]
        mine = [rnnkit_stream(model, args.length) for _ in range(args.repeats)]
        result[f"{threads}_thread"] = {"plain_chars_per_s": median(plain),
                                       "rnnkit_chars_per_s": median(mine)}
        print(f"{threads} thread(s): plain loop {median(plain):,.0f} chars/s, rnnkit "
              f"{median(mine):,.0f} chars/s ({median(mine) / median(plain):.1f}x)", flush=True)
    best = max(v["rnnkit_chars_per_s"] for v in result.values())
    print(f"target >= 1,500 chars/s: {'met' if best >= 1500 else 'NOT met'}")
    save("sample_speed", {**result, "length": args.length, "rnnkit_version": rnnkit.__version__})


if __name__ == "__main__":
    main()
