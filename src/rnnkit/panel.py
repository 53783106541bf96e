"""Many series for one global forecaster: reading them, and the windows the model reads.

    CSV   long format: one row per (series, time step). `id_column` names each row's series (none:
          the file is one series), `time_column` orders the rows of a series (ISO dates or
          numbers) and gives calendar features; the target columns are forecast, `past` columns
          are inputs known only up to the forecast origin, `known` columns are known in advance
          (prices, holidays): a file to forecast from gives them for the next H steps as rows
          whose target cells are empty.
    .npz  x (float, [N, T_max, F], zero-padded) and lengths (int, [N]), optional ids ([N]
          strings); targets only.

One model serves every series (DeepAR's global model): a window is the last W steps before a
forecast origin (fewer at a series' start), seen from its last value and divided by a scale of
its own series, so series of any level and size share the weights:

    x'_t = (y_t - y_last) / s        s = the run's std of H-step changes (one series), or
                                         the mean |y_t - y_t-1| of the window (many series)

and it forecasts each step's departure from the seasonal naive forecast (season length m;
m = 1: the last value), (y_o+h - y_o+h-m*ceil((h+1)/m)) / s, so a model that writes zeros is
the seasonal naive forecast and the network learns what that forecast misses.

With known covariates or calendar features the window runs on H steps past the origin, where
only those inputs and an "observed" flag of 0 are given. The model writes H x F values, or
H x F x Q quantiles, in the same units, which `decode` turns back into the series' units.
"""

from __future__ import annotations

import os
import re
import warnings
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import RnnkitError
from .intervals import widened
from .series import open_npz, read_table

PERIODS = {"hour": 24, "weekday": 7, "month": 12}  # each of configs.CALENDAR -> its period
SEASONS = {3600: 24, 1800: 48, 86400: 7, 7 * 86400: 52}  # seconds per step -> season length


@dataclass
class Panel:
    """N series: their targets, inputs and times (lists of N arrays)."""

    ids: list[str]
    values: list[np.ndarray]  # (T_i, F) targets, finite
    past: list[np.ndarray]  # (T_i, P) past-only covariates
    known: list[np.ndarray]  # (T_i + H_future, K) known covariates and calendar features
    times: list[np.ndarray | None] = field(default_factory=list)  # (T_i,) or None
    ahead: list[np.ndarray | None] = field(default_factory=list)  # the rows to forecast's times
    utc: bool = False  # the times were given with UTC offsets and are read in UTC

    def __len__(self) -> int:
        return len(self.ids)


def has_future(data: dict) -> bool:
    """Whether the run's windows run on past the origin (they read known inputs)."""
    return bool(data.get("known") or data.get("calendar"))


def input_size(data: dict) -> int:
    """Features per step: targets, past covariates, known ones, calendar (sin, cos), flag."""
    return (len(data["columns"]) + len(data.get("past") or []) + len(data.get("known") or [])
            + 2 * len(data.get("calendar") or []) + has_future(data))


# --- reading ----------------------------------------------------------------------------------

# An ISO date and time with its UTC offset apart: 2024-10-27T02:00:00.5+01:00 -> the local time,
# "+01:00" (or "Z", or nothing)
ISO_OFFSET = re.compile(r"(\d{4}-\d\d-\d\dT\d\d(?::\d\d(?::\d\d(?:\.\d+)?)?)?)"
                        r"(Z|[+-]\d\d(?::?\d\d)?)?")  # +01 too, as PostgreSQL writes it
ISO_DAY = re.compile(r"\d{4}-\d\d(?:-\d\d)?")  # a date without a time: 2024-01-31, 2024-01


