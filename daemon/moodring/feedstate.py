"""A feed's health as feeds report it and rules read it (a leaf: no moodring imports)."""

from __future__ import annotations

from typing import Literal

FeedState = Literal["ok", "stale", "closed"]
