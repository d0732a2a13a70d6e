"""``python -m dlguide``: the same command line as ``dlguide``."""

import sys

from dlguide.cli import main

sys.exit(main())