def parse_times(cells: list[str], where: str) -> tuple[np.ndarray, bool]:
    """Time cells (the rows of a CSV after its header) as float64 (numbers) or datetime64:
    ISO dates and times, to the second (or to the millisecond or microsecond where a cell has
    fractions of a second); and whether they are read in UTC. Times with a UTC offset (+01:00,
    Z) are read as UTC, so that the hour a clock goes back is two hours, not one hour twice;
    but where every one of them lies at the same time of day (dates: daily, weekly, monthly
    data, as pandas writes them with a time zone), as the dates they name, so that a summer
    offset moves no day into the one before. An empty cell is an error, not a time that sorts
    last."""
    utc = False
    try:
        times = np.array([float(c) for c in cells])
    except ValueError:
        times, utc = iso_times(cells, where)
    missing = np.flatnonzero(np.isnat(times) if times.dtype.kind == "M" else np.isnan(times))
    if missing.size:
        raise RnnkitError(f"{where}, line {missing[0] + 2}: the time cell is empty; give every "
                          "row its time")
    return times, utc


def iso_times(cells: list[str], where: str) -> tuple[np.ndarray, bool]:
    """ISO time cells as datetime64, to the second where no cell has fractions of one, and
    whether they are read in UTC (`parse_times`)."""
    parsed = [iso_time(c, where, i) for i, c in enumerate(cells)]
    times, offsets = np.array([t for t, _, _ in parsed]), [o for _, o, _ in parsed]
    if any(offsets) and not all(offsets):
        i, j = offsets.index(True), offsets.index(False)
        raise RnnkitError(f"{where}: line {i + 2} gives its time a UTC offset and line {j + 2} "
                          "does not; give every time with its offset, or none")
    local = np.array([t for _, _, t in parsed])
    of_day = local - local.astype("datetime64[D]")
    utc = bool(offsets and offsets[0]) and not (of_day == of_day[0]).all()
    times = times if utc else local  # dates keep their day; times of day are read in UTC
    ticks = (times - times.astype("datetime64[s]")).astype(np.int64)  # microseconds
    unit = "s" if not ticks.any() else "ms" if not (ticks % 1000).any() else "us"
    return times.astype(f"datetime64[{unit}]"), utc


def iso_time(cell: str, where: str, i: int) -> tuple[np.datetime64, bool, np.datetime64]:
    """One ISO time cell (line i + 2) as datetime64[us], in UTC where it has an offset (NaT if
    the cell is empty), whether it had one, and the time as written, without its offset."""
    text = cell.strip().replace(" ", "T")
    if not text:
        return np.datetime64("NaT", "us"), False, np.datetime64("NaT", "us")
    match = ISO_OFFSET.fullmatch(text)
    try:
        if match is None and not ISO_DAY.fullmatch(text):  # NumPy reads 20240209 as a year
            raise ValueError(text)
        if match is None or not match[2]:
            written = np.datetime64(text).astype("datetime64[us]")
            return written, False, written
        local, offset = np.datetime64(match[1]).astype("datetime64[us]"), match[2]
    except ValueError:
        raise RnnkitError(f"{where}, line {i + 2}: the time {cell.strip()!r} is not an ISO date; "
                          "give ISO dates (2024-01-31, 2024-01-31T12:30 or "
                          "2024-01-31T12:30:00+01:00) or numbers") from None
    if offset == "Z":
        return local, True, local
    digits = offset[1:].replace(":", "")
    minutes = int(digits[:2]) * 60 + int(digits[2:] or 0)
    return local - (1 if offset[0] == "+" else -1) * np.timedelta64(minutes, "m"), True, local


def month_place(times: np.ndarray) -> tuple[str, np.timedelta64] | None:
    """Where in its month every one of the datetimes lies: ("start", the time since the month's
    start) for the same day of every month, ("end", the time to the next month's start) for
    month ends (01-31, 02-29, 03-31, as pandas dates them); None where neither holds."""
    months = times.astype("datetime64[M]")
    since = times - months.astype(times.dtype)
    if (since == since[0]).all():
        return "start", since[0]
    until = (months + 1).astype(times.dtype) - times
    return ("end", until[0]) if (until == until[0]).all() else None


