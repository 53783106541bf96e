"""Encoder/decoder: string addition, "123+456" -> "579", operands of 1 to 3 digits.

The encoder reads the whole question, the decoder writes the answer. The answer is written least
significant digit first ("579" as "975"): that is the order in which a carry travels, so each digit
needs only the two operand digits at its place and the carry from the digit just written. It is
turned back before it is scored. The question is written as usual ("123+456");
`--reverse-operands` writes each operand's digits backwards too.

Every training example is a fresh problem drawn at random (one pass, no problem list reused), and
the 10,000 test problems are excluded from training. Target: at least 99% exact match on them
within 10 minutes of training (2 CPU cores).

    python benchmarks/addition.py               # writes benchmarks/results/addition.json
    python benchmarks/addition.py --minutes 2 --no-save    # a short trial, printed only
"""

import argparse
import random
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import save  # noqa: E402

from rnnkit.fitting import FitConfig, fit  # noqa: E402
from rnnkit.tasks import DecoderConfig, Seq2Seq, Seq2SeqConfig  # noqa: E402

START, END, PAD = 0, 1, 2
SYMBOLS = "0123456789+"
ID = {c: i + 3 for i, c in enumerate(SYMBOLS)}
V = len(SYMBOLS) + 3
PLUS = ID["+"]


def digits(n: torch.Tensor, width: int, reverse: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Numbers (N,) -> digit token ids (N, width), most significant first (or last), PAD after
    the number's digits; and the digit counts (N,)."""
    count = 1 + (n >= 10).long() + (n >= 100).long() + (n >= 1000).long()  # (N,)
    pos = torch.arange(width)[None, :]  # (1, width)
    power = pos if reverse else count[:, None] - 1 - pos  # which power of ten sits at pos
    d = n[:, None] // 10 ** power.clamp_min(0) % 10  # (N, width)
    return torch.where(pos < count[:, None], d + ID["0"], PAD), count


def dataset(a: torch.Tensor, b: torch.Tensor, reverse_operands: bool) -> dict:
    """Problems a + b (N,) -> the tensors `Seq2Seq.forward` takes; the answer is reversed."""
    da, la = digits(a, 3, reverse_operands)  # (N, 3)
    db, lb = digits(b, 3, reverse_operands)
    pos = torch.arange(7)[None, :]  # the question "a+b" in 7 slots: (N, 7)
    j = (pos - la[:, None] - 1).clamp(0, 2)  # (N, 7): index into b's digits after the "+"
    x = torch.where(pos < la[:, None], da.gather(1, pos.clamp(max=2).expand(len(a), 7)),
                    torch.where(pos == la[:, None], PLUS, db.gather(1, j)))
    x = torch.where(pos < (la + lb + 1)[:, None], x, PAD)
    y, ly = digits(a + b, 5, reverse=True)  # (N, 5), one slot left for the end symbol
    y[torch.arange(len(a)), ly] = END
    return {"inputs": x, "lengths": la + lb + 1, "targets": y, "target_lengths": ly + 1}


def text(ids: list[int]) -> str:
    return "".join(SYMBOLS[t - 3] if t >= 3 else "?" for t in ids)


def run(minutes: float = 9.5, cell: str = "gru", hidden: int = 128, batch_size: int = 128,
        lr: float = 5e-3, bidirectional: bool = True, reverse_operands: bool = False,
        threads: int = 2, train_size: int = 0) -> dict:
    torch.set_num_threads(threads)
    rng = random.Random(0)
    test = set()
    while len(test) < 10_000:
        test.add((rng.randrange(1000), rng.randrange(1000)))
    test = sorted(test)
    held_out = torch.zeros(1000, 1000, dtype=torch.bool)
    held_out[tuple(torch.tensor(test).T)] = True
    # enough fresh problems for every step the budget allows (up to 80 steps/s)
    n = train_size or int(80 * minutes * 60 * batch_size)
    g = torch.Generator().manual_seed(1)
    a, b = torch.randint(1000, (2, int(n * 1.02) + 100), generator=g)
    keep = ~held_out[a, b]
    a, b = a[keep][:n], b[keep][:n]
    decoder = DecoderConfig(V, cell=cell, hidden=hidden, embed=32, start=START, end=END)
    model = Seq2Seq(Seq2SeqConfig(V, decoder, bidirectional=bidirectional))
    cfg = FitConfig(epochs=1, batch_size=batch_size, lr=lr, warmup=100, max_time=minutes * 60,
                    seed=0, device="cpu")
    t0 = time.monotonic()
    summary = fit(model, dataset(a, b, reverse_operands), None, cfg)
    seconds = time.monotonic() - t0
    ta, tb = torch.tensor(test).T
    data = dataset(ta, tb, reverse_operands)
    right = 0
    for i in range(0, len(test), 1000):
        out = model.generate(data["inputs"][i:i + 1000], data["lengths"][i:i + 1000],
                             max_length=5)
        right += sum(text(o)[::-1] == str(x + y)
                     for o, (x, y) in zip(out, test[i:i + 1000], strict=True))
    steps = summary["steps"]
    settings = (f"{cell.upper()} {hidden}, {'bidirectional ' if bidirectional else ''}encoder, "
                f"embed 32, batch {batch_size}, AdamW {lr:g} with cosine decay, greedy; answer "
                f"written least significant digit first"
                + ("; operands' digits reversed in the question" if reverse_operands else ""))
    return {"exact_match": right / len(test), "test_problems": len(test),
            "train_problems": steps * batch_size, "steps": steps,
            "steps_per_second": round(steps / seconds, 1), "train_seconds": round(seconds, 1),
            "threads": threads, "target": ">= 0.99 within 600 s", "settings": settings}


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--minutes", type=float, default=9.5, help="training budget")
    p.add_argument("--cell", default="gru", choices=["gru", "lstm"])
    p.add_argument("--hidden", type=int, default=128)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=5e-3)
    p.add_argument("--unidirectional", action="store_true", help="a one-way encoder")
    p.add_argument("--reverse-operands", action="store_true",
                   help="write each operand least significant digit first too")
    p.add_argument("--threads", type=int, default=2,
                   help="torch threads; 1 is faster when other work shares the 2 cores")
    p.add_argument("--no-save", action="store_true", help="print only (for trials)")
    args = p.parse_args()
    result = run(args.minutes, args.cell, args.hidden, args.batch_size, args.lr,
                 not args.unidirectional, args.reverse_operands, args.threads)
    print(result)
    if not args.no_save:
        save("addition", result)
