"""Where the repository, its test data and the real market data beside the clone are."""

from __future__ import annotations

from pathlib import Path

# the repository (the clone's top directory)
ROOT = Path(__file__).resolve().parents[2]
# the real market data, ../shared/data beside the clone (a README per file)
DATA = ROOT.parent / "shared" / "data"
# small real excerpts kept with the tests
TEST_DATA = ROOT / "tests" / "data"
# Binance trade captures of 2024-08-08 (the fake exchange replays them)
CAPTURE_DIR = DATA / "ws" / "hftbacktest_binance_spot"
ETH_CAPTURE = CAPTURE_DIR / "ethusdt_20240808.gz"
BTC_CAPTURE = CAPTURE_DIR / "btcusdt_20240808.gz"