def month_steps(times: np.ndarray) -> int | None:
    """The step in months of evenly spaced datetimes at one place in their months
    (`month_place`): monthly, quarterly and yearly data; or None."""
    if len(times) < 2:
        return None
    steps, unit = steps_between(times)
    return int(steps[0]) if unit == "months" and (steps == steps[0]).all() and steps[0] >= 1 \
        else None


def future_times(times: np.ndarray, H: int, where: str) -> np.ndarray:
    """The H times after a series' last one, at its own step."""
    if len(times) < 2:
        raise RnnkitError(f"{where}: one time step is too few to know the step of the next ones")
    k = np.arange(1, H + 1)
    if times.dtype.kind == "M":
        months = month_steps(times)
        if months is not None:
            place, offset = month_place(times)
            ahead = times[-1].astype("datetime64[M]") + k * months  # (H,) months
            return ahead.astype(times.dtype) + offset if place == "start" else \
                (ahead + 1).astype(times.dtype) - offset
    step = np.diff(times) if times.dtype.kind == "M" else steps_between(times)[0]  # 0.1 apart
    if (step != step[0]).any() or not step[0] > np.zeros_like(step[0]):
        raise RnnkitError(f"{where}: the times are not evenly spaced, so the next ones are "
                          "unknown; give every step of the series, in order")
    return times[-1] + k * step[0]


def steps_between(times: np.ndarray) -> tuple[np.ndarray, str]:
    """The steps between consecutive times (at least two): in months for datetimes at one place
    in their months (`month_place`), else in seconds for datetimes, else as numbers."""
    if times.dtype.kind != "M":  # numbers: equal steps up to float rounding (0.1, 0.2, 0.3)
        return np.round(np.diff(times), 9), ""
    if month_place(times) is not None:
        return np.diff(times.astype("datetime64[M]").astype(np.int64)), "months"
    return np.diff(times) / np.timedelta64(1, "s"), "seconds"


def usual_step(times: np.ndarray) -> tuple[float, int | None]:
    """The most common step between consecutive times (at least two), in `steps_between`'s
    unit, and the index of the first step that differs from it (None when evenly spaced)."""
    steps = steps_between(times)[0]
    values, counts = np.unique(steps, return_counts=True)
    usual = values[counts.argmax()]
    off = np.flatnonzero(steps != usual)
    return float(usual), int(off[0]) if off.size else None


def step_words(step: float, unit: str) -> str:
    """'3 months', '2 days', '30 minutes', '1.5': a step in `steps_between`'s unit, for people."""
    if unit == "seconds":
        for size, name in ((86400, "days"), (3600, "hours"), (60, "minutes"), (1, "seconds")):
            if step % size == 0 or size == 1:
                step, unit = step / size, name
                break
    return f"{step:g} {unit[:-1] if step == 1 else unit}".strip()


def infer_season(times: np.ndarray | None) -> int:
    """A season length from the usual spacing of datetimes (`usual_step`): 24 hourly, 48
    half-hourly, 7 daily, 52 weekly, 12 monthly, 4 quarterly; 1 otherwise."""
    if times is None or times.dtype.kind != "M" or len(times) < 2:
        return 1
    step = int(usual_step(times)[0])
    return {1: 12, 3: 4}.get(step, 1) if steps_between(times)[1] == "months" else \
        SEASONS.get(step, 1)


def calendar_features(times: np.ndarray, names: list[str]) -> np.ndarray:
    """(T,) datetimes -> (T, 2 * len(names)): sin and cos of each feature's phase."""
    out = []
    for name in names:
        if name == "hour":
            phase = (times - times.astype("datetime64[D]")).astype("timedelta64[s]") \
                .astype(np.int64) / 3600
        elif name == "weekday":  # 1970-01-01 was a Thursday: Monday is 0
            phase = (times.astype("datetime64[D]").astype(np.int64) + 3) % 7
        else:
            phase = times.astype("datetime64[M]").astype(np.int64) % 12
        angle = 2 * np.pi * phase / PERIODS[name]
        out += [np.sin(angle), np.cos(angle)]
    return np.stack(out, axis=1).astype(np.float32) if out else np.zeros((len(times), 0),
                                                                          np.float32)


