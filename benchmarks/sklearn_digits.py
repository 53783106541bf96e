"""An RNN on non-sequential data: scikit-learn's 8x8 digits read row by row (8 steps x 8 features).

Fixed stratified 25% test split (random_state 0). Target: at least 98% test accuracy. The
one-to-one MLP on the same 64 pixels is the control.

    python benchmarks/sklearn_digits.py         # writes benchmarks/results/sklearn_digits.json
"""

import sys
import time
from pathlib import Path

import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import no_options, save  # noqa: E402

from rnnkit.fitting import FitConfig, accuracy, dataset_loss, fit  # noqa: E402
from rnnkit.tasks import MLP, MLPConfig, SequenceConfig, SequenceModel  # noqa: E402


def run() -> dict:
    torch.set_num_threads(2)
    digits = load_digits()
    x = torch.tensor(digits.images, dtype=torch.float32) / 16.0  # (N, 8 rows, 8 pixels)
    y = torch.tensor(digits.target)
    train_i, test_i = train_test_split(range(len(y)), test_size=0.25, stratify=digits.target,
                                       random_state=0)
    train = {"inputs": x[train_i], "targets": y[train_i]}
    test = {"inputs": x[test_i], "targets": y[test_i]}
    cfg = FitConfig(epochs=60, batch_size=32, lr=3e-3, weight_decay=0.01, seed=0, device="cpu")
    result = {}
    for name, model in (
            ("rnn", SequenceModel(SequenceConfig(8, 10, cell="gru", hidden=128,
                                                 bidirectional=True, pool="mean", dropout=0.2))),
            ("mlp", MLP(MLPConfig(64, 10, hidden=256, layers=2, dropout=0.2)))):
        t0 = time.monotonic()
        fit(model, train, None, cfg, quiet=True)
        _, acc = dataset_loss(model, test, 512, torch.device("cpu"), accuracy)
        result[name] = {"test_accuracy": acc, "seconds": round(time.monotonic() - t0, 1)}
        print(name, result[name])
    return {**result, "test_examples": len(test_i), "target": "rnn >= 0.98",
            "settings": "GRU 128 bidirectional, mean pool, dropout 0.2, 60 epochs, batch 32, "
                        "AdamW 3e-3"}


if __name__ == "__main__":
    no_options(__doc__)
    save("sklearn_digits", run())
