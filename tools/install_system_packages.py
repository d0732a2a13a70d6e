"""Install the Debian packages some tests need, when they are missing and this is a root
Debian machine (CI, a fresh container): chromium drives the served web page and the report in a
real headless browser, and PostgreSQL serves a study that two tuning processes share. Elsewhere
it says what is missing and the tests that need it skip with that message.

    python tools/install_system_packages.py
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

PACKAGES = {"chromium": "chromium", "pg_ctlcluster": "postgresql"}  # command -> Debian package


def main() -> int:
    missing = [package for command, package in PACKAGES.items() if shutil.which(command) is None]
    if not missing:
        return 0
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        print(f"note: {', '.join(missing)} not installed (needs root and apt-get); the tests that use it skip",
              file=sys.stderr)
        return 0
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    try:
        subprocess.run(["apt-get", "update", "-qq"], check=True, env=env, timeout=600, stdout=subprocess.DEVNULL)
        subprocess.run(["apt-get", "install", "-y", "-qq", "--no-install-recommends", *missing], check=True,
                       env=env, timeout=1200, stdout=subprocess.DEVNULL)
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
        print(f"note: could not install {', '.join(missing)} ({exc}); the tests that use it skip", file=sys.stderr)
        return 0
    print(f"installed {', '.join(missing)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
