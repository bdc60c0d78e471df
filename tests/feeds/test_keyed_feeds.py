"""Keyed equity feeds (Finnhub, Alpaca) against local servers speaking their protocols."""

from __future__ import annotations

import asyncio
import contextlib
import csv
import json
import logging
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from pydantic import SecretStr
from websockets.asyncio.server import ServerConnection, serve
from websockets.datastructures import Headers
from websockets.http11 import Request, Response

from moodring.backoff import Backoff
from moodring.feeds.alpaca.stream import AlpacaStreamer, rfc3339_ms
from moodring.feeds.finnhub.stream import FinnhubStreamer
from moodring.feeds.streamer import redact
from moodring.market.calendar import MarketCalendar
from tests.support.paths import DATA
from tests.support.wait import until
from tests.support.yahoo import StubCalendar

FINNHUB_KEY = "fhk-c0ffee7e57"
ALPACA_KEY = "PKTESTKEY0042"
ALPACA_SECRET = "alpacaSecret-9f8e7d6c5b4a39281706"
SERVER_LOG = logging.getLogger("test.fake_server")


def ms(text: str) -> int:
    return int(datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()) * 1000


# Trades made from IWM's real daily prints (shared/data/daily/yahoo_alitalbi/IWM.csv): each
# day's open, high, low and close, traded at times inside that day's NYSE session (UTC-5).
DAYS = ["2026-02-17", "2026-02-18", "2026-02-19", "2026-02-20"]
AT = [("14:30:00", 17), ("15:47:12", 403), ("18:05:41", 250), ("20:59:59", 981)]
SIZES = [100, 37, 250, 1200]
NOW = ms("2026-02-20T21:05:00") / 1000  # the streamers' wall clock: just after these trades


@pytest.fixture(scope="module")
def iwm_trades() -> list[tuple[int, float, int]]:
    """Return (epoch ms, price, size) of sixteen trades built from real IWM daily bars."""
    path = DATA / "daily/yahoo_alitalbi/IWM.csv"
    with path.open() as f:
        rows = {row["Date"]: row for row in csv.DictReader(f)}
    trades = []
    for day in DAYS:
        row = rows[day]
        prices = [row["Open"], row["High"], row["Low"], row["Close"]]
        for (clock, milli), price, size in zip(AT, prices, SIZES, strict=True):
            trades.append((ms(f"{day}T{clock}") + milli, round(float(price), 2), size))
    return trades


class RecordingSink:
    def __init__(self) -> None:
        self.trades: list[tuple[str, int, float, float, object]] = []
        self.states: list[str] = []
        self.state_times: list[int] = []
        self.bad: list[tuple[str, str]] = []

    def trade(self, feed: str, t_ms: int, price: float, amount: float, trade_id: object) -> None:
        self.trades.append((feed, t_ms, price, amount, trade_id))

    def candle(self, feed: str, bar: Any, *, closed: bool, length_ms: int) -> None:
        raise AssertionError("keyed streamers send no candles")

    def history(self, feed: str, bars: Any, *, length_ms: int) -> None:
        raise AssertionError("keyed streamers send no history")

    def state(self, feed: str, state: str, t_ms: int) -> None:
        self.states.append(state)
        self.state_times.append(t_ms)

    def bad_frame(self, feed: str, reason: str, detail: str) -> None:
        self.bad.append((reason, detail))


class RecordingBackoff(Backoff):
    def __init__(self) -> None:
        super().__init__(0.01, 0.05)
        self.delays: list[float] = []

    def next(self) -> float:
        delay = super().next()
        self.delays.append(delay)
        return delay


Script = list[tuple[Any, ...]]


async def play(ws: ServerConnection, script: Script, received: list[Any]) -> None:
    """Send a connection's script, then stay connected recording what the client sends."""
    for step in script:
        if step[0] == "send":
            await ws.send(step[1] if isinstance(step[1], str | bytes) else json.dumps(step[1]))
        elif step[0] == "close":
            await ws.close()
            return
    with contextlib.suppress(Exception):
        async for message in ws:
            received.append(json.loads(message))


