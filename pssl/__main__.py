"""``python -m pssl`` (and ``torchrun -m pssl``) runs the command line."""

from __future__ import annotations

import sys

from pssl.cli import main

sys.exit(main())
