"""Spoken digits (many-to-one audio): the Free Spoken Digit Dataset, official split.

Index 0-4 of every speaker and digit is the test set (300 files), the rest trains (2,700). Target:
at least 99% test accuracy within 5 minutes of training on 2 CPU cores, MFCC extraction included.
Reference: a 1-layer BiLSTM on 39 MFCCs reports 98.41% (on an older 2,000-file release).

    python benchmarks/fsdd_digits.py            # writes benchmarks/results/fsdd_digits.json
"""

import json
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import DATA, no_options, require, save  # noqa: E402

from rnnkit.cli import main  # noqa: E402

# 8 kHz as recorded (no resampling), 32 ms windows every 10 ms, 20 MFCCs + deltas = 60 features.
FEATURES = ["--sample-rate", "8000", "--n-fft", "256", "--hop-length", "80", "--n-mels", "40",
            "--n-mfcc", "20", "--deltas"]
MODEL = ["--cell", "gru", "--hidden", "128", "--bidirectional", "--pool", "mean",
         "--dropout", "0.1"]
TRAINING = ["--epochs", "12", "--batch-size", "64", "--lr", "3e-3", "--val-fraction", "0",
            "--max-time", "280s", "--seed", "0", "--device", "cpu"]


def run(recordings: Path) -> dict:
    """Train and test on `recordings` (FSDD's layout: DIGIT_SPEAKER_INDEX.wav) with the flags
    above; the figures of the result."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "run"
        args = ["classify", "train", str(recordings), "--out", str(out), "--label-pattern",
                r"^(\d)_", "--test-pattern", r"_[0-4]\.wav$", *FEATURES, *MODEL, *TRAINING]
        t0 = time.monotonic()
        status = main(args)
        seconds = time.monotonic() - t0
        if status != 0:
            sys.exit(status)
        metrics = json.loads((out / "metrics.json").read_text())
    return {"test_accuracy": metrics["test_accuracy"], "test_files": metrics["test_examples"],
            "seconds_total_with_features": round(seconds, 1),
            "seconds_training": round(sum(m["seconds"] for m in metrics["members"]), 1),
            "epochs": [m["epochs"] for m in metrics["members"]],  # one entry per model trained
            "target": ">= 0.99 within 300 s",
            "command": "rnnkit classify train DATA/fsdd/recordings --out DIR " + " ".join(args[5:])}


if __name__ == "__main__":
    no_options(__doc__)
    torch.set_num_threads(2)
    result = run(require(DATA / "fsdd" / "recordings"))
    print(result)
    save("fsdd_digits", result)
