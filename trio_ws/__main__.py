"""``python -m trio_ws``: the command line of :mod:`trio_ws.cli`."""

from __future__ import annotations

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
