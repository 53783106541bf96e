"""Karpathy's "hello": a vanilla RNN with 3 hidden units learns to predict the next character.

    python examples/hello.py

The vocabulary is h, e, l, o; each character goes in as a 1-of-k vector of length 4. Fed "hell" one
character at a time with `y = rnn.step(x)`, the RNN answers at each step with 4 confidences (the
output vector y, one number per character) for the character that comes next. The training string is
"hello", so the targets are "ello": after "h" we want "e", after "he" "l", after "hel" "l", after
"hell" "o". This script prints the blog's figure as a table, before and after training, with each
step's target marked [like this] and its probability (the softmax of y) in the last row. Training
raises the marked numbers and lowers the others, until the largest confidence at each step spells
"ello".

Training runs the whole sequence through the fused kernel (`rnn(xs)`), with softmax cross-entropy;
the tables use the step API, which computes the same numbers.
"""

from __future__ import annotations

import torch

import rnnkit

CHARS = "helo"  # the vocabulary, in the blog's order
INPUT, TARGET = "hell", "ello"


def one_hot(text: str) -> torch.Tensor:
    """1-of-k encoding: text of length T -> (T, 4)."""
    return torch.eye(len(CHARS))[[CHARS.index(c) for c in text]]


def confidences(rnn: rnnkit.RNN) -> torch.Tensor:
    """Feed INPUT one character at a time with the step API; the outputs as columns: (4, T)."""
    rnn.reset()  # h = 0 before the first character
    with torch.no_grad():
        return torch.stack([rnn.step(x) for x in one_hot(INPUT)], dim=1)


def print_table(title: str, y: torch.Tensor) -> str:
    """The blog's output layer: one column per step, one row per character; returns the prediction."""
    print(title)
    print(" " * 10 + "".join(f"{'step ' + str(t + 1):>10}" for t in range(len(INPUT))))
    print("  input   " + "".join(f"{c:>10}" for c in INPUT))
    print("  target  " + "".join(f"{c:>10}" for c in TARGET))
    for row, char in enumerate(CHARS):
        cells = []
        for t, target in enumerate(TARGET):
            value = f"{y[row, t].item():.2f}"
            cells.append(f"{'[' + value + ']' if char == target else value:>10}")
        print(f"  y[{char}]    " + "".join(cells))
    p = torch.softmax(y, dim=0)  # confidences -> probabilities, per step
    p_target = [p[CHARS.index(c), t].item() for t, c in enumerate(TARGET)]
    print("  p(target)" + "".join(f"{q:>10.2f}" for q in p_target))
    predicted = "".join(CHARS[int(i)] for i in y.argmax(dim=0))
    right = sum(p == t for p, t in zip(predicted, TARGET, strict=True))
    print(f"  largest confidence at each step spells {predicted!r} ({right} of 4 right)")
    return predicted


def main() -> None:
    torch.set_num_threads(1)  # tensors this small run fastest on one thread
    torch.manual_seed(0)
    rnn = rnnkit.RNN(input_size=4, hidden_size=3, output_size=4)  # vocabulary 4, hidden size 3
    print('Karpathy\'s "hello": input "hell", targets "ello" (marked [like this]).')
    print()
    print_table("Before training (random weights), output confidences y:", confidences(rnn))
    print()

    xs, targets = one_hot(INPUT), torch.tensor([CHARS.index(c) for c in TARGET])  # (4, 4), (4,)
    optimizer = torch.optim.Adam(rnn.parameters(), lr=0.05)
    for step in range(500):
        ys, _ = rnn(xs)  # (4, 4): the whole sequence through the fused kernel
        loss = torch.nn.functional.cross_entropy(ys, targets)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step % 100 == 0 or step == 499:
            print(f"  training step {step:3d}: loss {loss.item():.4f}")
    print()
    predicted = print_table("After training, output confidences y:", confidences(rnn))
    print()
    print(f'The trained RNN, fed "hell", predicts {predicted!r}.')


if __name__ == "__main__":
    main()
