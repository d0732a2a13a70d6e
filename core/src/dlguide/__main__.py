"""``python -m dlguide``: the same command line as ``dlguide``."""

import sys

from dlguide._cli import main

sys.exit(main())
