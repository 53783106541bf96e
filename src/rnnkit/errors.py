"""The one exception rnnkit raises for bad input, and the helpers that phrase it.

Every message names the offending value and says how to fix it; the command line prints it as a
single line on stderr and exits with status 2.
"""

import numbers


class RnnkitWarning(UserWarning):
    """Something was skipped or adjusted; the message says what."""


class RnnkitError(ValueError):
    """Bad input to rnnkit: a file, an option, a run directory. The message says what to do."""


def require_positive(**values: int | float) -> None:
    """Raise RnnkitError unless every named value is > 0 (`require_positive(hidden_size=h)`)."""
    for name, value in values.items():
        if not value > 0:
            raise RnnkitError(f"{name} must be positive, got {value}")


def require_size(**values: int) -> None:
    """Raise RnnkitError unless every named value is a whole number above 0: a size (3.0, or
    True, would build a model of the wrong shape or fail deep in torch)."""
    for name, value in values.items():
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
            raise RnnkitError(f"{name} must be a whole number above 0, got {value!r}")


MAX_SEED = (1 << 63) - 1


def require_seed(seed: int, name: str = "--seed") -> None:
    """Raise RnnkitError unless `seed` is a whole number in [0, 2^63): what every seeded
    generator rnnkit uses (torch, NumPy) accepts, checked before any work is done. `name`: the
    option or the argument, as the caller's user gave it."""
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) \
            or not 0 <= seed <= MAX_SEED:  # NumPy's integers are whole numbers too
        raise RnnkitError(f"{name} must be a whole number from 0 to 2**63 - 1, got {seed!r}")
