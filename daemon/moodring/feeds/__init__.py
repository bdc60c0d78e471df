"""Feeds: market data sources (ccxt.pro exchanges, the Yahoo streamer), their health and clocks."""