LARGEST = 1e18  # the largest |value| read: float32 training squares changes of this size


def float_cells(path: Path, header: list[str], rows: list[list[str]], name: str,
                role: str, option: str | None) -> np.ndarray:
    """One column as float64, NaN where a cell is empty; a column that is absent or a cell that
    is not a number is an error. `option`: the training option that names the column, or None
    for a file read by a trained run (which reads the columns it was trained on)."""
    if name not in header:
        fix = f"give {option} with some of the columns" if option else \
            "the run reads it; add it to the file, which has the columns"
        raise RnnkitError(f"{path}: no column {name!r} ({role}); {fix} {header}")
    k = header.index(name)
    out = np.empty(len(rows))
    for i, row in enumerate(rows):
        cell = row[k].strip()
        try:
            out[i] = float(cell) if cell else np.nan
        except ValueError:
            raise RnnkitError(f"{path}: line {i + 2}, column {name!r} is not a number ({cell!r})"
                              f"{not_a_number_hint(header, cell, option)}") from None
        if cell and not np.isfinite(out[i]):
            raise RnnkitError(f"{path}: line {i + 2}, column {name!r} is not finite ({cell!r})")
        if abs(out[i]) > LARGEST:
            raise RnnkitError(f"{path}: line {i + 2}, column {name!r} holds {cell}, beyond the "
                              f"{LARGEST:.0e} that training in float32 can hold; rescale the "
                              "column (divide it by a power of ten)")
    return out


def not_a_number_hint(header: list[str], cell: str, option: str | None) -> str:
    """What most often makes a cell not a number, as the end of the error's line."""
    # (a file separated by ';', tabs or '|' is refused by `read_table` before any cell is read)
    if cell.strip().lower() in ("na", "n/a", "#n/a", "null", "none", "-", "?"):
        return "; a missing value is an empty cell here: leave it empty, or fill it in"
    if re.fullmatch(r"-?\d{1,3}(,\d{3})+(\.\d+)?", cell.strip()):
        return "; write numbers without thousands separators (1234.5, not 1,234.5)"
    if "," in cell:
        return "; write numbers with a decimal point (20.5, not 20,5)"
    if option == "--columns":  # a column of names or dates read as a target by default
        return ("; if it names each row's series or gives its time, say so with --id-column or "
                "--time-column, or name the columns to forecast with --columns")
    return ""