class FakeFinnhub:
    """Finnhub's websocket: the token is checked in the handshake, then one script a connection."""

    def __init__(self, *scripts: Script, token: str = FINNHUB_KEY) -> None:
        self.scripts = list(scripts)
        self.token = token
        self.paths: list[str] = []
        self.received: list[Any] = []
        self.connections = 0

    def process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        self.paths.append(request.path)
        if parse_qs(urlsplit(request.path).query).get("token") != [self.token]:
            return connection.respond(HTTPStatus.UNAUTHORIZED, "Unauthorized\n")
        return None

    async def handler(self, ws: ServerConnection) -> None:
        index = self.connections
        self.connections += 1
        self.received.append(json.loads(await ws.recv()))
        await play(ws, self.scripts[index] if index < len(self.scripts) else [], self.received)


class FakeAlpaca:
    """Alpaca's stream: welcome, auth by message, subscription ack, then one script each."""

    def __init__(self, *scripts: Script) -> None:
        self.scripts = list(scripts)
        self.received: list[Any] = []
        self.connections = 0
        self.headers: list[Headers] = []

    def process_request(self, connection: ServerConnection, request: Request) -> None:
        self.headers.append(request.headers)

    async def handler(self, ws: ServerConnection) -> None:
        index = self.connections
        self.connections += 1
        await ws.send(json.dumps([{"T": "success", "msg": "connected"}]))
        auth = json.loads(await ws.recv())
        self.received.append(auth)
        if auth != {"action": "auth", "key": ALPACA_KEY, "secret": ALPACA_SECRET}:
            await ws.send(json.dumps([{"T": "error", "code": 402, "msg": "auth failed"}]))
            await ws.close()
            return
        await ws.send(json.dumps([{"T": "success", "msg": "authenticated"}]))
        subscribe = json.loads(await ws.recv())
        self.received.append(subscribe)
        ack = {"T": "subscription", "trades": subscribe.get("trades", []), "quotes": []}
        await ws.send(json.dumps([ack | {"bars": [], "updatedBars": [], "dailyBars": []}]))
        await play(ws, self.scripts[index] if index < len(self.scripts) else [], self.received)


@contextlib.asynccontextmanager
async def server(fake: FakeFinnhub | FakeAlpaca, path: str = "/") -> AsyncIterator[str]:
    async with serve(
        fake.handler, "127.0.0.1", 0, process_request=fake.process_request, logger=SERVER_LOG
    ) as srv:
        port = next(iter(srv.sockets)).getsockname()[1]
        yield f"ws://127.0.0.1:{port}{path}"


def fast_backoff() -> Backoff:
    return Backoff(0.01, 0.05)


