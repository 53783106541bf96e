"""Numeric series from files: CSV columns and labelled `.npz` arrays.

    CSV      a header row, then one row per time step; the chosen columns are the features F,
             so one column is a univariate series [T, 1] and several a multivariate one [T, F].
             For classification, an `id` column groups rows into sequences and a `label` column
             names each sequence's class.
    .npz     x (float, [N, T_max, F], zero-padded), lengths (int, [N]), y (int or string, [N]);
             read with allow_pickle=False, so a file cannot run code.

Forecasting's windows, scaling and seasonal naive baseline are `rnnkit.panel`'s and
`rnnkit.forecast_scores`'.
"""

from __future__ import annotations

import contextlib
import csv
import os
import zipfile
from pathlib import Path

import numpy as np

from .errors import RnnkitError


def read_table(path: str | os.PathLike) -> tuple[list[str], list[list[str]]]:
    """Header and rows of a CSV file, checked to be rectangular and non-empty."""
    path = Path(path)
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:  # Excel writes a BOM
            table = list(csv.reader(f))
        while table and not table[-1]:  # trailing blank lines
            table.pop()
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise RnnkitError(f"{path}: not a readable CSV file ({e})") from None
    while len(table) > 1 and not "".join(table[-1]).strip():  # rows a spreadsheet cleared: ",,"
        table.pop()
    if len(table) < 2:
        raise RnnkitError(f"{path}: the CSV needs a header row and at least one data row")
    header = [h.strip() for h in table[0]]
    if len(header) == 1 and any(sep in header[0] for sep in ";\t|"):
        sep = next(s for s in ";\t|" if s in header[0])
        raise RnnkitError(f"{path}: the cells are separated by {sep!r}; rnnkit reads CSV "
                          "separated by commas (with a decimal point): save it so")
    rows = [row or [""] for row in table[1:]]  # a blank line is one empty cell
    for i, row in enumerate(rows, start=2):
        if len(row) != len(header):
            raise RnnkitError(f"{path}: line {i} has {len(row)} cells but the header has "
                              f"{len(header)}")
    # A column without a name: the commas that end every line are dropped; a column of values
    # (the row numbers pandas writes by default) would be read as data, so it is refused.
    for j in reversed(range(len(header))):
        if not header[j] and all(not row[j].strip() for row in rows):
            del header[j]
            for row in rows:
                del row[j]
        elif not header[j]:
            raise RnnkitError(f"{path}: column {j + 1} has no name in the header (the row "
                              "numbers pandas' to_csv writes?); name it, or write the file "
                              "without it (to_csv(..., index=False))")
    twice = sorted({h for h in header if header.count(h) > 1})
    if twice:  # the second would never be read: every lookup finds the first
        raise RnnkitError(f"{path}: the header names {twice[0]!r} twice; give every column its "
                          "own name")
    return header, rows


def column_index(path: Path, header: list[str], name: str) -> int:
    if name not in header:
        raise RnnkitError(f"{path}: no column {name!r}; the columns are {header}")
    return header.index(name)


def numeric_columns(path: Path, header: list[str], rows: list[list[str]],
                    columns: list[str]) -> np.ndarray:
    """The named columns as float32 (T, F); a missing or non-numeric cell is an error."""
    index = [column_index(path, header, c) for c in columns]
    out = np.empty((len(rows), len(index)), dtype=np.float32)
    for i, row in enumerate(rows):
        for j, k in enumerate(index):
            cell = row[k].strip()
            try:
                value = float(cell)
            except ValueError:
                value = float("nan")
            if not np.isfinite(value):
                what = "is missing" if not cell else f"is not a number ({cell!r})"
                raise RnnkitError(f"{path}: line {i + 2}, column {header[k]!r} {what}")
            out[i, j] = value
    return out


def read_series(path: str | os.PathLike, columns: list[str] | None = None,
                ) -> tuple[np.ndarray, list[str]]:
    """A CSV's columns as one series (T, F), and their names (default: every column)."""
    path = Path(path)
    header, rows = read_table(path)
    columns = columns or header
    return numeric_columns(path, header, rows, columns), list(columns)


