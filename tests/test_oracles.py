"""Every metric column of ``moodring backtest`` against TA-Lib and pandas on real data."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import talib
import yaml

from moodring.cli import main
from tests.support import oracles
from tests.support.oracles import read_ohlcv
from tests.support.paths import DATA

ETH_1D = DATA / "daily/binance_yanniedog/ETHUSDT_1d.csv"
BTC_1D = DATA / "daily/binance_yanniedog/BTCUSDT_1d.csv"
RUT_1D = DATA / "daily/yahoo_alitalbi/RUT.csv"
IWM_1D = DATA / "daily/yahoo_alitalbi/IWM.csv"
ETH_YAHOO = DATA / "daily/yahoo_elvisbinks/ETH-USD.csv"
ETH_CLOSE_ONLY = DATA / "daily/close_only_corrcheck/ETH-USD.csv"
IWM_CLOSE_ONLY = DATA / "daily/close_only_corrcheck/IWM.csv"
ETHBTC_YAHOO = DATA / "daily/ethbtc_labdrian/ETH-BTC.csv"
ETH_1M = DATA / "intraday/kraken_1m_cnettlev/ETHUSD.csv"
BTC_1M = DATA / "intraday/kraken_1m_cnettlev/BTCUSD.csv"
ETH_5M = DATA / "intraday/binance_5m_gapless/binance_spot_ETHUSDT-5m_20230320-20230328_v2.10.0.csv"
BTC_5M = DATA / "intraday/binance_5m_gapless/binance_spot_BTCUSDT-5m_20230320-20230328_v2.10.0.csv"

MODES = [pytest.param([], id="batch"), pytest.param(["--streaming"], id="streaming")]
EQUITY = {RUT_1D, IWM_1D, IWM_CLOSE_ONLY}


def backtest(
    tmp_path: Path,
    metrics: dict[str, dict],
    data: dict[str, Path],
    mode: list[str],
    series: dict[str, dict] | None = None,
    markets: dict[str, str] | None = None,
) -> pd.DataFrame:
    """Run ``moodring backtest`` on a config built from ``metrics``; return the metrics CSV."""
    markets = markets or {}
    config = {
        "feeds": {f: {"symbol": f.upper(), "market": markets.get(f, "crypto")} for f in data},
        "series": series or {},
        "metrics": metrics,
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    out = tmp_path / "metrics.csv"
    args = ["backtest", "-c", str(path), "--metrics-out", str(out), *mode]
    for feed, file in data.items():
        args += ["--data", f"{feed}={file}"]
    assert main(args) == 0
    table = pd.read_csv(out)
    table.index = pd.to_datetime(table.pop("time"), utc=True)
    return table


def assert_matches(ours: pd.Series, oracle: pd.Series, *, atol: float = 1e-12) -> None:
    """Same values (rtol 1e-9) on the same rows, NaN exactly where the oracle has none."""
    oracle = oracle.reindex(ours.dropna().index.union(oracle.dropna().index))
    ours = ours.reindex(oracle.index)
    assert len(oracle.dropna()) > 0, "oracle has no values: the comparison would be empty"
    np.testing.assert_array_equal(ours.isna().to_numpy(), oracle.isna().to_numpy())
    np.testing.assert_allclose(ours.to_numpy(), oracle.to_numpy(), rtol=1e-9, atol=atol)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(
    ("a_file", "b_file", "window"),
    [
        (ETH_1D, RUT_1D, 30),
        (ETH_1D, IWM_1D, 90),
        (ETH_YAHOO, RUT_1D, 30),
        (ETH_CLOSE_ONLY, IWM_CLOSE_ONLY, 30),
        (ETH_1D, BTC_1D, 10),
    ],
    ids=["eth-rut", "eth-iwm-90", "yahoo-eth-rut", "close-only-eth-iwm", "eth-btc"],
)
def test_correlation_equals_pandas(
    tmp_path: Path, mode: list[str], a_file: Path, b_file: Path, window: int
) -> None:
    metric = {"type": "correlation", "a": "a", "b": "b", "timeframe": "1d", "window": window}
    equity = b_file in EQUITY
    markets = {"b": "equity"} if equity else None
    data = {"a": a_file, "b": b_file}
    ours = backtest(tmp_path, {"corr": metric}, data, mode, markets=markets)["corr"]
    a, b = read_ohlcv(a_file)["close"], read_ohlcv(b_file)["close"]
    gaps = {"sessions": oracles.nyse_sessions()} if equity else {"step": "1D"}
    assert_matches(ours, oracles.log_returns_corr(a, b, window, **gaps))


@pytest.mark.parametrize("mode", MODES)
def test_correlation_on_resampled_minutes_with_gaps(tmp_path: Path, mode: list[str]) -> None:
    metric = {"type": "correlation", "a": "eth", "b": "btc", "timeframe": "1h", "window": 24}
    ours = backtest(tmp_path, {"corr": metric}, {"eth": ETH_1M, "btc": BTC_1M}, mode)["corr"]
    eth = oracles.resample(read_ohlcv(ETH_1M), "1h")["close"]
    btc = oracles.resample(read_ohlcv(BTC_1M), "1h")["close"]
    expected = oracles.log_returns_corr(eth, btc, 24, step="1h")
    # a window holding a return across one of the two real gaps has no value
    assert expected.isna().sum() > oracles.log_returns_corr(eth, btc, 24).isna().sum() + 20
    assert_matches(ours, expected)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(
    ("file", "timeframe", "rule"),
    [
        (ETH_1D, "1d", None),
        (BTC_1D, "1d", None),
        (RUT_1D, "1d", None),
        (ETH_YAHOO, "1d", None),
        (ETHBTC_YAHOO, "1d", None),
        (ETH_1M, "1m", None),
        (BTC_1M, "15m", "15min"),
        (ETH_5M, "5m", None),
        (ETH_5M, "4h", "4h"),
    ],
    ids=[
        "eth-1d",
        "btc-1d",
        "rut-1d",
        "yahoo-eth",
        "ethbtc-nulls",
        "kraken-1m",
        "kraken-15m",
        "binance-5m",
        "binance-4h",
    ],
)
def test_mfi_equals_talib(
    tmp_path: Path, mode: list[str], file: Path, timeframe: str, rule: str | None
) -> None:
    metric = {"type": "mfi", "series": "x", "timeframe": timeframe, "period": 14}
    ours = backtest(tmp_path, {"mfi": metric}, {"x": file}, mode)["mfi"]
    df = read_ohlcv(file)
    if rule is not None:
        df = oracles.resample(df, rule)
    ref = talib.MFI(*(df[c].to_numpy() for c in ("high", "low", "close", "volume")), 14)
    # TA-Lib keeps add-then-subtract sums: where a window's true MFI is exactly 0 it may
    # report rounding residue like 7e-12; ours recomputes, hence the absolute tolerance.
    assert_matches(ours, pd.Series(ref, df.index), atol=1e-9)


@pytest.mark.parametrize("mode", MODES)
def test_breakout_of_ratio_is_on_closes(tmp_path: Path, mode: list[str]) -> None:
    metric = {"type": "breakout", "series": "ethbtc", "timeframe": "1d", "lookback": 20}
    ours = backtest(
        tmp_path,
        {"brk": metric},
        {"eth": ETH_1D, "btc": BTC_1D},
        mode,
        series={"ethbtc": {"ratio": ["eth", "btc"]}},
    )["brk"]
    eth, btc = read_ohlcv(ETH_1D)["close"], read_ohlcv(BTC_1D)["close"]
    ratio = (eth / btc).dropna().to_frame("close")
    ratio["high"] = ratio["low"] = ratio["close"]
    expected = oracles.breakout(ratio, 20)
    assert (expected == 1).sum() > 50 and (expected == -1).sum() > 50
    assert_matches(ours, expected)


@pytest.mark.parametrize("mode", MODES)
def test_breakout_of_feed_uses_highs_and_lows(tmp_path: Path, mode: list[str]) -> None:
    metric = {"type": "breakout", "series": "x", "timeframe": "1h", "lookback": 24}
    ours = backtest(tmp_path, {"brk": metric}, {"x": ETH_1M}, mode)["brk"]
    assert_matches(ours, oracles.breakout(oracles.resample(read_ohlcv(ETH_1M), "1h"), 24))


@pytest.mark.parametrize("mode", MODES)
def test_averages_zscore_pct_change_and_cross(tmp_path: Path, mode: list[str]) -> None:
    metrics = {
        "sma": {"type": "sma", "series": "x", "period": 20},
        "ema": {"type": "ema", "series": "x", "period": 20},
        "z": {"type": "zscore", "series": "x", "window": 30},
        "pct": {"type": "pct_change", "series": "x", "lookback": 7},
        "cross": {"type": "ma_cross", "series": "x", "fast": 10, "slow": 50},
    }
    ours = backtest(tmp_path, metrics, {"x": ETH_1D}, mode)
    close = read_ohlcv(ETH_1D)["close"]
    c = close.to_numpy()
    assert_matches(ours["sma"], pd.Series(talib.SMA(c, 20), close.index))
    assert_matches(ours["ema"], pd.Series(talib.EMA(c, 20), close.index))
    z = (close - close.rolling(30).mean()) / close.rolling(30).std()
    assert_matches(ours["z"], z)
    assert_matches(ours["pct"], close.pct_change(7) * 100)
    spread = pd.Series(talib.SMA(c, 10) - talib.SMA(c, 50), close.index)
    assert_matches(ours["cross.spread"], spread, atol=1e-9)
    slow = talib.SMA(c, 50)
    tie = np.abs(spread) <= 1e-12 * np.abs(slow)
    assert_matches(ours["cross.position"], np.sign(spread).where(~tie, 0.0))


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(
    ("a_file", "b_file"),
    [(ETH_1D, RUT_1D), (ETH_YAHOO, IWM_1D), (ETH_5M, BTC_5M)],
    ids=["eth-rut", "yahoo-eth-iwm", "eth-btc-5m"],
)
def test_divergence_outputs_equal_independent_computation(
    tmp_path: Path, mode: list[str], a_file: Path, b_file: Path
) -> None:
    timeframe = "5m" if a_file == ETH_5M else "1d"
    metric = {
        "type": "divergence",
        "a": "a",
        "b": "b",
        "timeframe": timeframe,
        "window": 30,
        "lookback": 20,
        "threshold": 0.05 if timeframe == "1d" else 0.002,
    }
    equity = b_file in EQUITY
    markets = {"b": "equity"} if equity else None
    ours = backtest(tmp_path, {"div": metric}, {"a": a_file, "b": b_file}, mode, markets=markets)
    a, b = read_ohlcv(a_file), read_ohlcv(b_file)
    sessions = oracles.nyse_sessions() if equity else None
    step = "5min" if timeframe == "5m" else "1D"
    z, beta = oracles.ols_residual_z(a["close"], b["close"], 30, sessions=sessions, step=step)
    assert_matches(ours["div.residual_z"], z, atol=1e-9)
    assert_matches(ours["div.beta"], beta, atol=1e-9)
    opp = oracles.opposite(a["close"], b["close"], 20, metric["threshold"])
    assert (opp != 0).sum() > 10
    assert_matches(ours["div.opposite"], opp)
    sw = oracles.swing(a, b, 20)
    assert (sw == 1).sum() > 5 and (sw == -1).sum() > 5
    assert_matches(ours["div.swing"], sw)