def client_logs(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    """Return the records logged by anything but the fake servers."""
    return [r for r in caplog.records if not r.name.startswith("test.")]


def assert_no_secret(records: list[logging.LogRecord], *secrets: str) -> None:
    """Fail when any record holds a secret, or eight characters in a row of one."""
    pieces = {s[i : i + 8] for s in secrets for i in range(len(s) - 7)}
    for record in records:
        text = record.getMessage() + (record.exc_text or "")
        for piece in pieces:
            assert piece not in text, f"{record.name} logged part of a secret: {text}"


def finnhub(url: str, sink: RecordingSink, **options: Any) -> FinnhubStreamer:
    options.setdefault("backoff", fast_backoff())
    options.setdefault("clock", lambda: NOW)
    options.setdefault("api_key", FINNHUB_KEY)
    return FinnhubStreamer("iwm", "IWM", sink, url=url, **options)


def alpaca(url: str, sink: RecordingSink, **options: Any) -> AlpacaStreamer:
    options.setdefault("backoff", fast_backoff())
    options.setdefault("clock", lambda: NOW)
    options.setdefault("api_key", ALPACA_KEY)
    options.setdefault("api_secret", ALPACA_SECRET)
    return AlpacaStreamer("iwm", "IWM", sink, url=url, **options)


def fh_trade(t: int, price: Any, size: Any, symbol: str = "IWM") -> dict[str, Any]:
    return {"s": symbol, "p": price, "t": t, "v": size, "c": ["1", "12"]}


def fh_batch(*trades: dict[str, Any]) -> dict[str, Any]:
    return {"type": "trade", "data": list(trades)}


def rfc3339(t_ms: int, nanos: str = "456789") -> str:
    """Format epoch ms as Alpaca does: UTC, 'Z', nanosecond digits."""
    whole = datetime.fromtimestamp(t_ms // 1000, UTC).strftime("%Y-%m-%dT%H:%M:%S")
    return f"{whole}.{t_ms % 1000:03d}{nanos}Z"


def ap_trade(t: int, price: Any, size: Any, trade_id: int, symbol: str = "IWM") -> dict[str, Any]:
    stamp = rfc3339(t)
    return {
        "T": "t",
        "S": symbol,
        "i": trade_id,
        "x": "V",
        "p": price,
        "s": size,
        "t": stamp,
        "c": ["@"],
        "z": "B",
    }


# --- keys ------------------------------------------------------------------------------------


@pytest.mark.parametrize("key", [None, "", "   ", SecretStr(""), SecretStr(" \n")])
def test_missing_finnhub_key_is_a_clear_error(key: Any) -> None:
    with pytest.raises(ValueError) as info:
        FinnhubStreamer("iwm", "IWM", RecordingSink(), api_key=key)
    text = str(info.value)
    assert "feeds.iwm.api_key" in text
    assert "MOODRING_FEEDS__IWM__API_KEY" in text
    assert "api_key_file" in text and "api_key_credential" in text


def test_missing_alpaca_secret_names_api_secret() -> None:
    with pytest.raises(ValueError, match=r"feeds\.iwm\.api_secret") as info:
        AlpacaStreamer("iwm", "IWM", RecordingSink(), api_key=SecretStr("k"), api_secret=None)
    assert "MOODRING_FEEDS__IWM__API_SECRET" in str(info.value)
    with pytest.raises(ValueError, match=r"feeds\.iwm\.api_key"):
        AlpacaStreamer("iwm", "IWM", RecordingSink(), api_key=None, api_secret="s")


def test_redact_blanks_secrets_and_url_tokens() -> None:
    text = "GET /?token=abc123&x=1 key=abc123 wss://h/?apikey=zzz secret S3CR3T"
    out = redact(text, ["S3CR3T"])
    assert "abc123" not in out and "zzz" not in out and "S3CR3T" not in out
    assert "x=1" in out and "token=[REDACTED]" in out
    cut = '> TEXT \'{"key": "abcd...", "secret": "...S3CR3T"}\''
    assert redact(cut, ["abcdefgh", "xxS3CR3T"]) == (
        '> TEXT \'{"key": "[REDACTED]...", "secret": "...[REDACTED]"}\''
    )


# --- Finnhub ---------------------------------------------------------------------------------


async def test_finnhub_trades_reach_the_sink_exactly(
    iwm_trades: list[tuple[int, float, int]],
) -> None:
    good = [fh_trade(t, p, v) for t, p, v in iwm_trades]
    t0 = iwm_trades[0][0]
    frames: list[Any] = [
        fh_batch(*good[:3], fh_trade(t0, 690.1, 5, symbol="SPY")),
        {"type": "ping"},
        "{not json",
        b"\xff\xfe",  # binary frame, not UTF-8
        [1, 2],
        {"type": "trade", "data": {"s": "IWM"}},  # data not a list
        fh_batch("IWM", good[3]),  # one item not an object; the other still counts
        fh_batch(fh_trade(t0, 0, 10)),  # price not positive
        fh_batch(fh_trade(t0, "263.04", 10)),  # price as a string
        fh_batch(fh_trade(t0, True, 10)),  # a bool is not a price
        fh_batch({"s": "IWM", "p": 263.0, "v": 10}),  # no time
        fh_batch(fh_trade(t0 // 1000, 263.0, 10)),  # seconds, not ms: far too old
        fh_batch(fh_trade(ms("2026-02-21T12:00:00"), 263.0, 10)),  # in the future
        fh_batch(fh_trade(t0, 263.0, -1)),  # negative volume
        {"type": "news", "data": []},
        fh_batch(*good[4:]),
    ]
    fake = FakeFinnhub([("send", f) for f in frames])
    sink = RecordingSink()
    async with server(fake) as url:
        streamer = finnhub(url, sink)
        async with streamer:
            await until(lambda: len(sink.trades) == len(iwm_trades), "all IWM trades")
    assert fake.received[0] == {"type": "subscribe", "symbol": "IWM"}
    assert parse_qs(urlsplit(fake.paths[0]).query) == {"token": [FINNHUB_KEY]}
    assert sink.trades == [("iwm", t, p, float(v), None) for t, p, v in iwm_trades]
    assert sink.trades[0][1:4] == (ms("2026-02-17T14:30:00") + 17, 262.38, 100.0)
    assert dict(streamer.bad_frames) == {
        "json": 1,
        "encoding": 1,
        "shape": 3,
        "price not positive": 1,
        "bad number": 2,
        "missing field": 1,
        "timestamp too old": 1,
        "timestamp in the future": 1,
        "bad amount": 1,
    }
    assert sorted(r for r, _ in sink.bad) == sorted(streamer.bad_frames.elements())
    assert dict(streamer.ignored) == {"symbol": 1, "ping": 1, "type": 1}
    assert sink.states == ["ok"]  # no calendar: always in session
    assert streamer.reconnects == 0
    assert streamer.counters()["trades"] == len(iwm_trades)


async def test_finnhub_bad_token_is_logged_redacted_and_retried(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    fake = FakeFinnhub(token="the-right-one")
    sink = RecordingSink()
    backoff = RecordingBackoff()
    async with server(fake) as url:
        streamer = finnhub(url, sink, backoff=backoff)
        async with streamer:
            await until(lambda: len(backoff.delays) >= 3, "three failed attempts")
            assert streamer.running
    assert len(fake.paths) >= 3 and fake.connections == 0
    assert sink.trades == []
    assert streamer.auth_failures >= 3
    assert backoff.attempt == len(backoff.delays)  # never reset: the delays keep growing
    records = client_logs(caplog)
    refused = [r for r in records if r.levelno == logging.ERROR and "HTTP 401" in r.getMessage()]
    assert len(refused) >= 3
    assert "refused the API key" in refused[0].getMessage()
    assert "feeds.iwm.api_key" in refused[0].getMessage()
    # the wire log shows the request line, token blanked
    assert any(
        "token=[REDACTED]" in r.getMessage() for r in records if r.name == "websockets.client"
    )
    assert_no_secret(records, FINNHUB_KEY)


async def test_finnhub_error_message_and_dropped_socket_reconnect_and_resubscribe(
    iwm_trades: list[tuple[int, float, int]], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    batches = [fh_batch(fh_trade(t, p, v)) for t, p, v in iwm_trades[:6]]
    fake = FakeFinnhub(
        [("send", batches[0]), ("send", batches[1]), ("close",)],
        [("send", batches[2]), ("send", {"type": "error", "msg": f"Invalid token {FINNHUB_KEY}"})],
        [("send", b) for b in batches[3:]],
    )
    sink = RecordingSink()
    async with server(fake, "/?token=old&lang=en") as url:
        streamer = finnhub(url, sink)
        async with streamer:
            await until(lambda: len(sink.trades) == 6, "six trades over three connections")
    assert fake.connections == 3
    assert fake.received[:3] == [{"type": "subscribe", "symbol": "IWM"}] * 3
    assert all(
        parse_qs(urlsplit(p).query) == {"token": [FINNHUB_KEY], "lang": ["en"]} for p in fake.paths
    )
    assert streamer.reconnects == 2 and streamer.server_errors == 1
    assert [t[1:4] for t in sink.trades] == [(t, p, float(v)) for t, p, v in iwm_trades[:6]]
    errors = [r.getMessage() for r in client_logs(caplog) if r.levelno == logging.ERROR]
    assert errors == ["finnhub IWM: server error: Invalid token [REDACTED]"]
    assert_no_secret(client_logs(caplog), FINNHUB_KEY)


async def test_finnhub_stale_in_session_forces_reconnect(
    iwm_trades: list[tuple[int, float, int]],
) -> None:
    (t1, p1, v1), (t2, p2, v2) = iwm_trades[:2]
    fake = FakeFinnhub(
        [("send", fh_batch(fh_trade(t1, p1, v1)))],  # then silence
        [],  # silent again
        [("send", fh_batch(fh_trade(t2, p2, v2)))],
    )
    sink = RecordingSink()
    async with server(fake) as url:
        streamer = finnhub(url, sink, calendar=StubCalendar(True), stale_after=0.3)
        async with streamer:
            await until(lambda: len(sink.trades) == 2, "a trade after the stale reconnects")
    assert sink.states == ["ok", "stale", "ok"]
    assert fake.connections == 3 and streamer.reconnects == 2
    assert fake.received[:3] == [{"type": "subscribe", "symbol": "IWM"}] * 3


async def test_finnhub_silent_outside_session_is_not_stale() -> None:
    calendar = StubCalendar(False)
    fake = FakeFinnhub([("send", {"type": "ping"})])  # connected; no trade ever
    sink = RecordingSink()
    async with server(fake) as url:
        streamer = finnhub(url, sink, calendar=calendar, stale_after=0.2, timeout=0.4)
        async with streamer:
            await until(lambda: sink.states == ["closed"], "closed state")
            await asyncio.sleep(1.2)  # six times stale_after of silence
            assert sink.states == ["closed"]
            assert fake.connections == 1 and streamer.reconnects == 0
            calendar.open = True  # the session opens; still no trades
            await until(lambda: "stale" in sink.states, "stale state")
            await until(lambda: fake.connections >= 2, "a reconnect after the open")
    assert sink.states[:2] == ["closed", "stale"]


async def test_finnhub_real_calendar_saturday_and_regular_hours_only() -> None:
    saturday = ms("2026-02-21T15:00:00") / 1000
    fake = FakeFinnhub(
        [
            (
                "send",
                fh_batch(
                    fh_trade(ms("2026-02-20T13:15:00"), 262.0, 5),  # 08:15 New York: pre-market
                    fh_trade(ms("2026-02-20T14:30:00"), 262.85, 7),  # the open
                    fh_trade(ms("2026-02-20T21:30:00"), 264.7, 9),  # after the close
                ),
            ),
        ]
    )
    sink = RecordingSink()
    async with server(fake) as url:
        streamer = finnhub(
            url,
            sink,
            calendar=MarketCalendar(),
            stale_after=0.1,
            regular_hours_only=True,
            clock=lambda: saturday,
        )
        async with streamer:
            await until(lambda: len(sink.trades) == 1, "the session's trade")
            await until(lambda: streamer.ignored["outside session"] == 2, "two ignored")
            await asyncio.sleep(0.5)
    assert sink.trades == [("iwm", ms("2026-02-20T14:30:00"), 262.85, 7.0, None)]
    assert sink.states == ["closed"]
    assert sink.state_times == [ms("2026-02-21T15:00:00")]
    assert fake.connections == 1


# --- Alpaca ----------------------------------------------------------------------------------


def test_rfc3339_ms() -> None:
    assert rfc3339_ms("2026-02-20T14:30:00.123456789Z") == ms("2026-02-20T14:30:00") + 123
    assert rfc3339_ms("2026-02-20T14:30:00Z") == ms("2026-02-20T14:30:00")
    assert rfc3339_ms("2026-02-20T14:30:00.9Z") == ms("2026-02-20T14:30:00") + 900
    assert rfc3339_ms("2026-02-20T09:30:00.05-05:00") == ms("2026-02-20T14:30:00") + 50
    assert rfc3339_ms("2026-02-20T16:00:00+01:30") == ms("2026-02-20T14:30:00")
    for bad in ["", "2026-02-20", "2026-02-30T14:30:00Z", "2026-02-20T14:30:00", "noon", 17]:
        assert rfc3339_ms(bad) is None


async def test_alpaca_login_subscribe_and_exact_trades(
    iwm_trades: list[tuple[int, float, int]], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    good = [ap_trade(t, p, v, 52983525029461 + i) for i, (t, p, v) in enumerate(iwm_trades)]
    t0 = iwm_trades[0][0]
    frames: list[Any] = [
        good[:5],
        [ap_trade(t0, 690.1, 5, 1, symbol="SPY"), {"T": "q", "S": "IWM", "bp": 262.3}],
        "[{oops",
        {"T": "t"} | good[5],  # a bare object: taken as a one-element array
        [good[6] | {"t": "yesterday"}],
        [good[6] | {"t": 1771597800123}],  # epoch numbers are not RFC-3339
        [good[6] | {"p": -5}],
        [good[6] | {"s": None}],
        [good[6] | {"p": float("nan")}],  # JSON NaN: Python's json reads it
        ["t"],
        7,
        [{"T": "c", "S": "IWM", "x": "V", "oi": 1, "ci": 2}],  # a correction: not used
        good[6:],
    ]
    fake = FakeAlpaca([("send", f) for f in frames])
    sink = RecordingSink()
    async with server(fake) as url:
        streamer = alpaca(url, sink)
        async with streamer:
            await until(lambda: len(sink.trades) == len(iwm_trades), "all IWM trades")
    assert fake.received[:2] == [
        {"action": "auth", "key": ALPACA_KEY, "secret": ALPACA_SECRET},
        {"action": "subscribe", "trades": ["IWM"]},
    ]
    assert sink.trades == [
        ("iwm", t, p, float(v), 52983525029461 + i) for i, (t, p, v) in enumerate(iwm_trades)
    ]
    assert dict(streamer.bad_frames) == {
        "json": 1,
        "shape": 2,
        "bad timestamp": 2,
        "price not positive": 1,
        "missing field": 1,
        "price not finite": 1,
    }
    assert sorted(r for r, _ in sink.bad) == sorted(streamer.bad_frames.elements())
    assert dict(streamer.ignored) == {"control": 3, "symbol": 1, "T=q": 1, "T=c": 1}
    assert sink.states == ["ok"]
    assert_no_secret(client_logs(caplog), ALPACA_KEY, ALPACA_SECRET)
    wire = [r.getMessage() for r in client_logs(caplog) if r.name == "websockets.client"]
    assert any('"action": "auth"' in m for m in wire)  # the auth frame was logged, blanked


async def test_alpaca_auth_failure_is_logged_redacted_and_retried(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    fake = FakeAlpaca()
    sink = RecordingSink()
    backoff = RecordingBackoff()
    wrong = "wrongSecret-0123456789abcdef"
    async with server(fake) as url:
        streamer = alpaca(url, sink, api_secret=wrong, backoff=backoff)
        async with streamer:
            await until(lambda: len(backoff.delays) >= 3, "three failed logins")
            assert streamer.running
    assert fake.connections >= 3
    assert all(m["action"] == "auth" for m in fake.received)  # never got to subscribe
    assert streamer.auth_failures >= 3 and sink.trades == []
    assert backoff.attempt == len(backoff.delays)
    errors = [r.getMessage() for r in client_logs(caplog) if r.levelno == logging.ERROR]
    assert errors[0] == (
        "alpaca IWM: server error: auth failed (code 402) "
        "(check feeds.iwm.api_key and feeds.iwm.api_secret)"
    )
    assert_no_secret(client_logs(caplog), ALPACA_KEY, wrong)


async def test_alpaca_dropped_socket_and_server_error_reauthenticate_and_resubscribe(
    iwm_trades: list[tuple[int, float, int]], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    good = [[ap_trade(t, p, v, 900 + i)] for i, (t, p, v) in enumerate(iwm_trades[:6])]
    limit = [{"T": "error", "code": 406, "msg": "connection limit exceeded"}]
    fake = FakeAlpaca(
        [("send", good[0]), ("send", good[1]), ("close",)],
        [("send", good[2]), ("send", limit)],
        [("send", g) for g in good[3:]],
    )
    sink = RecordingSink()
    async with server(fake) as url:
        streamer = alpaca(url, sink)
        async with streamer:
            await until(lambda: len(sink.trades) == 6, "six trades over three connections")
    assert fake.connections == 3 and streamer.reconnects == 2
    logins = [
        {"action": "auth", "key": ALPACA_KEY, "secret": ALPACA_SECRET},
        {"action": "subscribe", "trades": ["IWM"]},
    ]
    assert fake.received[:6] == logins * 3
    assert [t[4] for t in sink.trades] == list(range(900, 906))
    errors = [r.getMessage() for r in client_logs(caplog) if r.levelno == logging.ERROR]
    assert len(errors) == 1 and "connection limit exceeded (code 406)" in errors[0]
    assert "Alpaca allows one" in errors[0]


async def test_alpaca_stale_in_session_and_quiet_when_closed(
    iwm_trades: list[tuple[int, float, int]],
) -> None:
    calendar = StubCalendar(True)
    t, p, v = iwm_trades[0]
    fake = FakeAlpaca([("send", [ap_trade(t, p, v, 1)])])  # then silence, every connection
    sink = RecordingSink()
    async with server(fake) as url:
        streamer = alpaca(url, sink, calendar=calendar, stale_after=0.3)
        async with streamer:
            await until(lambda: sink.states == ["ok", "stale"], "stale after the one trade")
            await until(lambda: fake.connections >= 2, "a reconnect")
            calendar.open = False
            await until(lambda: sink.states[-1] == "closed", "closed")
            settled = fake.connections
            await asyncio.sleep(1.2)
            assert fake.connections == settled  # silence while closed keeps the socket
            assert sink.states[-1] == "closed"
    assert fake.received.count({"action": "subscribe", "trades": ["IWM"]}) == fake.connections
