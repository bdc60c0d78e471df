"""Running the ``moodring`` command in-process on a config file written by the test."""

from __future__ import annotations

from pathlib import Path

import pytest

from moodring.cli import main

# a small valid config: two ccxt feeds, a correlation and an MFI, one rule
GOOD = """\
feeds:
  eth: {symbol: ETH/USDT}
  btc: {symbol: BTC/USDT}
metrics:
  corr: {type: correlation, a: eth, b: btc, window: 30}
  mfi: {type: mfi, series: eth}
rules:
  - name: decoupling
    metric: corr
    condition: {below: 0.3}
    clear: {above: 0.45}
    for: 2
    title: "ETH/BTC correlation {{ value | round(2) }}"
"""


def config(folder: Path, text: str = GOOD, name: str = "c.yaml", mode: int = 0o600) -> Path:
    """Write a config file (private by default) and return its path."""
    path = folder / name
    path.write_text(text)
    path.chmod(mode)
    return path


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """Run ``moodring ARGV`` in-process; return its exit code, stdout and stderr."""
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err
