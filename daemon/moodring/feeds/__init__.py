"""Feeds: market data sources, one package each behind one protocol (``source``).

Importing this package registers the built-in sources (``ccxt``, ``yahoo``, ``finnhub``,
``alpaca``); their heavy parts (ccxt.pro, websockets) load only when a feed is built.
"""

from moodring.feeds import alpaca, ccxt, finnhub, yahoo

__all__ = ["alpaca", "ccxt", "finnhub", "yahoo"]
