"""Feed sources: one registry, per-source config models, and a daemon without source names."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import ClassVar, Literal

import pytest

from moodring.configfile import ConfigError, load_settings
from moodring.feeds.source import Clock, FeedPart, FeedWiring, register, unregister
from moodring.service import daemon as daemon_module
from moodring.service.daemon import Daemon
from moodring.settings import FeedConfig, Settings
from tests.support.wait import until


def config_error(tmp_path: Path, feeds: str) -> str:
    path = tmp_path / "moodring.yaml"
    path.write_text(f"feeds:\n{feeds}")
    with pytest.raises(ConfigError) as caught:
        load_settings(path)
    return str(caught.value)


def test_a_key_of_another_source_is_named_with_its_line(tmp_path: Path) -> None:
    text = config_error(tmp_path, "  rut: {symbol: ^RUT, source: yahoo, exchange: binance}\n")
    assert "feeds.rut.exchange (line 2): not a key of yahoo feeds (only of ccxt feeds)" in text


def test_an_unknown_source_names_the_known_ones(tmp_path: Path) -> None:
    text = config_error(tmp_path, "  rut: {symbol: ^RUT, source: bloomberg}\n")
    assert (
        "feeds.rut.source (line 2): unknown feed source 'bloomberg' "
        "(known: alpaca, ccxt, finnhub, yahoo)"
    ) in text


def test_each_feed_gets_the_model_of_its_source() -> None:
    settings = Settings(
        feeds={
            "eth": {"symbol": "ETH/USDT", "stream": "ohlcv"},
            "rut": {"symbol": "^RUT", "source": "yahoo", "market": "equity"},
            "iwm": {"symbol": "IWM", "source": "alpaca", "api_key": "k", "api_secret": "s"},
        }
    )
    models = {name: type(feed).__name__ for name, feed in settings.feeds.items()}
    assert models == {
        "eth": "CcxtFeedConfig",
        "rut": "YahooFeedConfig",
        "iwm": "AlpacaFeedConfig",
    }
    dumped = settings.model_dump(mode="json")["feeds"]  # show-config prints each source's keys
    assert dumped["eth"]["stream"] == "ohlcv" and "exchange" not in dumped["rut"]


# --- a source the daemon has never heard of ------------------------------------------------


class TickFeedConfig(FeedConfig):
    source: Literal["tick"] = "tick"


class TickPart(FeedPart):
    """Sends one trade once warmed up; ``fail`` makes it break after that."""

    def __init__(self, feeds: Mapping[str, FeedConfig], wiring: FeedWiring, fail: bool) -> None:
        self.feeds = dict(feeds)
        self.warmed = asyncio.Event()
        self.wiring = wiring
        self.fail = fail

    async def _setup(self) -> None:
        self.spawn(self._run(), name="tick feed")

    async def _run(self) -> None:
        self.warmed.set()
        for feed in self.feeds:
            self.wiring.sink.trade(feed, 1_700_000_000_000, 10.0, 1.0, None)
        if self.fail:
            raise RuntimeError("the tick source broke")
        await asyncio.Event().wait()


class TickSource:
    name: ClassVar[str] = "tick"
    config: ClassVar[type[FeedConfig]] = TickFeedConfig
    clock: ClassVar[Clock] = "wall"

    def __init__(self, fail: bool = False) -> None:
        self.fail = fail

    def build(self, feeds: Mapping[str, FeedConfig], wiring: FeedWiring) -> list[FeedPart]:
        return [TickPart(feeds, wiring, self.fail)]


@pytest.fixture
def tick_source() -> Iterator[TickSource]:
    """The tick source, registered for the test's duration."""
    source = TickSource()
    register(source)
    try:
        yield source
    finally:
        unregister(source.name)


def tick_settings(tmp_path: Path) -> Settings:
    return Settings(
        feeds={"x": {"symbol": "X", "source": "tick", "market": "equity", "calendar": "none"}},
        http={"enabled": False},
        state_dir=tmp_path / "state",
    )


async def test_a_registered_source_runs_in_the_daemon_unchanged(
    tick_source: TickSource, tmp_path: Path
) -> None:
    async with Daemon(tick_settings(tmp_path)) as daemon:
        [part] = daemon.parts
        assert isinstance(part, TickPart)
        await asyncio.wait_for(part.warmed.wait(), 30)
        ticks = daemon.telemetry.tick_counts
        await until(lambda: ticks().get("x") == 1, "the tick")
        assert daemon.feeds.running
    assert not part.running


async def test_a_part_that_fails_stops_the_daemon_in_order_with_exit_70(
    tick_source: TickSource, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    tick_source.fail = True
    daemon = Daemon(tick_settings(tmp_path))
    assert await asyncio.wait_for(daemon.run(), 60) == daemon_module.EX_SOFTWARE
    messages = [r.getMessage() for r in caplog.records]
    assert "stopped by an unexpected error: RuntimeError: the tick source broke" in messages
    # the shutdown ran as after SIGTERM: the state saved, every part stopped
    assert (tmp_path / "state" / "snapshot.npz").is_file()
    assert messages[-2:] == [
        "stopped by an unexpected error: RuntimeError: the tick source broke",
        "stopped",
    ]
