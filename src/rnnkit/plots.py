"""Figures a run writes for its user to look at: loss.png, forecast.png, confusion.png
(matplotlib Figures drawn off-screen, each written atomically)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from .errors import RnnkitError
from .runfiles import atomic_write


def new_figure(width: float, height: float):
    """A matplotlib Figure without pyplot: no GUI backend and no global state (Agg renders it
    when it is saved), so drawing is safe in any thread or process."""
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=100)


FORMATS = {".png": "png", ".svg": "svg", ".pdf": "pdf"}  # a picture's name ending: its format


def save(fig, path: Path) -> None:
    """Write `fig` to `path`, atomically: an SVG or a PDF where its name ends so (`FORMATS`),
    else a PNG; a path that cannot be written is one line."""
    fig.tight_layout()
    try:
        with atomic_write(path) as f:
            fig.savefig(f, format=FORMATS.get(Path(path).suffix.lower(), "png"))
    except OSError as e:
        raise RnnkitError(f"cannot write {path} ({e.strerror or e}); check the folder and free "
                          "space") from None


def plot_losses(history: list[dict], path: Path, unit: str = "chars") -> None:
    """loss.png: train and validation loss against characters (or, `unit` "bytes", bytes) seen
    in nats and bits per symbol, or for a task run (`unit` "examples") against steps, written
    atomically."""
    chars = [h.get("chars", h["step"]) for h in history]
    fig = new_figure(7, 4)
    ax = fig.subplots()
    ax.plot(chars, [h["train_loss"] for h in history], marker=".", label="train")
    ax.plot(chars, [h["val_loss"] for h in history], marker=".", label="validation")
    symbol = {"chars": "char", "bytes": "byte"}.get(unit)  # a language model's token
    ax.set_xlabel({"char": "characters seen", "byte": "bytes seen"}.get(symbol, "steps"))
    ax.set_ylabel(f"loss (nats/{symbol})" if symbol else "loss")
    if symbol:
        right = ax.secondary_yaxis("right", functions=(lambda n: n / math.log(2),
                                                       lambda b: b * math.log(2)))
        right.set_ylabel(f"bits/{symbol}")
    ax.grid(alpha=0.3)
    ax.legend()
    save(fig, path)


def plot_forecast(panel, forecasts, shown: list[str], history: int, path: Path) -> None:
    """forecast.png: for each series in `shown`, its last `history` steps, the forecast (the
    median of a quantile run) and the widest interval between its quantiles, one panel per
    series and forecast column, written atomically."""
    F = len(forecasts.columns)
    fig = new_figure(7 * F, 2.6 * len(shown))
    axes = fig.subplots(len(shown), F, squeeze=False)
    for row, name in enumerate(shown):
        i = forecasts.ids.index(name)
        values = panel.values[i]  # (T, F)
        T, H = len(values), forecasts.point.shape[1]
        past = range(max(0, T - history), T)
        ahead = range(T, T + H)
        for f, column in enumerate(forecasts.columns):
            ax = axes[row, f]
            ax.plot(past, values[past.start:, f], color="black", lw=1, label="history")
            ax.plot(ahead, forecasts.point[i, :, f], color="tab:blue", lw=1.5, label="forecast")
            if forecasts.quantiles is not None and len(forecasts.levels) > 1:
                lo, hi = forecasts.levels[0], forecasts.levels[-1]
                ax.fill_between(ahead, forecasts.quantiles[i, :, f, 0],
                                forecasts.quantiles[i, :, f, -1], color="tab:blue", alpha=0.25,
                                label=f"{lo:g} to {hi:g} quantiles")
            ax.set_title(f"{name}: {column}" if len(forecasts.ids) > 1 else column, fontsize=9)
            ax.grid(alpha=0.3)
            if row == 0 and f == 0:
                ax.legend(fontsize=8)
    axes[-1, 0].set_xlabel("step")
    save(fig, path)


def plot_confusion(matrix: np.ndarray, classes: list[str], path: Path) -> None:
    """confusion.png: the test's confusion matrix (rows: true class, columns: predicted)."""
    n = len(classes)
    fig = new_figure(1.5 + 0.5 * n, 1.2 + 0.5 * n)
    ax = fig.add_subplot()
    ax.imshow(matrix, cmap="Blues")
    ax.set_xticks(range(n), classes, rotation=90 if n > 12 else 0)
    ax.set_yticks(range(n), classes)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    for i in range(n):
        for j in range(n):
            if matrix[i, j]:
                ax.text(j, i, str(matrix[i, j]), ha="center", va="center", fontsize=8,
                        color="white" if matrix[i, j] > matrix.max() / 2 else "black")
    save(fig, path)
