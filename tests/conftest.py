import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).parent / "core"))  # toyplugin, importable by its registry target

# Under pytest-xdist two test processes share the cores: one compute thread each (and in the
# processes they start), or torch's thread pools oversubscribe the cores and every test slows.
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ["OMP_NUM_THREADS"] = "1"
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(1)

# Tests must not depend on plugins a developer happens to have installed beside the repo's.
os.environ.pop("DLGUIDE_STRICT_PLUGINS", None)
os.environ.pop("DLGUIDE_DISABLE_PLUGINS", None)


@pytest.fixture
def root() -> Path:
    return ROOT


@pytest.fixture
def toy_runtime(dlguide_runtime):
    """A runtime with the example plugin and the toy tasks only."""
    import toyplugin

    return dlguide_runtime(toyplugin, entry_points=("example",))
