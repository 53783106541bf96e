"""Forecasting: a noisy multi-seasonal synthetic series, the RNN's H-step error vs the naive one.

    y_t = 0.002 t + sin(2 pi t / 24) + 0.6 sin(2 pi t / 96) + noise(0.2)

Univariate, 8,000 steps; the last 20% is the test set, a forecast from each of its steps (rolling
origins). Horizon 12, window 96. The naive forecast repeats the last observed value; the claim is
the RNN's mean absolute error relative to it.

    python benchmarks/forecast.py               # writes benchmarks/results/forecast.json
"""

import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import no_options, save  # noqa: E402

from rnnkit.cli import main  # noqa: E402


def run(length: int = 8000, epochs: int = 10) -> dict:
    """Train and test on the first `length` steps of the series for `epochs` epochs; the figures
    of the result."""
    t = np.arange(length)
    y = (0.002 * t + np.sin(2 * np.pi * t / 24) + 0.6 * np.sin(2 * np.pi * t / 96)
         + np.random.default_rng(0).normal(0, 0.2, len(t)))
    with tempfile.TemporaryDirectory() as tmp:
        csv = Path(tmp) / "series.csv"
        csv.write_text("t,y\n" + "".join(f"{i},{v:.5f}\n" for i, v in zip(t, y, strict=True)))
        out = Path(tmp) / "run"
        # --test-fraction: the last 20% is the test set, a forecast from every step of it
        args = ["forecast", "train", str(csv), "--columns", "y", "--horizon", "12", "--window",
                "96", "--test-fraction", "0.2", "--out", str(out), "--cell", "gru", "--hidden",
                "64", "--epochs", str(epochs), "--batch-size", "64", "--lr", "3e-3", "--seed", "0",
                "--device", "cpu"]
        status = main(args)
        if status != 0:
            sys.exit(status)
        m = json.loads((out / "metrics.json").read_text())
    return {"rnn_mae": m["test"]["mae"], "naive_mae": m["naive"]["mae"],
            "mae_reduction": 1 - m["test"]["mae"] / m["naive"]["mae"],
            "rnn_rmse": m["test"]["rmse"], "naive_rmse": m["naive"]["rmse"],
            "test_windows": m["test_windows"], "train_seconds": round(m["seconds"], 1),
            "target": "rnn MAE at least 50% below the naive forecast's",
            "command": "rnnkit forecast train SERIES.csv " + " ".join(args[3:11] + args[13:])}


if __name__ == "__main__":
    no_options(__doc__)
    torch.set_num_threads(2)
    result = run()
    print(result)
    save("forecast", result)
