"""Calibrated forecast intervals: the quantile head's intervals widened until they cover their
share of held-out values, as a forecaster that recalibrates as the data comes in would do it.

    factors = conformal_widening(outputs, targets, levels)     # (Q,): -c, 0, +c for 0.1, 0.5, 0.9
    y = widened(quantiles, levels, factors)                     # [lo - c w, hi + c w], w = hi - lo

`rolling_widening` calibrates each test origin on the held-out errors known there, the latest
weighing most; `forecast_cli` uses it in training, `panel.decode` and `export` apply the
factors. Everything is in the window's units (`panel`), where every series has a comparable
scale.
"""

from __future__ import annotations

import numpy as np

WIDTH_FLOOR = 1e-3  # the smallest interval width a calibration scales, in the window's units
AGE_WEIGHT = 0.5  # a horizon's errors weigh this much of the next horizon's in a calibration


def interval_ends(levels: list[float]) -> tuple[np.ndarray, np.ndarray]:
    """For each quantile level, the indices (Q,) of the lower and upper end of its interval
    [q, 1 - q]; a level without its mirror (0.5 among them) is both ends of its own."""
    lower, upper = np.arange(len(levels)), np.arange(len(levels))
    for i, q in enumerate(levels):
        j = next((j for j, r in enumerate(levels) if abs(r - (1 - q)) < 1e-9), i)
        lower[i], upper[i] = min(i, j), max(i, j)
    return lower, upper


def widened(y: np.ndarray, levels: list[float], widen: list[float] | np.ndarray | None,
            offsets: list[float] | None = None) -> np.ndarray:
    """Quantiles y (n, ..., Q) in the window's units, calibrated: each quantile moves by its
    factor in `widen` ((Q,), or (n, Q) per window) times the width of its interval (at least
    WIDTH_FLOOR), so an interval [lo, hi] becomes [lo - c w, hi + c w]. `offsets` (Q,) are the
    constant shifts that runs of earlier versions were calibrated with, in the same units."""
    if offsets:
        y = y + np.asarray(offsets, np.float32)
    if widen is None or not len(widen) or not levels:
        return y
    factor = np.asarray(widen, np.float32)
    if factor.ndim == 2:  # (n, Q) -> (n, 1, ..., 1, Q)
        factor = factor.reshape(len(factor), *[1] * (y.ndim - 2), -1)
    lower, upper = interval_ends(levels)
    return y + factor * np.maximum(y[..., upper] - y[..., lower], WIDTH_FLOOR)


def conformal_widening(outputs: np.ndarray, targets: np.ndarray, levels: list[float],
                       weights: np.ndarray | None = None) -> list[float]:
    """Factors (Q,) that widen each interval [q, 1 - q] until it covers its nominal share of
    held-out values (conformalized quantile regression, Romano et al. 2019, with the score
    scaled by the interval's width: CQR-r in Sesia and Candes 2020), in the window's units.

    outputs (n, C * Q) and targets (n, C) from held-out windows: with the conformity score
    E = max(lo - y, y - hi) / w, w = hi - lo (at least WIDTH_FLOOR), each interval widened by
    c w on each side, c the ceil((N + 1)(1 - a))-th smallest of the N scores, covers 1 - a of
    exchangeable values; scaled by its width, the widening follows the head's own uncertainty:
    wider at longer lead times and at busier hours (solar's nights and days). `weights` (n,)
    in (0, 1], one per window: c is then the weighted quantile of nonexchangeable conformal
    prediction (Barber, Candes, Ramdas and Tibshirani 2023), the smallest score whose weight
    and the lighter scores' reach 1 - a of their total plus 1 (the weight of the value to
    cover); all ones is the plain rule. An interval that already covers more is left as the
    head made it, not narrowed: errors tend to grow after the windows they are calibrated on
    (in benchmarks/forecast_vs_field.py, M1's, Airline's, CO2's and Taylor's test horizons all
    had larger errors than their validation horizon), and narrowing on the validation horizon
    lost test coverage wherever it happened there.
    """
    out = outputs.reshape(*targets.shape, len(levels))
    w = np.ones(len(targets)) if weights is None else np.asarray(weights, np.float64)
    w = np.broadcast_to(w.reshape(-1, *[1] * (targets.ndim - 1)), targets.shape).ravel()
    lower, upper = interval_ends(levels)
    factors = [0.0] * len(levels)
    for i, j in sorted({(int(i), int(j)) for i, j in zip(lower, upper, strict=True) if i != j}):
        lo, hi = out[..., i], out[..., j]
        E = (np.maximum(lo - targets, targets - hi) / np.maximum(hi - lo, WIDTH_FLOOR)).ravel()
        order = np.argsort(E, kind="stable")
        reached = np.cumsum(w[order]) / (w.sum() + 1)  # the lighter scores' share of the weight
        k = min(int(np.searchsorted(reached, levels[j] - levels[i] - 1e-12)), len(E) - 1)
        factors[i], factors[j] = -max(0.0, float(E[order[k]])), max(0.0, float(E[order[k]]))
    return factors


def rolling_widening(outputs: np.ndarray, targets: np.ndarray, enc: dict[str, np.ndarray],
                     lengths: list[int], tested: np.ndarray, H: int, levels: list[float],
                     readable: np.ndarray | None = None) -> tuple[np.ndarray, list[float]]:
    """Calibration that uses every forecast error known at the origin, as a forecaster that
    recalibrates as the data comes in would.

    outputs (n, C * Q), targets (n, C) and enc (`encode`) of the held-out windows, validation and
    test together; tested (n,) marks the test windows. A test window whose origin lies s steps
    before its series' end is calibrated (`conformal_widening`) on the held-out windows whose
    targets end at least s steps before their own series' end (series aligned at their ends):
    the validation windows, and the earlier test horizons. The latest horizon known there
    weighs 1, each one before it AGE_WEIGHT times the next (the weights of
    `conformal_widening`): errors drift as the origin moves on, most in series that grow
    (Airline's window-unit errors grew from one test horizon to the next in
    benchmarks/forecast_vs_field.py), and the latest errors say most about the next ones.
    Returns the test windows' factors
    (n_test, Q) and those for forecasts after the data: every held-out window's. `readable`
    (n,): the windows to calibrate on (`panel.scaleless` leaves some out); None: all.
    """
    ahead = np.asarray(lengths)[enc["series"]] - enc["origin"]  # steps from origin to the end
    known = ahead - H  # steps from the end of the window's targets to its series' end
    readable = np.ones(len(known), bool) if readable is None else readable

    def calibrated(s: int) -> list[float]:  # on what is known s steps before the ends
        use = (known >= s) & readable
        if not use.any():  # nothing is known yet there (no validation part): left as made
            return [0.0] * len(levels)
        age = (known[use] - s) // H  # in horizons: 0 for the latest known
        return conformal_widening(outputs[use], targets[use], levels, AGE_WEIGHT ** age)

    out = np.zeros((int(tested.sum()), len(levels)), np.float32)
    for s in np.unique(ahead[tested]):
        out[ahead[tested] == s] = calibrated(int(s))
    return out, calibrated(0)
