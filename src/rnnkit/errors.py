"""The one exception rnnkit raises for bad input, and the helpers that phrase it.

Every message names the offending value and says how to fix it; the command line prints it as a
single line on stderr and exits with status 2.
"""


class RnnkitError(ValueError):
    """Bad input to rnnkit: a file, an option, a run directory. The message says what to do."""


def require_positive(**values: int | float) -> None:
    """Raise RnnkitError unless every named value is > 0 (`require_positive(hidden_size=h)`)."""
    for name, value in values.items():
        if not value > 0:
            raise RnnkitError(f"{name} must be positive, got {value}")


MAX_SEED = (1 << 63) - 1


def require_seed(seed: int) -> None:
    """Raise RnnkitError unless `seed` is a whole number in [0, 2^63): what every seeded
    generator rnnkit uses (torch, NumPy) accepts, checked before any work is done."""
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= MAX_SEED:
        raise RnnkitError(f"--seed must be a whole number from 0 to 2**63 - 1, got {seed!r}")
