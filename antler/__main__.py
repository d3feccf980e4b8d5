"""Running ``python -m antler`` is the same as the antler-ray command."""

import sys

from antler.cli import main

sys.exit(main())
