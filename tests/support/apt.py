"""Install a Debian package for a test, once, even with several pytest workers asking at once."""

from __future__ import annotations

import fcntl
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path

# One lock for every pytest process on the machine (xdist workers, other checkouts): apt-get
# takes dpkg's lock and fails at once, rather than waiting, when another apt-get holds it.
LOCK = Path(tempfile.gettempdir()) / "moodring-tests-apt.lock"


def apt_install(
    package: str, installed: Callable[[], bool], timeout: float
) -> subprocess.CompletedProcess[str] | None:
    """Install ``package`` unless ``installed()``; return apt-get's run, or None if not needed.

    The check is repeated under the lock, so a worker that waited for another's install
    finds the package there and runs nothing.
    """
    if installed():
        return None
    with LOCK.open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if installed():
            return None
        wait = "-o DPkg::Lock::Timeout=300"
        return subprocess.run(
            f"apt-get {wait} update && DEBIAN_FRONTEND=noninteractive "
            f"apt-get {wait} install -y {package}",
            shell=True,
            check=False,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
