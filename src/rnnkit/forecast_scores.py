"""How forecasters score forecasts: MASE, sMAPE, interval coverage, against seasonal naive.

For a forecast of H steps made at origin o of a series y with season length m:

    seasonal naive   y^_o+h = y_o+h-m*ceil((h+1)/m)        (h = 0..H-1; m = 1: the last value)
    MASE             mean_h |y_o+h - y^_o+h| / mean_t<o |y_t - y_t-m|
                     (the in-sample error of the seasonal naive forecast on the history)
    sMAPE            200 mean_h |y - y^| / (|y| + |y^|)     (in %, 0 where both are 0)
    coverage         the share of held-out values inside [q, 1 - q] quantiles

Each is computed per forecast (one series, one origin) and then averaged, as in the M4
competition. A history shorter than m + 1 steps is scored with m = 1.
"""

from __future__ import annotations

import numpy as np


def season_for(history_length: int, m: int) -> int:
    return m if history_length > m else 1


def seasonal_naive(history: np.ndarray, H: int, m: int) -> np.ndarray:
    """(T, F) -> (H, F): each step repeats the value one season (or several) before it."""
    m = season_for(len(history), m)
    h = np.arange(H)
    return history[len(history) - m + h % m]


def mase_scale(history: np.ndarray, m: int) -> np.ndarray:
    """(F,): the mean absolute seasonal difference of the history (NaN when it is flat)."""
    m = season_for(len(history), m)
    if len(history) <= m:
        return np.full(history.shape[1], np.nan)
    d = np.abs(history[m:] - history[:-m]).mean(0)
    return np.where(d > 0, d, np.nan)


def smape(pred: np.ndarray, y: np.ndarray) -> float:
    denominator = np.abs(y) + np.abs(pred)
    ratio = np.divide(np.abs(y - pred), denominator, out=np.zeros_like(denominator),
                      where=denominator > 0)
    return float(200 * ratio.mean())


def score(histories: list[np.ndarray], truths: np.ndarray, forecasts: np.ndarray,
          m: int) -> dict:
    """Mean MASE, sMAPE, MAE and RMSE of n forecasts: histories[j] (T_j, F) before forecast j,
    truths and forecasts (n, H, F)."""
    mase = [np.abs(t - f).mean(0) / mase_scale(h, m)
            for h, t, f in zip(histories, truths, forecasts, strict=True)]  # n x (F,)
    err = forecasts - truths
    return {"mase": float(np.nanmean(mase)) if np.isfinite(mase).any() else float("nan"),
            "smape": float(np.mean([smape(f, t) for t, f in zip(truths, forecasts,
                                                                strict=True)])),
            "mae": float(np.abs(err).mean()), "rmse": float(np.sqrt((err ** 2).mean())),
            "next_step_mae": float(np.abs(err[:, 0]).mean())}


def coverage(truths: np.ndarray, quantiles: np.ndarray, levels: list[float]) -> dict:
    """For each pair of levels (q, 1 - q) with q < 0.5, the share of truths (n, H, F) inside
    [quantile q, quantile 1 - q] of quantiles (n, H, F, Q), keyed by the nominal coverage:
    {"80%": {"levels": [0.1, 0.9], "coverage": 0.81}}."""
    out = {}
    for i, q in enumerate(levels):
        upper = [j for j, r in enumerate(levels) if abs(r - (1 - q)) < 1e-9]
        if q < 0.5 and upper:
            inside = (truths >= quantiles[..., i]) & (truths <= quantiles[..., upper[0]])
            out[f"{1 - 2 * q:.0%}"] = {"levels": [q, 1 - q], "coverage": float(inside.mean())}
    return out
