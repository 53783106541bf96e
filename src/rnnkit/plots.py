"""Figures a run writes for its user to look at (matplotlib, drawn off-screen)."""

from __future__ import annotations

import math
from pathlib import Path

from .runfiles import atomic_write


def plot_losses(history: list[dict], path: Path, unit: str = "chars") -> None:
    """loss.png: train and validation loss against characters seen (nats and bits per char),
    or for a task run (`unit` "examples") against steps, written atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    chars = [h.get("chars", h["step"]) for h in history]
    fig, ax = plt.subplots(figsize=(7, 4), dpi=100)
    ax.plot(chars, [h["train_loss"] for h in history], marker=".", label="train")
    ax.plot(chars, [h["val_loss"] for h in history], marker=".", label="validation")
    ax.set_xlabel("characters seen" if unit == "chars" else "steps")
    ax.set_ylabel("loss (nats/char)" if unit == "chars" else "loss")
    if unit == "chars":
        right = ax.secondary_yaxis("right", functions=(lambda n: n / math.log(2),
                                                       lambda b: b * math.log(2)))
        right.set_ylabel("bits/char")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    try:
        with atomic_write(path) as f:
            fig.savefig(f, format="png")
    finally:
        plt.close(fig)
