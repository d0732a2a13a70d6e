"""``python -m dlguide``: the same command line as ``dlguide``."""

import os
import sys

from dlguide._cli import main

code = main()
if "TORCHELASTIC_RUN_ID" in os.environ and "LOCAL_RANK" in os.environ:
    # a worker of a distributed run: everything it writes is closed by now. Leave without the
    # interpreter's teardown, where a communication thread still being destroyed has been
    # seen to abort a worker that had finished its run (and fail the launcher with it)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
sys.exit(code)
