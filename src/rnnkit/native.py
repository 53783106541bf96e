"""native.c, compiled on first use by this machine's C compiler and loaded with ctypes.

One stream's step at a reduced precision calls these functions between its matrix products
(see `sample.Stepper`): a layer's gates in one call, the output layer and the draw in one each.
The library is built once per source and machine into rnnkit's cache folder (`RNNKIT_CACHE`,
else `$XDG_CACHE_HOME/rnnkit`, else `~/.cache/rnnkit`), as torch builds its extensions, and
loaded from there afterwards. Where no compiler is found (`CC`, else `cc`, `gcc` or `clang`),
the build fails or `RNNKIT_NATIVE=0` is set, `library()` is None and the stepper uses torch's
operations alone, which give the same results to rounding.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import platform
import shlex
import shutil
import subprocess
import tempfile
from pathlib import Path

SOURCE = Path(__file__).with_name("native.c")
# -fno-trapping-math lets the compiler vectorize the loops' comparisons (no floating-point
# exception is ever read); no -march, so that a library built here runs on any processor of
# the same architecture (native.c picks AVX2 at load time where there is one)
FLAGS = ("-O3", "-fno-trapping-math", "-shared", "-fPIC")
POINTER, INT, FLOAT = ctypes.c_void_p, ctypes.c_int, ctypes.c_float
SIGNATURES = {  # name: (argument types, result type)
    "lstm_layer": ((POINTER,) * 6 + (INT,), None),
    "rnn_layer": ((POINTER,) * 4 + (INT,), None),
    "gru_layer": ((POINTER,) * 6 + (INT,), None),
    "logits_row": ((POINTER,) * 4 + (INT, INT), None),
    "race": ((POINTER, POINTER, INT, FLOAT), INT),
}


def cache_dir() -> Path:
    if os.environ.get("RNNKIT_CACHE"):
        return Path(os.environ["RNNKIT_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "rnnkit"


def compiler() -> str | None:
    return os.environ.get("CC") or next(
        (c for c in ("cc", "gcc", "clang") if shutil.which(c)), None)


@functools.cache
def library() -> ctypes.CDLL | None:
    """The compiled native.c, its functions typed; None where it cannot be had (see above)."""
    if os.environ.get("RNNKIT_NATIVE", "1") == "0":
        return None
    cc = compiler()
    if cc is None:
        return None
    try:
        path = library_path(cc)
        if not path.exists():
            build(cc, path)
        try:
            lib = ctypes.CDLL(str(path))
        except OSError:  # a damaged file (a disk that filled, say): built again, once
            build(cc, path)
            lib = ctypes.CDLL(str(path))
    except (OSError, RuntimeError, subprocess.SubprocessError):  # RuntimeError: no home folder
        return None
    for name, (arguments, result) in SIGNATURES.items():
        function = getattr(lib, name)
        function.argtypes, function.restype = arguments, result
    return lib


def library_path(cc: str) -> Path:
    """Where the library built from this source, by this compiler, for this machine, lies."""
    key = hashlib.sha256(b"\0".join([SOURCE.read_bytes(), cc.encode(), " ".join(FLAGS).encode(),
                                     platform.machine().encode(),
                                     platform.system().encode()])).hexdigest()[:16]
    return cache_dir() / f"native-{key}.so"


def why_not() -> str | None:
    """Why `library()` is None, in words for the user; None where it loaded."""
    if library() is not None:
        return None
    if os.environ.get("RNNKIT_NATIVE", "1") == "0":
        return "RNNKIT_NATIVE=0"
    cc = compiler()
    if cc is None:
        return "no C compiler found (cc, gcc or clang; or set CC)"
    try:
        where = f"into {cache_dir()}"
    except RuntimeError:
        where = "(no home folder for the cache: set RNNKIT_CACHE)"
    return f"the C compiler {cc!r} did not build native.c {where}"


def build(cc: str, path: Path) -> None:
    """Compile SOURCE into `path`: into a temporary file beside it first, then renamed, so that
    two processes building at once, or one stopped half-way, never leave a broken library."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, partial = tempfile.mkstemp(suffix=".so", dir=path.parent)
    os.close(fd)
    try:
        subprocess.run([*shlex.split(cc), *FLAGS, "-o", partial, str(SOURCE)], check=True, timeout=120,
                       stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)
        os.replace(partial, path)
    finally:
        if os.path.exists(partial):
            os.remove(partial)
