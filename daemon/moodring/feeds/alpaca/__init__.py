"""Alpaca market data: keyed trade streams of US equities, warmed up from Yahoo's chart history.

The free plan streams IEX's trades (``v2/iex``; its volume is only IEX's share) and has no
free history of them, so Alpaca feeds warm up from Yahoo's chart API for the same symbol:
an explicit choice of this source.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import ClassVar, Literal

from pydantic import SecretStr

from moodring.feeds.source import Clock, FeedPart, FeedWiring, KeyedFeedConfig, register
from moodring.settings import FeedConfig


class AlpacaFeedConfig(KeyedFeedConfig):
    """A feed of Alpaca's market data websocket (``api_key`` and ``api_secret``)."""

    needs: ClassVar[tuple[str, ...]] = ("api_key", "api_secret")
    source: Literal["alpaca"] = "alpaca"
    api_secret: SecretStr | None = None


class AlpacaSource:
    """Feeds of Alpaca's market data websocket; their bars close by the stream's own time."""

    name: ClassVar[str] = "alpaca"
    config: ClassVar[type[FeedConfig]] = AlpacaFeedConfig
    clock: ClassVar[Clock] = "stream"

    def build(self, feeds: Mapping[str, FeedConfig], wiring: FeedWiring) -> list[FeedPart]:
        """Return one streamer per feed, its history from Yahoo's chart API."""
        from moodring.feeds.alpaca.stream import ALPACA_URL, AlpacaStreamer
        from moodring.feeds.equity import EquityFeed, streamer_options
        from moodring.feeds.yahoo.history import chart_bars

        parts: list[FeedPart] = []
        for name, feed in feeds.items():
            assert isinstance(feed, AlpacaFeedConfig)
            streamer = functools.partial(
                AlpacaStreamer,
                name,
                feed.symbol,
                url=feed.ws_url or ALPACA_URL,
                api_key=feed.api_key,
                api_secret=feed.api_secret,
                **streamer_options(feed),
            )
            # no free history of its own: Yahoo's chart history of the symbol
            history = functools.partial(chart_bars, feed.symbol)
            parts.append(EquityFeed(name, feed, wiring, streamer, history))
        return parts


register(AlpacaSource())
