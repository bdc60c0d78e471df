"""Errors told to people: one base the command line catches, each with its exit code.

A leaf module: anything may import it. Foreign errors (OSError, sqlite3, pydantic, yaml …)
are turned into one of these where they enter moodring's code, with one clear sentence
naming the file, key or argument; the command line prints that sentence and exits with the
error's code (sysexits.h where one fits), never with a traceback.
"""

from __future__ import annotations

from typing import ClassVar

# what the command line returns for these errors: 2 as argparse (and most tools) for an
# argument, 1 for data, sysexits.h for a state directory or file (73) and the config (78)
EX_DATA = 1
EX_USAGE = 2
EX_CANTCREAT = 73
EX_CONFIG = 78


class MoodringError(Exception):
    """An error the user can act on; its message is one sentence naming what is wrong."""

    exit_code: ClassVar[int] = EX_DATA


class ConfigError(MoodringError):
    """A configuration that cannot be used; the message names the file and key paths."""

    exit_code = EX_CONFIG


class StateError(MoodringError):
    """A directory or file moodring cannot write or read; the message names it and why."""

    exit_code = EX_CANTCREAT


class UsageError(MoodringError):
    """An argument that cannot be used; the message names the argument and its value."""

    exit_code = EX_USAGE


class DataError(MoodringError):
    """Data that cannot give what was asked, e.g. an empty window; the message says why."""
