"""``python -m pssl`` (and ``torchrun -m pssl``) runs the command line."""

from __future__ import annotations

import sys

from pssl.cli import main

if __name__ == "__main__":
    sys.exit(main())
