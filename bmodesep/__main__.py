"""``python -m bmodesep`` is the ``bmodesep`` command."""

import sys

from bmodesep.cli import main

sys.exit(main())
