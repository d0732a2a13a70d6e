"""A runtime with the vision plugin only, shared by the vision test modules."""

from __future__ import annotations

import pytest

import dlguide_vision.plugin
from dlguide._plugins import load_runtime


@pytest.fixture(scope="session")
def runtime():
    return load_runtime(strict=True, disable=(), extra={"vision": dlguide_vision.plugin}, use_entry_points=False)
