"""A runtime with the vision plugin only, shared by the vision test modules.

It is the current runtime while a module runs, as under the CLI: the GAN trains its
scoring classifier as a run inside its run, and the CLI's ``predict`` and ``generate``
read the current runtime.
"""

from __future__ import annotations

import pytest

import dlguide_vision.plugin
from dlguide._plugins import load_runtime, use_runtime


@pytest.fixture(scope="module")
def runtime():
    rt = load_runtime(strict=True, disable=(), extra={"vision": dlguide_vision.plugin}, use_entry_points=False)
    with use_runtime(rt):
        yield rt
