"""Kept for imports of the old place: backoff lives in the leaf module ``moodring.backoff``."""

from moodring.backoff import Backoff

__all__ = ["Backoff"]
