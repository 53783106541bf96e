"""The step API: `y = rnn.step(x)` in a loop equals the whole sequence through the fused kernel.

    python examples/step_api.py

An RNN's whole API is one function, `y = rnn.step(x)`: feed one input vector, get one output vector,
and a hidden state h, kept inside, carries the history from step to step (it starts at zeros).
This script feeds a short random sequence to `rnnkit.RNN` one step at a time, printing h as it
changes, then runs the same sequence through torch's fused RNN kernel in one call (`rnn(xs)`, what
training uses, because it is fast) and prints the largest difference between the two: the two paths
share one set of weights and compute the same numbers, up to float rounding.

The same holds for a stack of two LSTM layers, `rnnkit.Recurrent("lstm", ...)`: `stack.step(x, state)`
in a loop against `stack(xs)` on the fused LSTM kernel.
"""

from __future__ import annotations

import torch

import rnnkit

T = 6  # time steps in the sequence


def fmt(v: torch.Tensor) -> str:
    return "[" + " ".join(f"{x:6.3f}" for x in v.tolist()) + "]"


def vanilla() -> float:
    """rnnkit.RNN: a loop of steps against the fused path; returns the largest difference."""
    rnn = rnnkit.RNN(input_size=4, hidden_size=3, output_size=2)
    xs = torch.randn(T, 4)  # (T, I): one input vector per step
    print("rnnkit.RNN(input_size=4, hidden_size=3, output_size=2), one step at a time:")
    print("  h = tanh(W_hh h + W_xh x + b_h),  y = W_hy h + b_y,  h starts at zeros")
    rnn.reset()
    stepped = []
    with torch.no_grad():
        for t, x in enumerate(xs):
            y = rnn.step(x)  # x (4,) -> y (2,); rnn.h is updated inside
            stepped.append(y)
            print(f"  step {t + 1}: x = {fmt(x)}  h = {fmt(rnn.h)}  y = {fmt(y)}")
        fused, h_T = rnn(xs)  # (T, 2), (3,): the whole sequence in one call
    diff_y = (torch.stack(stepped) - fused).abs().max().item()
    diff_h = (rnn.h - h_T).abs().max().item()
    print("The same sequence through the fused kernel, ys, h_T = rnn(xs):")
    for t, y in enumerate(fused):
        print(f"  step {t + 1}: y = {fmt(y)}")
    print(f"  max difference, outputs y: {diff_y:.1e}")
    print(f"  max difference, last hidden state h: {diff_h:.1e}")
    return max(diff_y, diff_h)


def lstm_stack() -> float:
    """rnnkit.Recurrent (2 LSTM layers): `step` in a loop against the fused forward."""
    stack = rnnkit.Recurrent("lstm", input_size=4, hidden_size=5, num_layers=2)
    xs = torch.randn(1, T, 4)  # (B, T, I) with a batch of one
    print('rnnkit.Recurrent("lstm", input_size=4, hidden_size=5, num_layers=2), one step at a time:')
    state = None  # zeros: the pair (h, c), each (L, B, H) = (2, 1, 5)
    stepped = []
    with torch.no_grad():
        for t in range(T):
            y, state = stack.step(xs[:, t], state)  # (B, I) -> (B, H), new (h, c)
            stepped.append(y)
            print(f"  step {t + 1}: top layer h = {fmt(y[0])}")
        fused, (h_T, c_T) = stack(xs)  # (B, T, H), each (L, B, H)
    diff_y = (torch.stack(stepped, dim=1) - fused).abs().max().item()
    diff_state = max((state[0] - h_T).abs().max().item(), (state[1] - c_T).abs().max().item())
    print(f"  max difference, outputs against the fused LSTM: {diff_y:.1e}")
    print(f"  max difference, last state (h, c) of both layers: {diff_state:.1e}")
    return max(diff_y, diff_state)


def main() -> None:
    torch.manual_seed(0)
    worst = vanilla()
    print()
    worst = max(worst, lstm_stack())
    print()
    print(f"Stepping equals the fused path: {worst < 1e-5} (largest difference {worst:.1e}).")


if __name__ == "__main__":
    main()
