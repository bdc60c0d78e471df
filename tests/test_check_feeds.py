"""Refused locations (HTTP 451/403) and ``moodring check-feeds``, against the fakes for real."""

from __future__ import annotations

import contextlib
import json
import logging
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest
import yaml

from moodring.backtest.csvfile import load_csv
from moodring.cli import main
from moodring.feeds.ccxt import exchange
from moodring.service.daemon import Daemon
from moodring.testing.equity_bars import session_bars, write_csv
from moodring.testing.fake_exchange import FakeExchange
from tests.test_exchanges import QUOTE, settings_for
from tests.test_fake_yahoo import ETH_5M, real_daily
from tests.test_live import CAPTURES, until
from tests.test_notify import Receiver


@pytest.mark.parametrize("name", ["binance", "bybit"])
async def test_a_refused_location_is_said_once_retried_slowly_and_shown(
    tmp_path, monkeypatch, caplog, name
) -> None:
    caplog.set_level(logging.INFO)
    notify = Receiver(str(tmp_path / "notify.sock"))
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "notify.sock"))
    monkeypatch.setattr(exchange, "RESTRICTED_RETRY", 0.3)
    fake = FakeExchange(CAPTURES, exchange=name, restricted=True)
    await fake.start()
    try:
        async with Daemon(settings_for(name, fake, tmp_path)) as daemon:
            part = daemon.parts[0]
            await until(lambda: part.stats.reconnects >= 4, 30)
            problem = daemon.problems()[name]
            url = f"http://127.0.0.1:{daemon.http.port}/healthz"
            async with aiohttp.ClientSession() as session, session.get(url) as response:
                status, body = response.status, json.loads(await response.text())
            await until(lambda: any(problem.encode() in d for _, d in notify.got), 10)
    finally:
        await fake.stop()
        notify.close()
    assert not part.warmed.is_set()
    assert f"{name} refuses connections from this location" in problem
    assert "`exchange: coinbase`" in problem and "`exchange: kraken`" in problem
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert [r.getMessage() for r in errors] == [f"eth, btc: {problem}"]  # once, not per retry
    # no backoff of a second: a retry each RESTRICTED_RETRY, each one REST call at most
    assert len(fake.rest_requests) <= part.stats.reconnects + 1
    assert status == 503 and body["problems"][name] == problem


def test_check_feeds_says_which_feeds_are_usable_and_why_not(tmp_path: Path, capsys) -> None:
    bars = session_bars(real_daily("2024-11-25", "2024-12-03"), load_csv(ETH_5M).bars)
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