def read_panel(path: str | os.PathLike, data: dict, future: int = 0) -> tuple[Panel, list[str]]:
    """The series of a CSV or .npz, read as the run's `data` section says, and the target
    columns (`data["columns"]` None: every column that has no other role).

    `future` > 0: each series may end with up to that many rows whose targets are empty (the
    steps to forecast), which must then give the known covariates; training files have none.
    """
    path = Path(path)
    if path.suffix.lower() == ".npz":
        return read_panel_npz(path, data)
    header, rows = read_table(path)
    id_column, time_column = data.get("id_column"), data.get("time_column")
    trained = future > 0  # a file read by a trained run: its columns are the run's
    for name, option, role in ((id_column, "--id-column", "naming each row's series"),
                               (time_column, "--time-column", "holding each row's time")):
        if name is not None and name not in header:
            fix = "the run reads it; add it to the file, which has the columns" \
                if trained else f"give {option} NAME with one of the columns"
            raise RnnkitError(f"{path}: no column {name!r} {role}; {fix} {header}")
    past, known = list(data.get("past") or []), list(data.get("known") or [])
    taken = {id_column, time_column, *past, *known}
    columns = data.get("columns") or [h for h in header if h not in taken]
    if not columns:
        raise RnnkitError(f"{path}: no column is left to forecast; give --columns")
    clash = sorted(set(columns) & taken)
    if clash:
        raise RnnkitError(f"{path}: {clash} cannot be both forecast and an input; each column "
                          "has one role (--columns, --past, --known, --id-column, --time-column)")
    def column(name: str, role: str, option: str) -> np.ndarray:
        return float_cells(path, header, rows, name, role, None if trained else option)

    y = np.stack([column(c, "to forecast", "--columns") for c in columns], 1)  # (rows, F)
    p = np.stack([column(c, "a past covariate", "--past") for c in past], 1) if past else \
        np.zeros((len(rows), 0))
    k = np.stack([column(c, "a known covariate", "--known") for c in known], 1) if known else \
        np.zeros((len(rows), 0))
    groups: dict[str, list[int]] = {}
    i_id = header.index(id_column) if id_column else None
    if i_id is None and trained:  # a column of names, unread, may hold several series' ids
        named = [h for k, h in enumerate(header) if h not in {*columns, *taken} and any(
            r[k].strip() and not is_number(r[k]) for r in rows)]
        if named:
            warnings.warn(f"{path}: this run reads no id column (it was trained on one series "
                          f"or an .npz), so every row is one series and {named[0]!r} is not "
                          "read; give each series in a file of its own, or an .npz",
                          stacklevel=2)
    for i, row in enumerate(rows):
        if i_id is not None and not row[i_id].strip():
            raise RnnkitError(f"{path}: line {i + 2}: the {id_column!r} cell is empty, so the row "
                              "belongs to no series; fill it in or drop the row")
        groups.setdefault(row[i_id].strip() if i_id is not None else path.stem, []).append(i)
    times, utc = parse_times([r[header.index(time_column)] for r in rows], str(path)) \
        if time_column else (None, False)
    calendar = list(data.get("calendar") or [])
    if calendar and times is None:
        raise RnnkitError(f"{path}: --calendar needs --time-column naming a column of dates")
    if calendar and times.dtype.kind != "M":
        raise RnnkitError(f"{path}: the time column {time_column!r} holds numbers, not dates, "
                          "and --calendar reads hours, weekdays and months from dates; write "
                          "its times as dates (2024-01-31 or 2024-01-31T14:00), or drop "
                          "--calendar")
    panel = Panel([], [], [], [], [], [], utc)
    uneven = None  # the first series whose times are not evenly spaced: (where, its rows)
    for key, index in groups.items():
        index = np.array(index)
        where = f"{path}, series {key!r}" if id_column else str(path)
        if times is not None:
            index = index[np.argsort(times[index], kind="stable")]
            twice = np.flatnonzero(times[index][1:] == times[index][:-1])
            if twice.size:
                a, b = sorted(index[twice[0]:twice[0] + 2] + 2)
                raise RnnkitError(f"{where}: lines {a} and {b} have the same time "
                                  f"{times[index[twice[0]]]}; give one row per time step")
            if uneven is None and len(index) > 2 and usual_step(times[index])[1] is not None:
                uneven = where, index
        observed = ~np.isnan(y[index]).all(1)
        n_future = len(index) - (np.flatnonzero(observed)[-1] + 1 if observed.any() else 0)
        gaps = np.flatnonzero(np.isnan(y[index[:len(index) - n_future]]).any(1))
        if future and 0 < n_future != future:
            raise RnnkitError(f"{where}: {n_future} rows to forecast (target empty); give none "
                              f"or all {future} next rows")
        if gaps.size or (n_future and not future):
            line = index[gaps[0] if gaps.size else len(index) - n_future] + 2
            column = columns[int(np.isnan(y[line - 2]).argmax())]
            raise RnnkitError(f"{path}: line {line}, column {column!r} is missing; fill it in or "
                              "drop the row (only rows to forecast, after a series' end, leave "
                              "the targets empty)")
        if future and known and n_future == 0:
            raise RnnkitError(f"{where}: the run reads known covariates {known}; add the next "
                              f"{future} rows of each series with their values and the targets "
                              "empty")
        T = len(index) - n_future
        for name, values, needed in (("past", p, index[:T]), ("known", k, index)):
            bad = np.flatnonzero(np.isnan(values[needed]).any(1))
            if bad.size:
                raise RnnkitError(f"{path}: line {needed[bad[0]] + 2}: a {name} covariate is "
                                  "missing; fill it in (every row needs its value)")
        known_rows = k[index].astype(np.float32)  # (T [+ H], K)
        if calendar:
            all_times = times[index]
            if future and not n_future:
                all_times = np.concatenate([all_times, future_times(all_times, future, where)])
                known_rows = np.zeros((len(all_times), 0), np.float32)  # no known columns
            known_rows = np.concatenate([known_rows, calendar_features(all_times, calendar)], 1)
        panel.ids.append(key)
        panel.values.append(y[index[:T]].astype(np.float32))
        panel.past.append(p[index[:T]].astype(np.float32))
        panel.known.append(known_rows)
        panel.times.append(None if times is None else times[index[:T]])
        panel.ahead.append(times[index[T:]] if times is not None and n_future else None)
    if uneven:
        warn_uneven(*uneven, times)
    return panel, columns


