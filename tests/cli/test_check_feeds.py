"""``moodring check-feeds`` against the fakes for real: healthy, refusing, silent, Yahoo."""

from __future__ import annotations

import contextlib
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from moodring.backtest.csvfile import load_csv
from moodring.cli import main
from moodring.testing.equity_bars import session_bars, write_csv
from tests.support.captures import CAPTURES
from tests.support.exchanges import QUOTE
from tests.support.paths import DATA

RUT_CSV = DATA / "daily" / "yahoo_alitalbi" / "RUT.csv"
ETH_5M = DATA / "intraday/binance_5m_gapless/binance_spot_ETHUSDT-5m_20230320-20230328_v2.10.0.csv"


def test_check_feeds_says_which_feeds_are_usable_and_why_not(tmp_path: Path, capsys) -> None:
    thanksgiving = load_csv(RUT_CSV).bars.between(1_732_492_800_000, 1_733_184_000_000)
    bars = session_bars(thanksgiving, load_csv(ETH_5M).bars)  # 2024-11-25..12-02
    write_csv(bars, tmp_path / "rut.csv")
    capture = [arg for path in CAPTURES for arg in ("--capture", str(path))]
    fake = [sys.executable, "-m", "moodring.testing.fake_exchange", *capture, "--loop"]
    yahoo_fake = [sys.executable, "-m", "moodring.testing.fake_yahoo", "--speed", "60"]
    with (
        fake_process(*fake, "--exchange", "coinbase") as coinbase,
        fake_process(*fake, "--restricted") as binance,
        fake_process(*yahoo_fake, "--bars", f"^RUT={tmp_path / 'rut.csv'}") as yahoo,
    ):
        quote = QUOTE["coinbase"]
        feeds = {
            "eth": {"exchange": "coinbase", "symbol": f"ETH/{quote}", **coinbase},
            "btc": {"exchange": "binance", "symbol": "BTC/USDT", **binance},
            "sol": {  # nothing listens there
                "exchange": "kraken",
                "symbol": "SOL/USD",
                "ws_url": "ws://127.0.0.1:9/v2",
                "rest_url": "http://127.0.0.1:9",
            },
            "rut": {"source": "yahoo", "symbol": "^RUT", **yahoo},
        }
        config = tmp_path / "moodring.yaml"
        config.write_text(yaml.safe_dump({"feeds": feeds, "state_dir": str(tmp_path)}))
        code = main(["check-feeds", "-c", str(config)])
        lines = dict(line.split(" ", 1) for line in capsys.readouterr().out.splitlines())
        for name in ("btc", "sol"):
            del feeds[name]
        config.write_text(yaml.safe_dump({"feeds": feeds, "state_dir": str(tmp_path)}))
        healthy = main(["check-feeds", "-c", str(config), "--timeout", "10"])
    assert code == 1 and healthy == 0
    eth = lines["eth"]
    assert eth.startswith("(ccxt coinbase): usable; market ETH/USD (id ETH-USD); latest price ")
    assert "clock offset " in eth
    assert lines["btc"].startswith("(ccxt binance): NOT usable; binance refuses connections")
    assert "HTTP 451" in lines["btc"] and "`exchange: binanceus`" in lines["btc"]
    assert lines["sol"].startswith("(ccxt kraken): NOT usable; REST: ")
    assert "127.0.0.1:9" in lines["sol"]
    assert lines["rut"].startswith("(yahoo): usable; market ^RUT; latest price ")
    assert lines["2"] == "of 4 feed(s) usable"


def test_check_feeds_names_a_bad_timeout() -> None:
    with pytest.raises(SystemExit) as raised:
        main(["check-feeds", "--timeout", "soon"])
    assert raised.value.code == 2


@contextlib.contextmanager
def fake_process(*argv: str) -> Iterator[dict[str, str]]:
    """A fake (exchange or Yahoo) in its own process: its ``ws_url`` and ``rest_url``."""
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        assert proc.stdout is not None
        proc.stdout.readline()  # the port
        yield dict(item.split("=", 1) for item in proc.stdout.readline().split())
    finally:
        proc.terminate()
        proc.wait(30)
