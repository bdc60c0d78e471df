"""A real headless Chromium for page tests: Debian's package, driven by playwright.

Installed with apt-get (as root) when missing, once per session, like tests/support/mosquitto.py
installs Mosquitto; ``playwright install`` is never run (it downloads a browser).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

CHROMIUM = Path("/usr/bin/chromium")


def ensure_chromium() -> tuple[Path | None, str]:
    """Return Debian's chromium (installing it if needed), or None and why it cannot be had."""
    if CHROMIUM.is_file():
        return CHROMIUM, ""
    if shutil.which("apt-get") is None:
        return None, "no apt-get on this machine to install Debian's chromium package"
    if os.geteuid() != 0:
        return None, "installing Debian's chromium package needs root (apt-get)"
    done = subprocess.run(
        "apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y chromium",
        shell=True,
        check=False,
        capture_output=True,
        text=True,
        timeout=900,
    )
    if CHROMIUM.is_file():
        return CHROMIUM, ""
    tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
    return None, f"apt-get could not install chromium (exit {done.returncode}): {' | '.join(tail)}"