def is_number(cell: str) -> bool:
    """Whether a CSV cell reads as a number (as `float_cells` reads it)."""
    try:
        float(cell)
    except ValueError:
        return False
    return True


def warn_uneven(where: str, index: np.ndarray, times: np.ndarray) -> None:
    """One line on a series whose times skip or bunch: its rows are still read as one step
    apart, which is right for trading days and wrong for a missing row."""
    usual, i = usual_step(times[index])
    steps, unit = steps_between(times[index])
    a, b = index[i], index[i + 1]
    warnings.warn(f"{where}: lines {a + 2} and {b + 2} are {step_words(steps[i], unit)} apart "
                  f"({times[a]} to {times[b]}), most steps {step_words(usual, unit)}; each row "
                  "is read as one step, so fill in any missing rows", stacklevel=2)


def read_panel_npz(path: Path, data: dict) -> tuple[Panel, list[str]]:
    """Series from an .npz: x [N, T_max, F] zero-padded, lengths [N], optional ids [N]."""
    if data.get("past") or data.get("known") or data.get("calendar"):
        raise RnnkitError(f"{path}: an .npz holds targets only; give covariates in a CSV")
    try:
        with open_npz(path) as z:
            if "x" not in z.files or "lengths" not in z.files:
                raise RnnkitError(f"{path}: the .npz lacks x or lengths; it needs x [N, T, F] "
                                  "(or [N, T]) and lengths [N], and may hold ids [N]")
            x, lengths = z["x"], z["lengths"]
            ids = z["ids"] if "ids" in z.files else None
    except RnnkitError:
        raise
    except (OSError, EOFError, ValueError, zipfile.BadZipFile) as e:
        raise RnnkitError(f"{path}: not a readable .npz file without Python objects ({e})") \
            from None
    if x.ndim == 2:
        x = x[..., None]  # (N, T, 1)
    if x.ndim != 3 or not np.issubdtype(x.dtype, np.number) or len(x) == 0:
        raise RnnkitError(f"{path}: x must be a numeric [N, T_max, F] array, got shape "
                          f"{x.shape} of {x.dtype}")
    N, T = x.shape[:2]
    if lengths.shape != (N,) or not np.issubdtype(lengths.dtype, np.integer) or \
            lengths.min() < 1 or lengths.max() > T:
        raise RnnkitError(f"{path}: lengths must be {N} integers in [1, {T}]")
    if ids is not None and (ids.shape != (N,) or len(set(ids.tolist())) != N):
        raise RnnkitError(f"{path}: ids must be {N} different names")
    values = [x[i, :n].astype(np.float32) for i, n in enumerate(lengths)]
    for i, v in enumerate(values):
        if not np.isfinite(v).all():
            raise RnnkitError(f"{path}: series {i} holds NaN or infinite values within its "
                              "length; fill them in")
        if len(v) and np.abs(v).max() > LARGEST:
            raise RnnkitError(f"{path}: series {i} holds values beyond the {LARGEST:.0e} that "
                              "training in float32 can hold; rescale them (divide by a power "
                              "of ten)")
    names = [str(v) for v in ids] if ids is not None else [str(i) for i in range(N)]
    F = x.shape[2]
    columns = data.get("columns") or (["y"] if F == 1 else [f"y{j}" for j in range(F)])
    if len(columns) != F:
        raise RnnkitError(f"{path}: x has {F} features per step; the run forecasts {columns}")
    empty = [np.zeros((len(v), 0), np.float32) for v in values]
    return Panel(names, values, empty, list(empty), [None] * N), columns


