"""A template for a new feed source: copy it to ``moodring/feeds/<name>/__init__.py``.

A source is one package. Its ``__init__`` holds what settings needs (the config model)
and the source itself; it stays light, so ``check-config`` never loads a websocket client:
the streaming code lives in a module of the package that ``build`` imports. Import the
package in ``moodring/feeds/__init__.py`` so that it registers; nothing else changes (the
daemon builds every feed through ``moodring.feeds.source``). Tests: the streamer against a
local fake server (``tests/test_keyed_feeds.py`` shows how), the config errors by key path.

Decide, and say in the docstring:

- the config: the keys every feed has come from ``FeedConfig``; add the source's own
  (``KeyedFeedConfig`` adds ``api_key``: list the keys it must have in ``needs``);
- the warm-up: the source's own history, or (as finnhub and alpaca do, having none free)
  Yahoo's chart history of the same symbol, ``moodring.feeds.yahoo.history.chart_bars``;
- the clock: ``stream`` if bars close by the stream's own time (a ``FeedPart`` then
  overrides ``clock_ms``, ``on_clock`` and ``resync``), else ``wall``.

An equity trade stream subclasses ``moodring.feeds.streamer.EquityStreamer`` (reconnects,
calendar-aware staleness, redacted logs, the data's clock) and runs in an ``EquityFeed``
(warm-up and repairs from its history; bars closed by the data's time)::

    '''Acme: keyed trade streams of US equities, warmed up from Yahoo's chart history.'''

    from __future__ import annotations

    import functools
    from collections.abc import Mapping
    from typing import ClassVar, Literal

    from moodring.feeds.source import Clock, FeedPart, FeedWiring, KeyedFeedConfig, register
    from moodring.settings import FeedConfig


    class AcmeFeedConfig(KeyedFeedConfig):
        '''A feed of Acme's trade websocket (``api_key``: the token).'''

        source: Literal["acme"] = "acme"


    class AcmeSource:
        '''Feeds of Acme's trade websocket; their bars close by the stream's own time.'''

        name: ClassVar[str] = "acme"
        config: ClassVar[type[FeedConfig]] = AcmeFeedConfig
        clock: ClassVar[Clock] = "stream"

        def build(self, feeds: Mapping[str, FeedConfig], wiring: FeedWiring) -> list[FeedPart]:
            '''Return one streamer per feed, its history from Yahoo's chart API.'''
            from moodring.feeds.acme.stream import ACME_URL, AcmeStreamer
            from moodring.feeds.equity import EquityFeed, streamer_options
            from moodring.feeds.yahoo.history import chart_bars

            parts: list[FeedPart] = []
            for name, feed in feeds.items():
                assert isinstance(feed, AcmeFeedConfig)
                streamer = functools.partial(
                    AcmeStreamer,
                    name,
                    feed.symbol,
                    url=feed.ws_url or ACME_URL,
                    api_key=feed.api_key,
                    **streamer_options(feed),
                )
                history = functools.partial(chart_bars, feed.symbol)
                parts.append(EquityFeed(name, feed, wiring, streamer, history))
            return parts


    register(AcmeSource())
"""
