"""Indicators on their own: peeks agree with updates, and running sums never drift."""

from __future__ import annotations

import math

import numpy as np
import pytest

from moodring.backtest.csvfile import load_csv
from moodring.market.bar import Bar
from moodring.market.frame import BarFrame, join_frames
from moodring.metrics.base import Indicator, PairIndicator
from moodring.metrics.breakout import Breakout
from moodring.metrics.correlation import Correlation
from moodring.metrics.divergence import Divergence
from moodring.metrics.mfi import MFI
from moodring.metrics.moving import EMA, SMA, MACross, PctChange, ZScore
from tests.support.paths import DATA

ETH_1D = DATA / "daily/binance_yanniedog/ETHUSDT_1d.csv"
RUT_1D = DATA / "daily/yahoo_alitalbi/RUT.csv"
ETH_1M = DATA / "intraday/kraken_1m_cnettlev/ETHUSD.csv"


def bars_of(frame: BarFrame) -> list[Bar]:
    cols = (frame.time, frame.open, frame.high, frame.low, frame.close, frame.volume)
    return [Bar(*row) for row in zip(*(c.tolist() for c in cols), strict=True)]


def same(a: tuple[float, ...], b: tuple[float, ...]) -> bool:
    return all(
        (math.isnan(x) and math.isnan(y)) or math.isclose(x, y, rel_tol=1e-9, abs_tol=1e-9)
        for x, y in zip(a, b, strict=True)
    )


SINGLE = [
    pytest.param(lambda: MFI(14), id="mfi"),
    pytest.param(lambda: Breakout(20), id="breakout"),
    pytest.param(lambda: SMA(20), id="sma"),
    pytest.param(lambda: EMA(20), id="ema"),
    pytest.param(lambda: PctChange(7), id="pct_change"),
    pytest.param(lambda: ZScore(30), id="zscore"),
    pytest.param(lambda: MACross(10, 30), id="ma_cross"),
]


@pytest.mark.parametrize("make", SINGLE)
@pytest.mark.parametrize("path", [ETH_1D, ETH_1M], ids=["eth-1d", "kraken-1m"])
def test_peek_equals_the_value_after_closing_that_bar(make, path) -> None:
    """The value 'including the forming bar' is what the bar will give once it closes."""
    indicator: Indicator = make()
    frame = load_csv(path).bars.slice(0, 5000)
    checked = 0
    for bar in bars_of(frame):
        peeked = indicator.peek_bar(bar)
        indicator.update_bar(bar)
        assert same(peeked, indicator.values), (bar, peeked, indicator.values)
        checked += not math.isnan(indicator.values[0])
    assert checked >= len(frame) - 50


@pytest.mark.parametrize(
    "make",
    [
        pytest.param(lambda: Correlation(30), id="corr"),
        pytest.param(lambda: Divergence(30, 20, 0.05), id="divergence"),
    ],
)
def test_pair_peek_equals_the_value_after_closing_that_pair(make) -> None:
    indicator: PairIndicator = make()
    a, b = join_frames(load_csv(ETH_1D).bars, load_csv(RUT_1D).bars)
    for bar_a, bar_b in zip(bars_of(a), bars_of(b), strict=True):
        peeked = indicator.peek_bars(bar_a, bar_b)
        indicator.update_bars(bar_a, bar_b)
        assert same(peeked, indicator.values), (bar_a, peeked, indicator.values)
    assert not any(math.isnan(v) for v in indicator.values)


def test_peek_does_not_change_state() -> None:
    mfi, ref = MFI(14), MFI(14)
    for bar in bars_of(load_csv(ETH_1D).bars.slice(0, 200)):
        mfi.peek_bar(bar._replace(close=bar.close * 1.1, volume=bar.volume * 3))
        mfi.update_bar(bar)
        ref.update_bar(bar)
        assert same(mfi.values, ref.values)


def drift_input(n: int) -> BarFrame:
    """Real Kraken minutes tiled to ``n`` bars, in price and volume regimes 1e-3..1e3 apart."""
    base = load_csv(ETH_1M).bars
    reps = -(-n // len(base))
    scale = np.repeat(10.0 ** np.resize([0, 3, -3, 1], reps), len(base))[:n]
    tile = lambda col: np.tile(col, reps)[:n]  # noqa: E731
    return BarFrame(
        np.arange(n, dtype=np.int64) * 60_000,
        tile(base.open) * scale,
        tile(base.high) * scale,
        tile(base.low) * scale,
        tile(base.close) * scale,
        tile(base.volume) / scale,
    )


N_DRIFT = 10_000_000


@pytest.fixture(scope="module")
def ten_million() -> BarFrame:
    return drift_input(N_DRIFT)


def assert_no_drift(streamed: np.ndarray, exact: np.ndarray) -> None:
    assert streamed.shape[0] == N_DRIFT
    np.testing.assert_array_equal(np.isnan(streamed), np.isnan(exact))
    np.testing.assert_allclose(streamed, exact, rtol=1e-9, atol=1e-9)


def test_mfi_no_drift_after_ten_million_updates(ten_million: BarFrame) -> None:
    mfi = MFI(14)
    update, value = mfi.update, MFI.value.fget
    out = np.empty(N_DRIFT)
    cols = (ten_million.high, ten_million.low, ten_million.close, ten_million.volume)
    for j, row in enumerate(zip(*(c.tolist() for c in cols), strict=True)):
        update(*row)
        out[j] = value(mfi)
    # batch sums every window from scratch
    assert_no_drift(out, MFI(14).batch(ten_million)[:, 0])


def test_correlation_no_drift_after_ten_million_updates(ten_million: BarFrame) -> None:
    corr = Correlation(30)
    update = corr.update
    out = np.empty(N_DRIFT)
    other = np.roll(ten_million.close, 7)  # a second, related series
    for j, (x, y) in enumerate(zip(ten_million.close.tolist(), other.tolist(), strict=True)):
        update(x, y)
        out[j] = corr.value
    b = BarFrame(ten_million.time, other, other, other, other, other)
    assert_no_drift(out, Correlation(30).batch(ten_million, b)[:, 0])


@pytest.mark.parametrize("make", [lambda: ZScore(30), lambda: SMA(50)], ids=["zscore", "sma"])
def test_close_sums_no_drift_after_ten_million_updates(ten_million: BarFrame, make) -> None:
    indicator = make()
    update = indicator.update
    out = np.empty(N_DRIFT)
    for j, x in enumerate(ten_million.close.tolist()):
        update(x)
        out[j] = indicator.value
    assert_no_drift(out, make().batch(ten_million)[:, 0])