# --- windows ----------------------------------------------------------------------------------

def window_scale(values: np.ndarray, origins: np.ndarray, context: np.ndarray) -> np.ndarray:
    """(n, F): the mean |y_t - y_t-1| over each window, floored so a flat window keeps a scale."""
    steps = np.abs(np.diff(values, axis=0))  # (T - 1, F)
    total = np.concatenate([np.zeros((1, values.shape[1])), np.cumsum(steps, 0)])  # (T, F)
    n = np.maximum(context - 1, 1)[:, None]
    s = (total[origins - 1] - total[origins - context]) / n  # (n, F)
    floor = np.maximum(1e-3 * np.abs(values[origins - 1]), 1e-6)
    return np.maximum(s, floor).astype(np.float32)


def scaleless(enc: dict[str, np.ndarray], targets: np.ndarray, data: dict) -> np.ndarray:
    """(n,): the windows no scale can read, in a run of window scales (`data["scale"]`; a
    run's one scale reads every window): a column that never moved within its window (its
    scale is `window_scale`'s floor) and moves after the origin.
    In its window's units such a change is unbounded (an intermittent series' first sale after
    48 zeros: 3 / 1e-6), so one such window outweighed every other window's loss (1e11) and its
    interval's calibration; training, validation and calibration leave them out. A forecast
    from such a window is the seasonal naive one, as the model's outputs are multiplied by the
    floor."""
    n, F = enc["last"].shape
    if data.get("scale") != "window":
        return np.zeros(n, bool)
    flat = (enc["inputs"][..., :F] == 0).all(1)  # (n, F): every step read equals the last
    moves = (targets.reshape(n, -1, F) != 0).any(1)  # (n, F)
    return (flat & moves).any(1)


def encode(panel: Panel, origins: list[np.ndarray], data: dict,
           ) -> dict[str, np.ndarray]:
    """The model's inputs at every origin of every series, with what `decode` needs.

    origins[i] holds forecast origins o of series i (its first forecast step; 1 <= o <= T_i):
    the window reads steps [max(0, o - W), o). Returns inputs (n, L, F_in) right-padded,
    lengths (n,), last (n, F), scale (n, F), base (n, H, F): the seasonal naive forecast the
    outputs are read from, series (n,) and origin (n,).
    """
    W, H = data["window"], data["horizon"]
    future = has_future(data)
    L = W + (H if future else 0)
    F = len(data["columns"])
    std = np.asarray(data.get("std") or [1.0] * F, np.float32)
    m = data.get("season", 1)
    out: dict[str, list] = {k: [] for k in ("inputs", "lengths", "last", "scale", "base",
                                            "series", "origin")}
    for i, o in enumerate(origins):
        o = np.asarray(o, dtype=np.int64)
        if not len(o):
            continue
        V, P, K = panel.values[i], panel.past[i], panel.known[i]
        c = np.minimum(W, o)  # (n,) context lengths
        k = np.arange(L)[None, :]
        is_ctx = k < c[:, None]  # (n, L)
        is_fut = (k >= c[:, None]) & (k < c[:, None] + H) if future else np.zeros_like(is_ctx)
        ctx = np.clip(o[:, None] - c[:, None] + k, 0, len(V) - 1)  # (n, L) step of each position
        ahead = np.clip(o[:, None] + k - c[:, None], 0, len(K) - 1)
        last = V[o - 1]  # (n, F)
        scale = window_scale(V, o, c) if data.get("scale") == "window" else \
            np.broadcast_to(std, last.shape)
        x = np.where(is_ctx[..., None], (V[ctx] - last[:, None]) / scale[:, None], 0.0)
        parts = [x, np.where(is_ctx[..., None], P[ctx], 0.0)]
        if K.shape[1]:
            parts.append(np.where(is_ctx[..., None], K[ctx],
                                  np.where(is_fut[..., None], K[ahead], 0.0)))
        if future:
            parts.append(is_ctx[..., None].astype(np.float32))
        out["inputs"].append(np.concatenate(parts, axis=2).astype(np.float32))  # (n, L, F_in)
        out["lengths"].append(c + (H if future else 0))
        out["last"].append(last)
        out["scale"].append(np.asarray(scale, np.float32))
        # The seasonal naive forecast, as `forecast_scores` makes it, where the window holds a
        # season (an exported model reads the window alone); else the last value.
        h = np.arange(H)[None, :]
        base = np.where((o[:, None] > m) & (m < W), o[:, None] - m + h % m, o[:, None] - 1)
        out["base"].append(V[base])  # (n, H, F)
        out["series"].append(np.full(len(o), i))
        out["origin"].append(o)
    if not out["inputs"]:
        raise RnnkitError("no series has a forecast origin to read")
    return {k: np.concatenate(v) for k, v in out.items()}


