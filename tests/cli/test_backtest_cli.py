"""``moodring backtest`` end to end: options, bad input, and batch == streaming."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from moodring.backtest.csvfile import load_csv
from moodring.backtest.runner import FeedHistory, run_batch, run_streaming
from moodring.cli import main
from moodring.configfile import load_settings
from tests.support.paths import DATA

ETH_1D = DATA / "daily/binance_yanniedog/ETHUSDT_1d.csv"
BTC_1D = DATA / "daily/binance_yanniedog/BTCUSDT_1d.csv"
RUT_1D = DATA / "daily/yahoo_alitalbi/RUT.csv"
ETH_1M = DATA / "intraday/kraken_1m_cnettlev/ETHUSD.csv"
BTC_1M = DATA / "intraday/kraken_1m_cnettlev/BTCUSD.csv"


def read(path: Path) -> pd.DataFrame:
    table = pd.read_csv(path)
    table.index = pd.to_datetime(table.pop("time"), utc=True)
    return table


def test_sample_run_writes_every_output(tmp_path: Path) -> None:
    out = tmp_path / "m.csv"
    assert main(["backtest", "--sample", "--metrics-out", str(out)]) == 0
    header = out.read_text().splitlines()[0].split(",")
    assert header == [
        "time",
        "eth_rut_corr",
        "eth_mfi",
        "ethbtc_breakout",
        "eth_rut_divergence.residual_z",
        "eth_rut_divergence.beta",
        "eth_rut_divergence.opposite",
        "eth_rut_divergence.swing",
        "eth_rut_corr_90",
        "ethbtc_chg_30",
        "ethbtc_chg_90",
    ]
    table = read(out)
    assert out.read_text().splitlines()[1].startswith("2024-07-13T00:00:00Z,")
    # correlation only on joined (US trading) days: never on a weekend
    corr_days = table["eth_rut_corr"].dropna().index
    assert len(corr_days) > 300 and (corr_days.day_of_week < 5).all()
    assert table["eth_mfi"].notna().sum() > 500


def test_from_to_bound_rows_but_earlier_data_warms_up(tmp_path: Path) -> None:
    full, part = tmp_path / "full.csv", tmp_path / "part.csv"
    data = ["--data", f"eth={ETH_1D}", "--data", f"btc={BTC_1D}", "--data", f"rut={RUT_1D}"]
    assert main(["backtest", *data, "--metrics-out", str(full)]) == 0
    assert (
        main(
            [
                "backtest",
                *data,
                "--from",
                "2024-03-01",
                "--to",
                "2024-03-31",
                "--metrics-out",
                str(part),
            ]
        )
        == 0
    )
    a, b = read(full), read(part)
    assert b.index[0] == pd.Timestamp("2024-03-01", tz="UTC")
    assert b.index[-1] == pd.Timestamp("2024-03-31", tz="UTC")
    assert b["eth_mfi"].notna().all()
    pd.testing.assert_frame_equal(a.loc[b.index], b)


def test_bad_csv_row_names_file_and_line(tmp_path: Path, capsys) -> None:
    bad = tmp_path / "eth.csv"
    lines = ETH_1D.read_text().splitlines()[:50]
    lines[30] = lines[30].replace(lines[30].split(",")[4], "oops")
    bad.write_text("\n".join(lines) + "\n")
    assert main(["backtest", "--data", f"eth={bad}"]) == 1
    err = capsys.readouterr().err
    assert f"{bad}:31:" in err and "close" in err and "oops" in err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--data", "sol=x.csv"], "unknown feed"),
        (["--data", "eth"], "FEED=PATH"),
        ([], "no history given"),
        (["--data", "btc=" + str(BTC_1D)], "none of the configured metrics"),
    ],
)
def test_usage_errors_exit_1_with_a_message(args: list[str], message: str, capsys) -> None:
    assert main(["backtest", *args]) == 1
    assert message in capsys.readouterr().err


def test_a_one_row_file_is_a_usage_error(tmp_path: Path, capsys) -> None:
    one = tmp_path / "eth.csv"
    one.write_text("\n".join(ETH_1D.read_text().splitlines()[:2]) + "\n")
    assert main(["backtest", "--data", f"eth={one}"]) == 1
    err = capsys.readouterr().err
    assert f"--data eth={one}: need at least two bars to tell their timeframe" in err
    assert "Traceback" not in err


def test_metrics_without_data_are_skipped_with_a_warning(tmp_path: Path, caplog) -> None:
    out = tmp_path / "m.csv"
    assert (
        main(
            [
                "backtest",
                "--data",
                f"eth={ETH_1D}",
                "--data",
                f"btc={BTC_1D}",
                "--metrics-out",
                str(out),
            ]
        )
        == 0
    )
    assert list(read(out).columns) == [
        "eth_mfi",
        "ethbtc_breakout",
        "ethbtc_chg_30",
        "ethbtc_chg_90",
    ]
    assert "eth_rut_corr" in caplog.text and "skipped" in caplog.text


def all_metrics(timeframe: str) -> dict:
    return {
        "feeds": {"eth": {"symbol": "ETH/USD"}, "btc": {"symbol": "BTC/USD"}},
        "series": {"ethbtc": {"ratio": ["eth", "btc"]}},
        "metrics": {
            "corr": {"type": "correlation", "a": "eth", "b": "btc", "timeframe": timeframe},
            "mfi": {"type": "mfi", "series": "eth", "timeframe": timeframe},
            "brk": {"type": "breakout", "series": "ethbtc", "timeframe": timeframe},
            "div": {"type": "divergence", "a": "eth", "b": "btc", "timeframe": timeframe},
            "sma": {"type": "sma", "series": "eth", "period": 20, "timeframe": timeframe},
            "ema": {"type": "ema", "series": "btc", "period": 20, "timeframe": timeframe},
            "pct": {
                "type": "pct_change",
                "series": "ethbtc",
                "lookback": 5,
                "timeframe": timeframe,
            },
            "z": {"type": "zscore", "series": "eth", "window": 30, "timeframe": timeframe},
            "x": {
                "type": "ma_cross",
                "series": "eth",
                "fast": 5,
                "slow": 20,
                "timeframe": timeframe,
            },
        },
    }


@pytest.mark.parametrize("timeframe", ["1m", "5m", "1h", "4h"])
def test_batch_equals_streaming_value_for_value_on_minutes(tmp_path: Path, timeframe) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(all_metrics(timeframe)))
    settings = load_settings(path)
    history = {f: FeedHistory.of(load_csv(p).bars) for f, p in (("eth", ETH_1M), ("btc", BTC_1M))}
    names = list(settings.metrics)
    batch = run_batch(settings, history, names)
    stream = run_streaming(settings, history, names)
    np.testing.assert_array_equal(batch.time, stream.time)
    assert list(batch.columns) == list(stream.columns)
    for name in batch.columns:
        a, b = batch.columns[name], stream.columns[name]
        np.testing.assert_array_equal(np.isnan(a), np.isnan(b), err_msg=name)
        np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-9, err_msg=name)
        assert np.count_nonzero(~np.isnan(a)) > 0.5 * len(a) or timeframe == "4h", name


def test_batch_equals_streaming_on_the_default_config_with_real_daily_data() -> None:
    settings = load_settings()
    files = {"eth": ETH_1D, "btc": BTC_1D, "rut": RUT_1D}
    history = {f: FeedHistory.of(load_csv(p).bars) for f, p in files.items()}
    names = list(settings.metrics)
    batch = run_batch(settings, history, names)
    stream = run_streaming(settings, history, names)
    np.testing.assert_array_equal(batch.time, stream.time)
    for name in batch.columns:
        a, b = batch.columns[name], stream.columns[name]
        np.testing.assert_array_equal(np.isnan(a), np.isnan(b), err_msg=name)
        np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-9, err_msg=name)
