"""Optional packages: the one way rnnkit asks for a package that only an extra installs.

    librosa = need("librosa", "audio")       # the module, or one line naming the extra

The extras are in pyproject.toml: `audio` (librosa, soundfile), `tasks` (scikit-learn,
matplotlib), `serve` (Starlette, uvicorn). A missing package is an RnnkitError, so the command
line shows one line with the `pip install` that fixes it (the package itself: the extras are
rnnkit's, installed from its folder as `pip install ".[audio]"`), never an ImportError's traceback.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from .errors import RnnkitError

# Where the name pip installs differs from the name Python imports.
PIP_NAMES = {"sklearn": "scikit-learn"}


def need(module: str, extra: str) -> ModuleType:
    """`module` imported, or RnnkitError naming its package and the extra that installs it."""
    try:
        return importlib.import_module(module)
    except ImportError as e:
        package = PIP_NAMES.get(module.split(".")[0], module.split(".")[0])
        raise RnnkitError(f"this needs the optional package {package} ({e}); install it with: "
                          f"pip install {package} (rnnkit's '{extra}' extra installs it with the "
                          "rest)") from None
