"""Hooks into ccxt.pro's receive path: why moodring subclasses its exchange classes.

ccxt.pro parses each websocket frame and hands it to the exchange's handler unguarded, then
keeps what the handler parsed in bounded per-symbol caches that ``watch_*`` calls read
from. Two things follow that moodring cannot accept: one malformed frame raises inside the
receive path (and ends the stream), and a burst longer than a cache between two
``watch_*`` answers is evicted unread (trades lost). ccxt has no hook for either, so
``guarded`` subclasses an exchange class to catch every frame's failure and to tap the
caches as the handler fills them: every trade and candle is taken as ccxt parses it,
never read back from its caches. Only ccxt's internals named here are relied on
(``client()``, ``handle_text_or_binary_message``, ``handle_message``, ``handle_ohlcv``,
the ``trades``/``ohlcvs`` attributes and the caches' ``append``); the tests drive the real
ccxt.pro parsers through them.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

TradeCallback = Callable[[dict[str, Any]], None]
# (symbol, timeframe, [t, o, h, l, c, v], the raw message ccxt parsed it from or None)
CandleCallback = Callable[[str, str, Any, object], None]


def guarded(
    cls: type,
    on_bad: Callable[[str, object], None],
    on_trade: TradeCallback | None = None,
    on_candle: CandleCallback | None = None,
    on_frame: Callable[[object], None] | None = None,
    after_frame: Callable[[object], None] | None = None,
    on_lost: Callable[[Any, BaseException], None] | None = None,
) -> type:
    """Return ``cls`` (a ccxt.pro exchange) whose websocket frames cannot break it.

    ccxt parses each frame and hands it to the exchange's handler unguarded: a malformed
    frame raises inside its receive path. Here every frame that fails to decode or to be
    handled is passed to ``on_bad(reason, frame)`` and skipped; the stream goes on.

    With ``on_trade``, every trade the exchange's handler stores is also passed to it at
    once: ccxt's bounded per-symbol cache overflows in bursts between two ``watch_trades``
    answers, and whatever it evicted before being read would be lost. ``on_candle`` gets
    every candle update the same way, with the raw message ccxt's ``handle_ohlcv`` parsed
    it from (unified candles drop fields such as Binance's closed flag). ``on_frame(data)`` is
    called as each websocket frame arrives, before its trades and candles, and
    ``after_frame(data)`` once ccxt handled it without failing (a frame that gave nothing
    may be one ccxt ignored: a trade frame with its channel broken). ``on_lost(exchange,
    error)`` is called when one of its websocket connections fails or is closed (ccxt then
    rejects the pending watches; a watch not pending at that moment would never hear of it).
    """

    class Guarded(cls):
        @property
        def trades(self) -> dict[str, Any] | None:
            return self.__dict__.get("_moodring_trades")

        @trades.setter
        def trades(self, caches: dict[str, Any] | None) -> None:
            if on_trade is not None and caches is not None:
                caches = _TradeTap(on_trade, caches)
            self._moodring_trades = caches

        @property
        def ohlcvs(self) -> dict[str, Any] | None:
            return self.__dict__.get("_moodring_ohlcvs")

        @ohlcvs.setter
        def ohlcvs(self, caches: dict[str, Any] | None) -> None:
            if on_candle is not None and caches is not None:
                caches = _CandleTap(self._moodring_candle, caches)
            self._moodring_ohlcvs = caches

        def _moodring_candle(self, symbol: str, timeframe: str, row: Any) -> None:
            assert on_candle is not None
            on_candle(symbol, timeframe, row, self.__dict__.get("_moodring_raw"))

        if hasattr(cls, "handle_ohlcv"):

            def handle_ohlcv(self, client: Any, message: Any) -> Any:
                self._moodring_raw = message
                try:
                    return super().handle_ohlcv(client, message)
                finally:
                    self._moodring_raw = None

        def client(self, url: str) -> Any:
            ws = super().client(url)
            if not getattr(ws, "_moodring_guarded", False):
                decode = ws.handle_text_or_binary_message

                def guard(data: Any) -> None:
                    if on_frame is not None:
                        on_frame(data)
                    try:
                        decode(data)
                    except Exception as exc:  # any frame, any failure: count and skip
                        on_bad(f"unreadable frame ({type(exc).__name__})", data)
                        return
                    if after_frame is not None:
                        after_frame(data)

                ws.handle_text_or_binary_message = guard
                if on_lost is not None:
                    failed, closed = ws.on_error, ws.on_close

                    def on_error(error: Any) -> None:
                        on_lost(self, error)
                        failed(error)

                    def on_close(code: Any) -> None:
                        on_lost(self, ConnectionError(f"websocket closed ({code})"))
                        closed(code)

                    ws.on_error, ws.on_close = on_error, on_close
                ws._moodring_guarded = True
            return ws

        def handle_message(self, client: Any, message: Any) -> Any:
            if not isinstance(message, dict | list):
                on_bad("not JSON", message)
                return None
            return super().handle_message(client, message)

    Guarded.__name__ = cls.__name__
    return Guarded


class _TradeTap(dict[str, Any]):
    """ccxt's trade caches by symbol; each cache put in passes its appended trades on."""

    def __init__(self, on_trade: TradeCallback, caches: dict[str, Any]) -> None:
        super().__init__()
        self._on_trade = on_trade
        for symbol, cache in caches.items():
            self[symbol] = cache

    def __setitem__(self, symbol: str, cache: Any) -> None:
        if not getattr(cache, "_moodring_tapped", False):
            for trade in list(cache):  # handlers may append the first trade before storing
                self._on_trade(trade)
            cache.__class__ = _tapped_class(type(cache))
            cache._moodring_tap = self._on_trade
        super().__setitem__(symbol, cache)


_TAPPED: dict[type, type] = {}


def _tapped_class(cls: type) -> type:
    """Return a subclass of a ccxt cache class whose ``append`` calls its tap."""
    if cls not in _TAPPED:

        class Tapped(cls):
            _moodring_tapped = True

            def append(self, item: Any) -> None:
                super().append(item)
                self._moodring_tap(item)

        Tapped.__name__ = Tapped.__qualname__ = cls.__name__
        _TAPPED[cls] = Tapped
    return _TAPPED[cls]


class _CandleTap(dict[str, Any]):
    """ccxt's candle caches by symbol, then by timeframe; each cache passes its candles on."""

    def __init__(self, on_candle: Callable[[str, str, Any], None], caches: dict[str, Any]) -> None:
        super().__init__()
        self._on_candle = on_candle
        for symbol, by_timeframe in caches.items():
            self[symbol] = by_timeframe

    def __setitem__(self, symbol: str, by_timeframe: Any) -> None:
        if isinstance(by_timeframe, dict) and not isinstance(by_timeframe, _TimeframeTap):
            by_timeframe = _TimeframeTap(symbol, self._on_candle, by_timeframe)
        super().__setitem__(symbol, by_timeframe)


class _TimeframeTap(dict[str, Any]):
    """One symbol's candle caches by timeframe; each cache put in passes its candles on."""

    def __init__(
        self, symbol: str, on_candle: Callable[[str, str, Any], None], caches: dict[str, Any]
    ) -> None:
        super().__init__()
        self._symbol = symbol
        self._on_candle = on_candle
        for timeframe, cache in caches.items():
            self[timeframe] = cache

    def __setitem__(self, timeframe: str, cache: Any) -> None:
        if hasattr(cache, "append") and not getattr(cache, "_moodring_tapped", False):
            tap = functools.partial(self._on_candle, self._symbol, timeframe)
            for row in list(cache):  # handlers may append the first candle before storing
                tap(row)
            cache.__class__ = _tapped_class(type(cache))
            cache._moodring_tap = tap
        super().__setitem__(timeframe, cache)
