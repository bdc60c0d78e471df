"""The README's pictures are in the repository, PNGs small enough to keep there."""

from __future__ import annotations

import re

from tests.support.paths import ROOT

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
MAX_BYTES = 300_000


def test_readme_images_are_small_pngs_in_the_repository() -> None:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    paths = re.findall(r"!\[[^\]]*\]\(([^)\s]+)\)", text)
    assert "docs/telegram-alert.png" in paths
    for path in paths:
        data = (ROOT / path).read_bytes()
        assert data.startswith(PNG_SIGNATURE), path
        assert len(data) < MAX_BYTES, f"{path}: {len(data)} bytes"
