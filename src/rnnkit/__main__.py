"""`python -m rnnkit ...` runs the command line, exactly as `rnnkit ...`."""

import sys


def run() -> int:
    """The command line's entry point: Ctrl-C while its modules load is one line too."""
    try:
        from .cli import main
    except KeyboardInterrupt:
        print("rnnkit: interrupted", file=sys.stderr)
        return 130
    return main()


if __name__ == "__main__":
    sys.exit(run())
