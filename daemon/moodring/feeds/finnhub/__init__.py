"""Finnhub: keyed trade streams of US equities, warmed up from Yahoo's chart history.

Finnhub has no free history (``/stock/candle`` needs a paid plan), so its feeds warm up from
Yahoo's chart API for the same symbol: an explicit choice of this source.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import ClassVar, Literal

from moodring.feeds.source import Clock, FeedPart, FeedWiring, KeyedFeedConfig, register
from moodring.settings import FeedConfig


class FinnhubFeedConfig(KeyedFeedConfig):
    """A feed of Finnhub's trade websocket (``api_key``: the token)."""

    source: Literal["finnhub"] = "finnhub"


class FinnhubSource:
    """Feeds of Finnhub's trade websocket; their bars close by the stream's own time."""

    name: ClassVar[str] = "finnhub"
    config: ClassVar[type[FeedConfig]] = FinnhubFeedConfig
    clock: ClassVar[Clock] = "stream"

    def build(self, feeds: Mapping[str, FeedConfig], wiring: FeedWiring) -> list[FeedPart]:
        """Return one streamer per feed, its history from Yahoo's chart API."""
        from moodring.feeds.equity import EquityFeed, streamer_options
        from moodring.feeds.finnhub.stream import FINNHUB_URL, FinnhubStreamer
        from moodring.feeds.yahoo.history import chart_bars

        parts: list[FeedPart] = []
        for name, feed in feeds.items():
            assert isinstance(feed, FinnhubFeedConfig)
            streamer = functools.partial(
                FinnhubStreamer,
                name,
                feed.symbol,
                url=feed.ws_url or FINNHUB_URL,
                api_key=feed.api_key,
                **streamer_options(feed),
            )
            # no free history of its own: Yahoo's chart history of the symbol
            history = functools.partial(chart_bars, feed.symbol)
            parts.append(EquityFeed(name, feed, wiring, streamer, history))
        return parts


register(FinnhubSource())
