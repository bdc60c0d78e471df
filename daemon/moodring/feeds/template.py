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
  Yahoo's chart history of the same symbol, ``moodring.feeds.yahoo.history.warm_up``;
- the clock: ``stream`` if its frames carry exchange time that closes bars (a
  ``FeedPart`` then overrides ``clock_ms``, ``on_clock`` and ``resync``), else ``wall``.

An equity trade stream subclasses ``moodring.feeds.streamer.EquityStreamer`` (reconnects,
calendar-aware staleness, redacted logs) and runs in an ``EquityFeed``::

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
        '''Feeds of Acme's trade websocket; their bars close by the local clock.'''

        name: ClassVar[str] = "acme"
        config: ClassVar[type[FeedConfig]] = AcmeFeedConfig
        clock: ClassVar[Clock] = "wall"

        def build(self, feeds: Mapping[str, FeedConfig], wiring: FeedWiring) -> list[FeedPart]:
            '''Return one streamer per feed, warmed up from Yahoo's chart history.'''
            from moodring.feeds.acme.stream import ACME_URL, AcmeStreamer
            from moodring.feeds.equity import EquityFeed, streamer_options
            from moodring.feeds.yahoo.history import warm_up

            parts: list[FeedPart] = []
            for name, feed in feeds.items():
                assert isinstance(feed, AcmeFeedConfig)
                streamer = AcmeStreamer(
                    name,
                    feed.symbol,
                    wiring.sink,
                    url=feed.ws_url or ACME_URL,
                    api_key=feed.api_key,
                    **streamer_options(feed),
                )
                history = functools.partial(warm_up, name, feed.symbol, wiring)
                parts.append(EquityFeed(name, feed, streamer, history))
            return parts


    register(AcmeSource())
"""
