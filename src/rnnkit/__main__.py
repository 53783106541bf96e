"""`python -m rnnkit ...` runs the command line, exactly as `rnnkit ...`."""

import sys

from .cli import main

sys.exit(main())