def targets(panel: Panel, enc: dict[str, np.ndarray], H: int) -> np.ndarray:
    """(n, H * F): the H steps after each origin, in the window's units."""
    y = truth(panel, enc, H)  # (n, H, F)
    return ((y - enc["base"]) / enc["scale"][:, None]).reshape(len(y), -1).astype(np.float32)


def truth(panel: Panel, enc: dict[str, np.ndarray], H: int) -> np.ndarray:
    """(n, H, F): the H steps after each origin, in the series' units."""
    return np.stack([panel.values[i][o:o + H] for i, o in zip(enc["series"], enc["origin"],
                                                              strict=True)])


def decode(outputs: np.ndarray, enc: dict[str, np.ndarray], H: int, levels: list[float],
           widen: list[float] | np.ndarray | None = None,
           offsets: list[float] | None = None) -> np.ndarray:
    """Model outputs (n, H * F * Q) -> (n, H, F, Q) in the series' units, each interval widened
    by its calibration (`intervals.widened`) and the quantiles sorted so they never cross."""
    n, F = len(outputs), enc["last"].shape[1]
    y = widened(outputs.reshape(n, H, F, max(1, len(levels))), levels, widen, offsets)
    y = y * enc["scale"][:, None, :, None] + enc["base"][..., None]
    return np.sort(y, axis=-1)


def split_origins(lengths: list[int], H: int, origins: int = 1, val_origins: int = 1,
                  test_fraction: float | None = None, val_fraction: float = 0.1,
                  ) -> tuple[list[np.ndarray], list[np.ndarray], list[np.ndarray]]:
    """Train, validation and test origins of series of the given lengths, in time order.

    By default the test holds the last `origins` horizons of every series (origins H apart) and
    validation the `val_origins` horizons before them; with `test_fraction`, the last fraction
    of each series is the test part and the `val_fraction` before it the validation part, with
    an origin at every step (rolling). Training windows' targets end where validation begins,
    so nothing held out is ever a target in training; every test window reads at least one
    step, and every training and validation window two: a window's scale is its mean step
    change (`window_scale`), which one step cannot measure, and the floor it would take instead
    made such windows' targets thousands of units and their loss most of the training loss (M1:
    181 of 1,279 windows).
    """
    train, val, test = [], [], []
    for T in lengths:
        if test_fraction is None:
            n_test, n_val, stride = origins * H, val_origins * H, H
        else:
            n_test, n_val, stride = int(T * test_fraction), int(T * val_fraction), 1
        end = T - n_test  # the first test target
        test.append(np.arange(end, T - H + 1, stride))
        val.append(np.arange(max(2, end - n_val), end - H + 1, stride) if n_val else
                   np.zeros(0, np.int64))
        train.append(np.arange(2, end - n_val - H + 1))
    return train, val, test
