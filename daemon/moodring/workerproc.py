"""Helpers of the short-lived worker processes (charts, delivery): stop, reap, tell why."""

from __future__ import annotations

import contextlib
import signal
import subprocess

EXIT_WAIT_S = 5.0  # seconds a retired worker gets to exit before it is killed


def stop(proc: subprocess.Popen[bytes]) -> None:
    """Close the worker's stdin (it exits at EOF) and wait for it; kill it if it lingers."""
    with contextlib.suppress(OSError):
        if proc.stdin is not None:
            proc.stdin.close()
    try:
        proc.wait(timeout=EXIT_WAIT_S)
    except subprocess.TimeoutExpired:
        proc.kill()


def close_pipes(proc: subprocess.Popen[bytes]) -> None:
    """Close a finished worker's stdin and stdout."""
    for stream in (proc.stdin, proc.stdout):
        with contextlib.suppress(OSError):
            if stream is not None:
                stream.close()


def exit_status(proc: subprocess.Popen[bytes]) -> str:
    """Return how a worker ended, in words (``killed by SIGKILL``, ``exit code 1``)."""
    code = proc.poll()
    if code is None:
        return "still running"
    if code < 0:
        with contextlib.suppress(ValueError):
            return f"killed by {signal.Signals(-code).name}"
    return f"exit code {code}"
