"""``dlguide plugin check recsys`` passes: its entry point, hooks and registrations, no torch at
import, and for recsys.rank one batch, an exact resume, predict, export and serve
(with the ``check`` settings its ``plugin.py`` gives a task)."""

from __future__ import annotations

import pytest


@pytest.mark.slow
def test_the_recsys_plugin_passes_its_conformance_checks(dlguide_plugin_check):
    # fails with the line of each check that failed, or naming a task check that did not run
    dlguide_plugin_check("recsys", tasks=("recsys.rank",))
