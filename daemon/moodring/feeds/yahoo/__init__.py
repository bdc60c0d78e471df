"""Yahoo Finance: the keyless streamer of one symbol's ticks, warmed up from its chart API.

``ws_url`` points at another streamer, ``rest_url`` at another chart API (the fake Yahoo).
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import TYPE_CHECKING, ClassVar, Literal

from moodring.feeds.source import Clock, FeedPart, FeedWiring, register
from moodring.settings import FeedConfig

if TYPE_CHECKING:
    from moodring.feeds.check import FeedCheck


class YahooFeedConfig(FeedConfig):
    """A feed of Yahoo's streamer (``^RUT``, ``IWM``, ``RTY=F``)."""

    source: Literal["yahoo"] = "yahoo"


class YahooSource:
    """Feeds of Yahoo's streamer; their bars close by the stream's own time."""

    name: ClassVar[str] = "yahoo"
    config: ClassVar[type[FeedConfig]] = YahooFeedConfig
    clock: ClassVar[Clock] = "stream"

    def build(self, feeds: Mapping[str, FeedConfig], wiring: FeedWiring) -> list[FeedPart]:
        """Return one streamer per feed, its history from the chart API at ``rest_url``."""
        from moodring.feeds.equity import EquityFeed, streamer_options
        from moodring.feeds.yahoo.history import CHART_BASE_URL, chart_bars
        from moodring.feeds.yahoo.stream import STREAMER_URL, YahooStreamer

        parts: list[FeedPart] = []
        for name, feed in feeds.items():
            streamer = functools.partial(
                YahooStreamer,
                name,
                feed.symbol,
                url=feed.ws_url or STREAMER_URL,
                **streamer_options(feed),
            )
            history = functools.partial(
                chart_bars, feed.symbol, base_url=feed.rest_url or CHART_BASE_URL
            )
            parts.append(EquityFeed(name, feed, wiring, streamer, history))
        return parts

    async def check(self, name: str, feed: FeedConfig, timeout: float) -> FeedCheck:
        """Try the feed's REST API and websocket once (``moodring check-feeds``)."""
        from moodring.feeds.yahoo.check import check

        return await check(name, feed, timeout)


register(YahooSource())
