"""Start ``moodring run`` processes fast, for tests that kill them many times.

``python -m tests.support.daemon_zygote`` imports the daemon once (ccxt.pro alone takes a second),
prints ``ready``, then for each JSON line ``{"argv": [...], "log": PATH}`` on stdin forks a
child that runs ``moodring <argv>`` with stderr appended to PATH, and prints its pid. The
zygote runs no event loop and no thread, so forking it is safe; its children are reaped by
the kernel (SIGCHLD ignored). Captures are from 2024: snapshots are kept whatever their
bars' age (``_fresh`` judges them by the wall clock).
"""

from __future__ import annotations

import json
import os
import signal
import sys
import traceback

import apprise

from moodring.cli import main
from moodring.service import daemon


def _child(argv: list[str], log: str) -> None:
    """Become ``moodring <argv>``; never return."""
    code = 70
    try:
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        devnull = os.open(os.devnull, os.O_RDWR)
        os.dup2(devnull, 0)
        os.dup2(devnull, 1)
        os.dup2(os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644), 2)
        code = main(argv)
    except BaseException:
        traceback.print_exc()
    finally:
        sys.stderr.flush()
        os._exit(code)


def serve() -> None:
    """Fork a daemon per request line until stdin closes."""
    daemon._fresh = lambda state: state
    apprise.Apprise().add("json://127.0.0.1:9/warm-up")  # loads apprise's plugins once
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)
    print("ready", flush=True)
    for line in sys.stdin:
        request = json.loads(line)
        pid = os.fork()
        if pid == 0:
            _child(request["argv"], request["log"])
        print(pid, flush=True)


if __name__ == "__main__":
    serve()
