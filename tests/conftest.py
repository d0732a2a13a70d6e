import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).parent / "core"))  # toyplugin, importable by its registry target

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
