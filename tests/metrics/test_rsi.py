"""RSI against TA-Lib on real data: the indicator, both backtest paths, a rule and its config."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import talib
import yaml

from moodring.backtest.csvfile import load_csv
from moodring.cli import main
from moodring.configfile import ConfigError, load_settings
from moodring.market.bar import Bar
from moodring.metrics.rsi import RSI
from moodring.settings import Settings
from tests.support.oracles import read_ohlcv
from tests.support.paths import DATA

ETH_1D = DATA / "daily/binance_yanniedog/ETHUSDT_1d.csv"
BTC_1D = DATA / "daily/binance_yanniedog/BTCUSDT_1d.csv"
RUT_1D = DATA / "daily/yahoo_alitalbi/RUT.csv"
ETH_1M = DATA / "intraday/kraken_1m_cnettlev/ETHUSD.csv"
MODES = [pytest.param([], id="batch"), pytest.param(["--streaming"], id="streaming")]
FEEDS = {"eth": {"symbol": "ETH/USDT"}, "btc": {"symbol": "BTC/USDT"}}


def assert_talib(ours: np.ndarray, close: np.ndarray, period: int) -> None:
    """Same NaN rows as ``talib.RSI`` and the same values to 1e-9."""
    ref = talib.RSI(close, period)
    assert np.isfinite(ref).sum() > 100
    np.testing.assert_array_equal(np.isnan(ours), np.isnan(ref))
    np.testing.assert_allclose(ours, ref, rtol=0, atol=1e-9)


@pytest.mark.parametrize("period", [2, 14, 30])
@pytest.mark.parametrize("path", [ETH_1D, RUT_1D, ETH_1M], ids=["eth-1d", "rut-1d", "kraken-1m"])
def test_updates_peeks_and_batch_equal_talib(path: Path, period: int) -> None:
    bars = load_csv(path).bars
    rsi, values = RSI(period), []
    for close in bars.close.tolist():
        (peeked,) = rsi.peek_bar(Bar(0, close, close, close, close, 0.0))
        rsi.update(close)
        assert peeked == rsi.value or (math.isnan(peeked) and math.isnan(rsi.value))
        values.append(rsi.value)
    assert_talib(np.array(values), bars.close, period)
    assert_talib(RSI(period).batch(bars)[:, 0], bars.close, period)


def test_a_peek_changes_nothing() -> None:
    closes = [10.0, 11.0, 10.5, 12.0, 11.0]
    rsi = RSI(3)
    for close in closes:
        rsi.update(close)
    before = rsi.value
    assert rsi.peek(20.0) > rsi.peek(11.0) > rsi.peek(2.0)
    assert rsi.value == before
    rsi.update(11.5)
    assert rsi.value == talib.RSI(np.array([*closes, 11.5]), 3)[-1]


def backtest(tmp_path: Path, config: dict, *args: str) -> None:
    """Run ``moodring backtest`` on daily ETH and BTC with ``config``."""
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    argv = ["backtest", "-c", str(path), "--data", f"eth={ETH_1D}", "--data", f"btc={BTC_1D}"]
    assert main([*argv, *args]) == 0


@pytest.mark.parametrize("mode", MODES)
def test_backtest_columns_equal_talib(tmp_path: Path, mode: list[str]) -> None:
    """A feed's RSI, and a ratio's (closes only: RSI needs no volume), on both paths."""
    config = {
        "feeds": FEEDS,
        "series": {"ethbtc": {"ratio": ["eth", "btc"]}},
        "metrics": {
            "eth_rsi": {"type": "rsi", "series": "eth"},
            "ethbtc_rsi": {"type": "rsi", "series": "ethbtc", "period": 9},
        },
    }
    out = tmp_path / "metrics.csv"
    backtest(tmp_path, config, "--metrics-out", str(out), *mode)
    table = pd.read_csv(out)
    table.index = pd.to_datetime(table.pop("time"), utc=True)
    eth, btc = read_ohlcv(ETH_1D)["close"], read_ohlcv(BTC_1D)["close"]
    ratio = (eth / btc).dropna()
    assert table.index.equals(eth.index)
    assert_talib(table["eth_rsi"].to_numpy(), eth.to_numpy(), 14)
    assert_talib(table["ethbtc_rsi"].reindex(ratio.index).to_numpy(), ratio.to_numpy(), 9)


@pytest.mark.parametrize("mode", MODES)
def test_a_rule_on_rsi_fires_where_talib_crosses(
    tmp_path: Path, mode: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    config = {
        "feeds": FEEDS,
        "metrics": {"eth_rsi": {"type": "rsi", "series": "eth"}},
        "rules": [
            {"name": "oversold", "metric": "eth_rsi", "condition": {"crosses_below": 30}},
        ],
    }
    backtest(tmp_path, config, "--format", "json", *mode)
    fired = [json.loads(line)["time"] for line in capsys.readouterr().out.splitlines()]
    eth = read_ohlcv(ETH_1D)["close"]
    ref = pd.Series(talib.RSI(eth.to_numpy(), 14), eth.index)
    crossed = ref.index[(ref.shift(1) >= 30) & (ref < 30)]
    assert len(crossed) > 10
    assert [pd.Timestamp(t) for t in fired] == list(crossed)


@pytest.mark.parametrize(
    ("entry", "error"),
    [
        ("{type: rsi, series: eth, period: 1}", "metrics.r.period (line 6): Input should be"),
        ("{type: rsi, series: eth, perod: 9}", "metrics.r.perod (line 6): unknown key (typo?)"),
        ("{type: rsi, series: sol}", "metrics.r.series (line 6): unknown series 'sol'"),
    ],
    ids=["period", "typo", "series"],
)
def test_config_errors_name_the_key_and_line(tmp_path: Path, entry: str, error: str) -> None:
    path = tmp_path / "moodring.yaml"
    path.write_text(f"feeds:\n  eth: {{symbol: ETH/USDT}}\n\n\nmetrics:\n  r: {entry}\n")
    with pytest.raises(ConfigError) as info:
        load_settings(path)
    assert error in str(info.value), str(info.value)


def test_rings_keep_and_warm_up_ten_periods() -> None:
    settings = Settings(feeds=FEEDS, metrics={"r": {"type": "rsi", "series": "eth", "period": 7}})
    assert settings.metrics["r"].history() == 70
