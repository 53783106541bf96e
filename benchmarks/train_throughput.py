"""Training throughput: `rnnkit train` against a plain fused torch.nn.LSTM loop, side by side.

    python benchmarks/train_throughput.py [--steps 20] [--repeats 3] [--hidden 512] [--layers 2]

Both train the same model (embedding -> 2 x 512 LSTM -> linear) on the same contiguous batches
(batch 64, sequence 100) with AdamW and gradient-norm clipping, carrying the state between batches.
They run alternately, `--repeats` times each, and the ratio of median characters per second is the
figure (target: at least 0.97). rnnkit's figure is its training loop's own speed, evaluation and
checkpoint writing excluded; it includes everything else the loop does (batch reading from the
memory-mapped token file, the schedule, the progress bar, the non-finite-loss checks).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from common import DATA, median, save

import rnnkit
from rnnkit.text import Streams


def corpus_file(tmp: Path) -> Path:
    path = DATA / "tinyshakespeare.txt"
    if path.exists():
        return path
    rng = np.random.default_rng(0)  # without the data: random text of the same alphabet size
    letters = np.array(list("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ .,;:!?'\n-&$3"))
    path = tmp / "random.txt"
    path.write_text("".join(rng.choice(letters, 1_200_000)))
    return path


def plain_loop(tokens: np.ndarray, V: int, args) -> float:
    """The baseline: a textbook fused-LSTM training loop. Returns characters per second."""
    torch.manual_seed(0)
    embed = torch.nn.Embedding(V, args.hidden)
    lstm = torch.nn.LSTM(args.hidden, args.hidden, args.layers, batch_first=True)
    head = torch.nn.Linear(args.hidden, V)
    params = [*embed.parameters(), *lstm.parameters(), *head.parameters()]
    optimizer = torch.optim.AdamW(params, lr=2e-3, weight_decay=0.0)
    streams = Streams(tokens, args.batch_size, args.seq_len)
    state = None
    start = time.perf_counter()
    for i in range(args.steps):
        x, y, _ = streams.batch(i)
        x, y = torch.from_numpy(x), torch.from_numpy(y)
        out, state = lstm(embed(x), state)
        loss = torch.nn.functional.cross_entropy(head(out).reshape(-1, V), y.reshape(-1))
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        state = tuple(s.detach() for s in state)
    return args.steps * args.batch_size * args.seq_len / (time.perf_counter() - start)


def rnnkit_loop(corpus: Path, tmp: Path, rep: int, args) -> float:
    summary = rnnkit.train(
        [corpus], tmp / f"run{rep}",
        rnnkit.ModelConfig(cell="lstm", layers=args.layers, hidden=args.hidden),
        rnnkit.TrainConfig(seq_len=args.seq_len, batch_size=args.batch_size, lr=2e-3,
                           max_steps=args.steps, eval_every=10 * args.steps, warmup=0,
                           eval_tokens=args.batch_size * (args.seq_len + 1), device="cpu"),
        quiet=True)
    return summary["chars_per_second"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--hidden", type=int, default=512)
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--seq-len", type=int, default=100)
    p.add_argument("--batch-size", type=int, default=64)
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        corpus = corpus_file(tmp)
        data = rnnkit.text.prepare([corpus], tmp / "data")
        train_tokens, _ = data.split(0.1)
        plain, mine = [], []
        for rep in range(args.repeats):
            plain.append(plain_loop(train_tokens, len(data.vocab), args))
            mine.append(rnnkit_loop(corpus, tmp, rep, args))
            print(f"repeat {rep + 1}: plain {plain[-1]:,.0f} chars/s, rnnkit {mine[-1]:,.0f} "
                  f"chars/s", flush=True)
    ratio = median(mine) / median(plain)
    print(f"median: plain {median(plain):,.0f} chars/s, rnnkit {median(mine):,.0f} chars/s, "
          f"ratio {ratio:.3f} (target >= 0.97: {'met' if ratio >= 0.97 else 'NOT met'})")
    save("train_throughput", {"plain_chars_per_s": plain, "rnnkit_chars_per_s": mine,
                              "ratio_of_medians": round(ratio, 4), "config": vars(args)})


if __name__ == "__main__":
    main()
