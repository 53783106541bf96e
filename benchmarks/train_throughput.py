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
from pathlib import Path

import numpy as np
from common import DATA, median, plain_lstm_loop, rnnkit_train_speed, save

import rnnkit


def corpus_file(tmp: Path) -> Path:
    path = DATA / "tinyshakespeare.txt"
    if path.exists():
        return path
    rng = np.random.default_rng(0)  # without the data: random text of the same alphabet size
    letters = np.array(list("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ .,;:!?'\n-&$3"))
    path = tmp / "random.txt"
    path.write_text("".join(rng.choice(letters, 1_200_000)))
    return path


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
            plain.append(plain_lstm_loop(train_tokens, len(data.vocab), args.layers, args.hidden,
                                         args.batch_size, args.seq_len, args.steps))
            mine.append(rnnkit_train_speed(corpus, tmp / f"run{rep}", args.layers, args.hidden,
                                           args.batch_size, args.seq_len, args.steps))
            print(f"repeat {rep + 1}: plain {plain[-1]:,.0f} chars/s, rnnkit {mine[-1]:,.0f} "
                  f"chars/s", flush=True)
    ratio = median(mine) / median(plain)
    print(f"median: plain {median(plain):,.0f} chars/s, rnnkit {median(mine):,.0f} chars/s, "
          f"ratio {ratio:.3f} (target >= 0.97: {'met' if ratio >= 0.97 else 'NOT met'})")
    save("train_throughput", {"plain_chars_per_s": plain, "rnnkit_chars_per_s": mine,
                              "ratio_of_medians": round(ratio, 4), "config": vars(args)})


if __name__ == "__main__":
    main()
