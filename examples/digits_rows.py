"""An RNN on non-sequential data: an 8x8 image of a digit, read one row at a time.

    python examples/digits_rows.py

Karpathy: "even if your data is not in form of sequences, you can still formulate and train powerful
models that learn to process it sequentially." Here the data are scikit-learn's bundled 8x8 images of
handwritten digits (1797 of them, no download). An image is not a sequence, but it can be read as one:
8 time steps, one per row, each a vector of the row's 8 pixels. A many-to-one RNN
(`rnnkit.tasks.SequenceModel`, a GRU with 64 units) reads the 8 rows top to bottom and names the digit
from its last hidden state. It never sees the whole image at once, only its memory of the rows so far.

The split is fixed (stratified, 25% test, random_state 0), training is `rnnkit.fit` for 10 epochs,
and the script prints the test accuracy beside that of the one-to-one control, an MLP that sees all
64 pixels at once. (`benchmarks/sklearn_digits.py` trains a larger RNN for longer.)
"""

from __future__ import annotations

import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

from rnnkit.fitting import FitConfig, accuracy, dataset_loss, fit
from rnnkit.tasks import MLP, MLPConfig, SequenceConfig, SequenceModel

SHADES = " .:-=+*#%@"  # pixel values 0..16, dark to bright


def show(image: torch.Tensor) -> None:
    """An 8x8 image (values 0..1) as text, one line per row, with the time step that reads it."""
    for t, row in enumerate(image.tolist()):
        pixels = "".join(SHADES[min(9, int(v * 10))] * 2 for v in row)
        print(f"  step {t + 1}: |{pixels}|")


def main() -> None:
    torch.set_num_threads(1)  # a model this small runs fastest on one thread
    digits = load_digits()
    x = torch.tensor(digits.images, dtype=torch.float32) / 16.0  # (N, T=8 rows, F=8 pixels)
    y = torch.tensor(digits.target)  # (N,) the digit, 0-9
    train_i, test_i = train_test_split(range(len(y)), test_size=0.25, stratify=digits.target,
                                       random_state=0)
    train = {"inputs": x[train_i], "targets": y[train_i]}
    test = {"inputs": x[test_i], "targets": y[test_i]}
    print(f"scikit-learn's digits: {len(y)} images of 8x8 pixels; {len(train_i)} to train, "
          f"{len(test_i)} to test.")
    print(f"Each image is a sequence of 8 steps of 8 features: inputs {list(x.shape)} (N, T, F).")
    print(f"The first test image, a {int(test['targets'][0])}, as the RNN reads it:")
    show(test["inputs"][0])
    print()

    cfg = FitConfig(epochs=10, batch_size=32, lr=1e-2, warmup=10, seed=0, device="cpu")
    torch.manual_seed(0)  # the initial weights
    rnn = SequenceModel(SequenceConfig(input_size=8, output_size=10, cell="gru", hidden=64))
    fit(rnn, train, None, cfg, quiet=True)
    _, rnn_acc = dataset_loss(rnn, test, 512, torch.device("cpu"), accuracy)
    with torch.no_grad():
        guess = int(rnn(test["inputs"][:1])[0].argmax())
    print("Many-to-one RNN (GRU, 64 units), one row per step, answer after the last row:")
    print(f"  the first test image -> {guess}")
    print(f"  RNN test accuracy: {100 * rnn_acc:.1f}% ({round(rnn_acc * len(test_i))} of {len(test_i)} "
          "unseen images)")

    torch.manual_seed(0)
    mlp = MLP(MLPConfig(64, 10, hidden=128, layers=2))
    fit(mlp, train, None, cfg, quiet=True)
    _, mlp_acc = dataset_loss(mlp, test, 512, torch.device("cpu"), accuracy)
    print("One-to-one control, an MLP that sees all 64 pixels at once:")
    print(f"  MLP test accuracy: {100 * mlp_acc:.1f}%")
    print()
    print(f"Read one row at a time, the RNN names {100 * rnn_acc:.1f}% of the unseen digits.")


if __name__ == "__main__":
    main()
