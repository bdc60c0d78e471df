"""The README's backtest of the shipped rules: its data files as `moodring backtest` arguments."""

from __future__ import annotations

from tests.support.paths import DATA

D = DATA / "daily"
FEEDS = {
    "eth": D / "binance_yanniedog/ETHUSDT_1d.csv",
    "btc": D / "binance_yanniedog/BTCUSDT_1d.csv",
    "rut": D / "yahoo_alitalbi/RUT.csv",
}
UNIVERSE = [
    D / "binance_alts_gnguyenquant",
    D / "binance_alts/SHIBUSDT_1d.csv",
    D / "binance_yanniedog/ETHUSDT_1d.csv",
]
ARGS = [f"--data={feed}={path}" for feed, path in FEEDS.items()]
ARGS += [f"--universe={path}" for path in UNIVERSE]
