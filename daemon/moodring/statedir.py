"""Directories moodring writes to (state, --record, scratch): checked up front, one-line errors."""

from __future__ import annotations

import json
import sqlite3
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from moodring.errors import EX_CANTCREAT, EX_CONFIG, StateError

__all__ = ["EX_CANTCREAT", "EX_CONFIG", "StateError", "check_dir", "scratch_dir", "state_file"]


def check_dir(path: Path, what: str = "state directory") -> Path:
    """Create ``path`` if missing and make sure files can be created in it; else StateError."""
    try:
        if path.exists() and not path.is_dir():
            raise StateError(f"{what} {path}: not a directory")
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StateError(f"{what} {path}: cannot create it: {_why(exc)}") from None
    try:
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as exc:
        raise StateError(f"{what} {path}: cannot write in it: {_why(exc)}") from None
    return path


@contextmanager
def state_file(path: Path, what: str) -> Iterator[None]:
    """Turn an error opening or reading the state file ``path`` into a StateError naming it."""
    try:
        yield
    except sqlite3.Error as exc:
        raise StateError(f"{what} {path}: cannot use it: {exc}") from None
    except OSError as exc:
        raise StateError(f"{what} {path}: cannot use it: {_why(exc)}") from None
    except json.JSONDecodeError as exc:
        raise StateError(f"{what} {path}: not valid JSON (line {exc.lineno})") from None


@contextmanager
def scratch_dir() -> Iterator[Path]:
    """Yield a temporary directory, removed afterwards; StateError if none can be made."""
    try:
        scratch = tempfile.TemporaryDirectory(prefix="moodring-")
    except OSError as exc:
        raise StateError(f"temporary directory: {_why(exc)} (set $TMPDIR)") from None
    with scratch as path:
        yield Path(path)


def _why(exc: OSError) -> str:
    """Return the system's reason for an OSError, in lower case (``read-only file system``)."""
    reason = exc.strerror or str(exc)
    return reason[:1].lower() + reason[1:]