def read_labelled_csv(path: str | os.PathLike, columns: list[str] | None = None,
                      id_column: str = "id", label_column: str | None = "label",
                      ) -> tuple[list[np.ndarray], list[str], list[str], list[str]]:
    """Sequences grouped by `id_column` (in order of first appearance), their labels ("" with
    `label_column` None), their ids, and the feature column names (default: every column but
    the id and the label)."""
    path = Path(path)
    header, rows = read_table(path)
    for name, option, role in ((id_column, "--id-column", "naming each row's sequence"),
                               (label_column, "--label-column", "holding each sequence's class")):
        if name is not None and name not in header:
            fix = f"give {option} NAME with one of the columns {header}" if label_column else \
                f"the run reads its sequences from a column {name!r}; add it"  # predicting
            raise RnnkitError(f"{path}: no column {name!r} {role}; {fix}")
    i_id = column_index(path, header, id_column)
    i_label = None if label_column is None else column_index(path, header, label_column)
    clash = [c for c in columns or [] if c in (id_column, label_column)]
    if clash:  # the label read as a feature: a perfect score that prediction cannot repeat
        raise RnnkitError(f"{path}: --columns names {clash[0]!r}, the "
                          f"{'id' if clash[0] == id_column else 'label'} column, as a feature; "
                          "drop it from --columns")
    columns = columns or [h for h in header if h not in (id_column, label_column)]
    if not columns:
        raise RnnkitError(f"{path}: no feature columns besides {id_column!r} and "
                          f"{label_column!r}")
    values = numeric_columns(path, header, rows, columns)  # (rows, F)
    groups: dict[str, list[int]] = {}
    labels: dict[str, str] = {}
    for i, row in enumerate(rows):
        key = row[i_id].strip()
        label = "" if i_label is None else row[i_label].strip()
        if not key:
            raise RnnkitError(f"{path}: line {i + 2}: the {id_column!r} cell is empty, so the "
                              "row belongs to no sequence; fill it or drop the row")
        if i_label is not None and not label:
            raise RnnkitError(f"{path}: line {i + 2}: sequence {key!r} has no "
                              f"{label_column!r}; fill it or drop its rows")
        if labels.setdefault(key, label) != label:
            raise RnnkitError(f"{path}: line {i + 2}: sequence {key!r} has two labels "
                              f"({labels[key]!r} and {label!r})")
        groups.setdefault(key, []).append(i)
    sequences = [values[index] for index in groups.values()]
    return sequences, [labels[k] for k in groups], list(groups), list(columns)


@contextlib.contextmanager
def open_npz(path: Path):
    """`np.load` of an .npz archive (no Python objects) in a `with` block; a file that is no
    archive (one array saved by np.save, a copy cut short) is one RnnkitError. The file is
    opened here and closed whatever happens (NumPy leaves it open when the archive is cut)."""
    with open(path, "rb") as f:
        try:
            archive = np.load(f, allow_pickle=False)
        except (EOFError, ValueError, zipfile.BadZipFile) as e:
            if "pickle" in str(e):
                raise
            raise RnnkitError(f"{path}: not a readable .npz file ({e})") from None
        if not isinstance(archive, np.lib.npyio.NpzFile):
            raise RnnkitError(f"{path}: not an .npz archive but one array (np.save's .npy); "
                              "save the arrays together with np.savez")
        with archive:
            yield archive


def read_npz(path: str | os.PathLike, labelled: bool = True,
             ) -> tuple[list[np.ndarray], list[str]]:
    """Sequences and labels of an `.npz` holding x [N, T_max, F], lengths [N] and y [N]; not
    `labelled` (sequences to predict), y may be left out (the labels are then empty)."""
    path = Path(path)
    try:
        with open_npz(path) as z:
            need = ("x", "lengths", "y") if labelled else ("x", "lengths")
            missing = [k for k in need if k not in z.files]
            if missing:
                raise RnnkitError(f"{path}: the .npz lacks {missing}; it needs x [N, T, F], "
                                  f"lengths [N]{' and y [N]' if labelled else ''}")
            x, lengths = z["x"], z["lengths"]
            y = z["y"] if "y" in z.files else None
    except RnnkitError:
        raise
    except ValueError as e:
        if "pickle" in str(e):
            raise RnnkitError(f"{path}: the .npz holds Python objects, which are never "
                              "unpickled; store y as int or fixed-width string arrays") from None
        raise RnnkitError(f"{path}: not a readable .npz file ({e})") from None
    except (OSError, EOFError, zipfile.BadZipFile) as e:
        raise RnnkitError(f"{path}: not a readable .npz file ({e})") from None
    if x.ndim != 3 or not np.issubdtype(x.dtype, np.number):
        raise RnnkitError(f"{path}: x must be a numeric [N, T_max, F] array, got shape "
                          f"{x.shape} of {x.dtype}")
    if not x.shape[2]:
        raise RnnkitError(f"{path}: x has no features (shape {x.shape}); a step needs at least "
                          "one value, [N, T_max, 1] for one")
    N, T = x.shape[:2]
    if lengths.shape != (N,) or not np.issubdtype(lengths.dtype, np.integer):
        raise RnnkitError(f"{path}: lengths must be {N} integers, got shape {lengths.shape} "
                          f"of {lengths.dtype}")
    if y is not None and (y.shape != (N,) or not (np.issubdtype(y.dtype, np.integer)
                                                  or y.dtype.kind == "U")):
        raise RnnkitError(f"{path}: y must be {N} int or string labels, got shape {y.shape} "
                          f"of {y.dtype}")
    if N and (lengths.min() < 1 or lengths.max() > T):
        raise RnnkitError(f"{path}: lengths must lie in [1, {T}], got {lengths.min()} to "
                          f"{lengths.max()}")
    x = x.astype(np.float32)
    if not np.isfinite(x).all():
        raise RnnkitError(f"{path}: x holds NaN or infinite values")
    labels = [str(v) for v in y] if y is not None else [""] * N
    return [x[i, :n] for i, n in enumerate(lengths)], labels


def pad(sequences: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Sequences (T_i, F) -> zero-padded (N, T_max, F) float32 and lengths (N,) int64."""
    lengths = np.array([len(s) for s in sequences], dtype=np.int64)
    x = np.zeros((len(sequences), int(lengths.max()), sequences[0].shape[1]), dtype=np.float32)
    for i, s in enumerate(sequences):
        x[i, :len(s)] = s
    return x, lengths
