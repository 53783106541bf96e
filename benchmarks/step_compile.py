"""A compiled step against the stepper: is `torch.compile` worth a sampling path?

    python benchmarks/step_compile.py [--repeats 7]

The stepper (`rnnkit.sample.Stepper`) runs each step as a few dozen eager calls. This script
compiles the same step of a 2 x 512 LSTM with `torch.compile` (inductor, fixed shapes) as a pure
function: token ids and state in, logits and the next state out, the weights from
`CharLM.step_weights` laid out as the stepper lays them (fp32; int8 rows with per-row scales,
the input rounded to 8 bits). It runs under `torch.no_grad`, with weights and state made
outside `torch.inference_mode`: the stepper's inference tensors cannot be updated by a compiled
graph outside inference mode, and compiling under inference mode is what failed before.

For one row and for 32 rows, in alternating repeats on one thread (medians): microseconds per
step of `Stepper.feed` and of the compiled function, the compiled logits' largest difference
from the stepper's after 20 steps, and the seconds the first call spent compiling. rnnkit keeps
the eager stepper unless the compiled step is clearly faster.
"""

from __future__ import annotations

import argparse
import shutil
import time

import torch
from common import median, save

import rnnkit
from rnnkit import CharLM, ModelConfig, Vocab
from rnnkit.sample import Stepper

VOCAB = Vocab("char", tuple(range(32, 97)))  # 65 symbols, as tinyshakespeare
STEPS = 20  # steps per timed run


def compiled_step(model: CharLM, precision: str):
    """The stepper's LSTM step as a pure function step(tokens (B,), h, c) -> (logits, h, c),
    h and c (L, B, H), compiled."""
    w = model.step_weights()
    H = model.config.hidden
    d = torch.ones(4 * H)  # (4H,): g's rows doubled, g = 2 sigmoid(2 x) - 1 as in the stepper
    d[2 * H:3 * H] = 2
    table = (w.table + w.layers[0][3]) * d  # (V, 4H): layer 0's input term and both biases
    mats = [w.layers[0][1] * d[:, None]] + [torch.cat([W_ih, W_hh], 1) * d[:, None]
                                             for W_ih, W_hh, _, _ in w.layers[1:]]
    biases = [None] + [(b_ih + b_hh) * d for _, _, b_ih, b_hh in w.layers[1:]]
    if precision == "int8":
        row_max = [W.abs().amax(1) for W in mats]  # (4H,) each
        mats = [(W * (127 / m[:, None])).round().to(torch.int8).T.contiguous()
                for W, m in zip(mats, row_max, strict=True)]  # (K, 4H)
        scales = [m / (127 * 127) for m in row_max]
    else:
        mats = [W.T.contiguous() for W in mats]  # (K, 4H)
    W_hy, b_y = w.W_hy.T.contiguous(), w.b_y  # (H, V), (V,)

    def product(layer: int, x: torch.Tensor) -> torch.Tensor:
        if precision == "int8":
            x8 = (x * 127).round().to(torch.int8)
            return torch._int_mm(x8, mats[layer]) * scales[layer]
        return x @ mats[layer]

    def step(tokens, h, c):
        hs, cs = [], []
        for layer in range(h.shape[0]):
            x = h[layer] if layer == 0 else torch.cat([hs[-1], h[layer]], 1)  # (B, K)
            z = product(layer, x) + (table[tokens] if layer == 0 else biases[layer])  # (B, 4H)
            i, f, g, o = torch.sigmoid(z).chunk(4, 1)
            c_next = f * c[layer] + i * (2 * g - 1)
            hs.append(o * torch.tanh(c_next))
            cs.append(c_next)
        return torch.addmm(b_y, hs[-1], W_hy), torch.stack(hs), torch.stack(cs)

    return torch.compile(step, dynamic=False)


def measure(model: CharLM, precision: str, B: int, repeats: int) -> dict:
    """Stepper and compiled step on B rows: microseconds per step, logits' difference, compile time."""
    L, H = model.config.layers, model.config.hidden
    tokens = torch.randint(0, len(VOCAB), (STEPS, B), generator=torch.Generator().manual_seed(B))
    ids = tokens[:, 0].tolist() if B == 1 else tokens  # one row is fed ints, as sampling does
    stepper = Stepper(model, precision, batch=B)
    step = compiled_step(model, precision)

    def eager() -> None:
        for t in range(STEPS):
            stepper.feed(ids[t])

    def compiled() -> torch.Tensor:
        state = (torch.zeros(L, B, H), torch.zeros(L, B, H))
        for t in range(STEPS):
            logits, *state = step(tokens[t], *state)
        return logits

    with torch.no_grad():
        start = time.perf_counter()
        step(tokens[0], torch.zeros(L, B, H), torch.zeros(L, B, H))
        compile_s = time.perf_counter() - start
        stepper.reset()
        eager()
        difference = float((compiled() - stepper.logits.reshape(B, -1)).abs().max())
        times: dict[str, list[float]] = {"stepper": [], "compiled": []}
        for _ in range(repeats):
            for name, run in (("stepper", eager), ("compiled", compiled)):
                start = time.perf_counter()
                run()
                times[name].append((time.perf_counter() - start) / STEPS * 1e6)
    us = {name: median(t) for name, t in times.items()}
    return {"us_per_step": us, "compiled_over_stepper": us["compiled"] / us["stepper"],
            "max_logit_difference": difference, "compile_seconds": compile_s}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=7)
    args = p.parse_args()
    if shutil.which("c++") is None and shutil.which("g++") is None:
        print("skipped: torch.compile on the CPU needs a C++ compiler")
        return
    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = CharLM(ModelConfig(vocab_size=len(VOCAB), layers=2, hidden=512), VOCAB).eval()
    result = {}
    for precision in ("fp32", "int8"):
        for B in (1, 32):
            r = result[f"{precision}_x{B}"] = measure(model, precision, B, args.repeats)
            us = r["us_per_step"]
            print(f"{precision}, {B} row(s): stepper {us['stepper']:,.0f} us/step, compiled "
                  f"{us['compiled']:,.0f} ({r['compiled_over_stepper']:.2f}x the stepper's "
                  f"time), logits within {r['max_logit_difference']:.1e}, compiled in "
                  f"{r['compile_seconds']:.0f} s", flush=True)
    save("step_compile", {**result, "repeats": args.repeats, "rnnkit_version": rnnkit.__version__})


if __name__ == "__main__":
    main()
