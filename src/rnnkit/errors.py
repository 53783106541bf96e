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
