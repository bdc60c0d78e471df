"""ccxt.pro exchanges: one client per exchange, each stream's own clock, REST warm-up.

Feeds of one exchange (and endpoints) share a client (``ExchangeFeeds`` in ``exchange``);
they warm up from the exchange's REST klines, and their bars close by each stream's
exchange time. ``patch`` holds the hooks into ccxt.pro's receive path.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, ClassVar, Literal

from moodring.feeds.source import Clock, FeedPart, FeedWiring, register
from moodring.settings import FeedConfig

if TYPE_CHECKING:
    from moodring.feeds.check import FeedCheck


class CcxtFeedConfig(FeedConfig):
    """A feed of a ccxt.pro exchange: its trades, or its candles."""

    source: Literal["ccxt"] = "ccxt"
    exchange: str = "binance"
    stream: Literal["trades", "ohlcv"] = "trades"

    @property
    def repeats_dropped(self) -> bool:
        """Return whether the exchange numbers its trades: a feed drops an id it has passed."""
        from moodring.feeds.ccxt.venues import venue

        return venue(self.exchange).numbered


class CcxtSource:
    """Feeds of ccxt.pro exchanges."""

    name: ClassVar[str] = "ccxt"
    config: ClassVar[type[FeedConfig]] = CcxtFeedConfig
    clock: ClassVar[Clock] = "stream"

    def warm_up_bars(self, capacity: int) -> int:
        """Return the closed bars a warm-up fetches: a ring-full and one (with the forming one)."""
        return capacity + 1

    def build(self, feeds: Mapping[str, FeedConfig], wiring: FeedWiring) -> list[FeedPart]:
        """Return one ``ExchangeFeeds`` per exchange and endpoints; each warms itself up."""
        from moodring.feeds.ccxt.exchange import ExchangeFeeds  # ccxt.pro is heavy

        groups: dict[tuple[str, str | None, str | None], dict[str, CcxtFeedConfig]] = {}
        for name, feed in feeds.items():
            assert isinstance(feed, CcxtFeedConfig)
            groups.setdefault((feed.exchange, feed.ws_url, feed.rest_url), {})[name] = feed
        return [
            ExchangeFeeds(
                exchange, group, wiring.sink, wiring.builders, on_reconnect=wiring.on_reconnect
            )
            for (exchange, _, _), group in groups.items()
        ]

    async def check(self, name: str, feed: FeedConfig, timeout: float) -> FeedCheck:
        """Try the feed's REST API and websocket once (``moodring check-feeds``)."""
        from moodring.feeds.ccxt.check import check

        return await check(name, feed, timeout)


register(CcxtSource())
