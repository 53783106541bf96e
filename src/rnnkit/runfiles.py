"""Run files and atomic writes: how rnnkit writes a file so that a crash never leaves half of one.

Every file rnnkit writes whole (checkpoints, JSON, token files, plots, feature caches) goes
through `atomic_write` (the logs that grow, metrics.csv and samples.txt, are appended to, and
the run lock is written in place): the bytes go to a temporary name in the same directory, are
flushed to disk, and the temporary file is renamed over the target, then the directory itself
is flushed. A crash at any moment leaves either the previous complete file or the new complete
one.

The temporary names follow one scheme, `temp_name`:

    DIR/.NAME.PID.rnnkit.tmp        e.g. runs/x/.last.safetensors.4711.rnnkit.tmp

so that `is_temp_name` recognises rnnkit's own leftovers and nothing else: a user's `notes.tmp`
in the same folder is never taken for one.

    with atomic_write(path) as f:      # a binary file object
        f.write(data)
    write_json_atomic(path, {"a": 1})
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from .errors import RnnkitError

TEMP_SUFFIX = ".rnnkit.tmp"
TEMP_PATTERN = re.compile(r"\..+\.\d+" + re.escape(TEMP_SUFFIX))


def temp_name(path: Path) -> Path:
    """The temporary file `path` is written to before it is renamed into place."""
    path = Path(path)
    return path.with_name(f".{path.name}.{os.getpid()}{TEMP_SUFFIX}")


def is_temp_name(name: str) -> bool:
    """Whether a file name is one of rnnkit's temporary names (see `temp_name`)."""
    return TEMP_PATTERN.fullmatch(name) is not None


def remove_temp_files(folder: Path, keep_writers: bool = False) -> list[Path]:
    """Delete rnnkit's own temporary files in `folder` (not its sub-folders); return them.

    Call it only while no other rnnkit process can be writing there (e.g. under the run lock);
    with `keep_writers`, where one might be (`rnnkit prepare`), the files another rnnkit
    process is writing now are left to it (`writer`).
    """
    removed = []
    with contextlib.suppress(OSError):
        for entry in Path(folder).iterdir():
            if is_temp_name(entry.name) and entry.is_file() \
                    and not (keep_writers and writer(entry.name)):
                entry.unlink(missing_ok=True)
                removed.append(entry)
    return removed


def writer(name: str) -> int | None:
    """The pid of another living rnnkit process writing the temporary file `name`, else None.
    The pid in the name may have been given to another program since: where /proc shows the
    process's command line, it must mention rnnkit."""
    try:
        pid = int(name[:-len(TEMP_SUFFIX)].rsplit(".", 1)[1])
        if pid <= 0 or pid == os.getpid():
            return None  # this process is not writing it now: it asked
        os.kill(pid, 0)
    except (ValueError, OverflowError, IndexError, ProcessLookupError):
        return None
    except OSError:  # alive, another user's
        pass
    try:
        command = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return pid  # no /proc to ask: alive is all there is to go on
    return pid if b"rnnkit" in command else None


def fsync_dir(path: Path) -> None:
    """Make a rename inside `path` durable."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_write(path: Path) -> Iterator[BinaryIO]:
    """A binary file whose contents replace `path` only when the block ends without an error.

    On an error (disk full, an exception in the block) the temporary file is removed, `path` is
    left as it was, and the error propagates.
    """
    path = Path(path)
    tmp = staging_path(path)
    try:
        with open(tmp, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        move_into(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def staging_path(path: Path) -> Path:
    """Where the bytes for `path` are written first: beside it (`temp_name`), or, for a device
    or a pipe (nothing to rename over), in the system's temporary folder."""
    if path.exists() and not path.is_file() and not path.is_dir():
        return Path(tempfile.gettempdir()) / temp_name(path).name
    return temp_name(path)


def move_into(tmp: Path, path: Path) -> None:
    """Put the finished temporary file `tmp` in place of `path`: renamed over a file, copied
    into anything else that exists there (a device such as /dev/stdout, a pipe), which a
    rename would replace."""
    if not path.exists() or path.is_file() or path.is_dir():
        os.replace(tmp, path)
        return
    with open(tmp, "rb") as src, open(path, "wb") as dst:
        while chunk := src.read(1 << 20):
            dst.write(chunk)
    tmp.unlink()


def write_bytes_atomic(path: Path, data: bytes) -> None:
    """Write `data` to `path` atomically."""
    with atomic_write(path) as f:
        f.write(data)


def write_json_atomic(path: Path, data) -> None:
    """Write JSON (indented, UTF-8, with a final newline) to `path` atomically. A number that
    is not finite (an undefined MASE is NaN) is written as null: Python's NaN is not JSON, and
    other readers (JavaScript's JSON.parse, jq) refuse or misread it."""
    text = json.dumps(finite(data), indent=2, allow_nan=False)
    write_bytes_atomic(path, (text + "\n").encode("utf-8"))


def finite(data):
    """`data` with every float that is not finite replaced by None, in dicts, lists, tuples."""
    if isinstance(data, float):
        return data if math.isfinite(data) else None
    if isinstance(data, dict):
        return {k: finite(v) for k, v in data.items()}
    if isinstance(data, (list, tuple)):
        return [finite(v) for v in data]
    return data


# ---------------------------------------------------------------------------------------------
# The metrics log: a CSV that grows by whole rows and never keeps a row a resumed run redoes

METRICS_COLUMNS = ("step", "chars", "lr", "train_loss", "val_loss")


def append_metrics(path: Path, rows: list[dict]) -> None:
    """Append rows (dicts over METRICS_COLUMNS; "" for a blank cell) to the CSV at `path`,
    writing the header first into a new file, and flush them to disk."""
    if not rows:
        return
    lines = [",".join(cell(row[c]) for c in METRICS_COLUMNS) + "\n" for row in rows]
    new = not path.exists() or path.stat().st_size == 0
    try:
        with open(path, "a", encoding="utf-8") as f:
            if new:
                f.write(",".join(METRICS_COLUMNS) + "\n")
            f.writelines(lines)
            f.flush()
            os.fsync(f.fileno())
    except OSError as e:  # a half-written row is dropped on resuming (`truncate_metrics`)
        raise metrics_error(path, e) from None


def metrics_error(path: Path, e: OSError) -> RnnkitError:
    fix = "move away what is in its place" if isinstance(e, IsADirectoryError) else \
        "free disk space"
    return RnnkitError(f"could not write {path} ({e.strerror or e}); the last checkpoint is "
                       f"intact; {fix} and --resume")


def cell(value) -> str:
    """A CSV cell: floats with every digit (repr), so that a resumed log equals a straight one."""
    return repr(value) if isinstance(value, float) else str(value)


def truncate_metrics(path: Path, step: int) -> None:
    """Drop the rows after `step` (and any half-written last line): the steps a resumed or
    rolled-back run will do again. Rewritten atomically, only when there is something to drop."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")  # a damaged row is dropped
    except FileNotFoundError:
        return
    except OSError as e:  # a folder in its place, an unreadable file
        raise metrics_error(path, e) from None
    lines = text.splitlines(keepends=True)
    keep = lines[:1]
    for line in lines[1:]:
        first = line.split(",", 1)[0]
        if line.endswith("\n") and first.isdigit() and int(first) <= step:
            keep.append(line)
    if len(keep) != len(lines) or (lines and not lines[0].endswith("\n")):
        try:
            write_bytes_atomic(path, "".join(keep if len(keep) > 1 else []).encode("utf-8"))
        except OSError as e:
            raise metrics_error(path, e) from None
