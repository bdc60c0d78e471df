"""Yahoo's chart API (``/v8/finance/chart``): history bars of any timeframe.

Yahoo's history is free and keyless: Yahoo feeds warm up and repair their bars from it, and
so do the keyed equity sources that have no free history of their own (they chose it
explicitly). ``chart_bars`` is the ``History`` of an ``EquityFeed``.
"""

from __future__ import annotations

import json
import logging
import re
from datetime import UTC, datetime, timedelta, timezone
from typing import Any
from urllib.parse import quote
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import numpy as np

from moodring.feeds.yahoo.stream import USER_AGENT
from moodring.market.frame import BarFrame
from moodring.market.timeframe import Timeframe

log = logging.getLogger("moodring.feeds.yahoo")

CHART_BASE_URL = "https://query2.finance.yahoo.com"


class HistoryError(RuntimeError):
    """The chart API gave no usable bars for a symbol."""

    def __init__(self, symbol: str, status: int | None, message: str):
        where = f"HTTP {status}" if status is not None else "no HTTP status"
        super().__init__(f"Yahoo chart history for {symbol!r} failed ({where}): {message}")
        self.symbol = symbol
        self.status = status
        self.message = message


_DAILY_INTERVALS = {"1d", "5d", "1wk", "1mo", "3mo"}
_INTERVAL = re.compile(r"^(\d+)([mh])$")


def _exchange_tz(meta: dict[str, Any]) -> timezone | ZoneInfo:
    """Return the exchange time zone named in the chart meta (gmtoffset as a fallback)."""
    name = meta.get("exchangeTimezoneName")
    if isinstance(name, str) and name:
        try:
            return ZoneInfo(name)
        except (ZoneInfoNotFoundError, ValueError):
            pass
    offset = meta.get("gmtoffset")
    return timezone(timedelta(seconds=int(offset))) if isinstance(offset, int | float) else UTC


def parse_chart(symbol: str, body: Any, interval: str = "1d") -> BarFrame:
    """Turn a ``/v8/finance/chart`` JSON body into bars (daily bars stamped at UTC midnight)."""
    try:
        chart = body["chart"]
        error = chart.get("error")
        if error:
            raise HistoryError(symbol, 200, _describe(error))
        result = chart["result"][0]
        meta = result.get("meta") or {}
        stamps = result.get("timestamp") or []
        quote_cols = result["indicators"]["quote"][0] if stamps else {}
    except HistoryError:
        raise
    except (KeyError, IndexError, TypeError, AttributeError) as exc:
        raise HistoryError(symbol, 200, f"unexpected chart JSON ({exc!r})") from exc

    def column(name: str) -> list[Any]:
        values = quote_cols.get(name) or []
        if len(values) != len(stamps):
            raise HistoryError(
                symbol, 200, f"{name} has {len(values)} values for {len(stamps)} timestamps"
            )
        return values

    opens, highs, lows = column("open"), column("high"), column("low")
    closes, volumes = column("close"), column("volume")
    tz = _exchange_tz(meta)
    daily = interval in _DAILY_INTERVALS
    step_ms = None if daily else _interval_ms(interval)
    periods = [] if daily else _regular_periods(meta)
    rows: dict[int, tuple[float, float, float, float, float]] = {}
    last_ms: int | None = None
    for i, stamp in enumerate(stamps):
        close = closes[i]
        if stamp is None or close is None:
            continue
        c = float(close)
        o = float(opens[i]) if opens[i] is not None else c
        h = float(highs[i]) if highs[i] is not None else max(o, c)
        lo = float(lows[i]) if lows[i] is not None else min(o, c)
        v = float(volumes[i]) if volumes[i] is not None else 0.0
        if daily:
            day = datetime.fromtimestamp(stamp, tz).date()
            t_ms = int(datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp()) * 1000
            rows[t_ms] = (o, h, lo, c, v)  # a later row for the same day wins (the live bar)
            continue
        t_ms = int(stamp) * 1000
        if last_ms is not None and (
            (step_ms is not None and t_ms < last_ms + step_ms)
            or (periods and not any(a <= t_ms < b for a, b in periods))
        ):
            # Yahoo's last row: the last trade inside the forming bar, or the closing print
            # stamped at the session's end; either updates the bar before it
            po, ph, pl, _, pv = rows[last_ms]
            rows[last_ms] = (po, max(ph, h), min(pl, lo), c, pv + v)
            continue
        rows[t_ms] = (o, h, lo, c, v)
        last_ms = t_ms
    times = np.array(sorted(rows), dtype=np.int64)
    cols = np.array([rows[t] for t in times.tolist()], dtype=np.float64).reshape(-1, 5)
    return BarFrame(
        times,
        cols[:, 0].copy(),
        cols[:, 1].copy(),
        cols[:, 2].copy(),
        cols[:, 3].copy(),
        cols[:, 4].copy(),
    )


def _interval_ms(interval: str) -> int | None:
    """Return the length of an intraday chart interval (``5m``, ``60m``, ``1h``) in ms."""
    match = _INTERVAL.match(interval)
    if match is None:
        return None
    return int(match.group(1)) * (60_000 if match.group(2) == "m" else 3_600_000)


def _regular_periods(meta: dict[str, Any]) -> list[tuple[int, int]]:
    """Return the regular sessions (epoch ms) the chart meta lists in ``tradingPeriods``."""
    listed = meta.get("tradingPeriods")
    if isinstance(listed, dict):  # includePrePost=true nests them under "regular"
        listed = listed.get("regular")
    periods: list[tuple[int, int]] = []
    for day in listed if isinstance(listed, list) else []:
        for period in day if isinstance(day, list) else [day]:
            if isinstance(period, dict):
                start, end = period.get("start"), period.get("end")
                if isinstance(start, int) and isinstance(end, int):
                    periods.append((start * 1000, end * 1000))
    return periods


def _describe(error: Any) -> str:
    """Return a one-line description of a chart API error object."""
    if isinstance(error, dict):
        code, text = error.get("code"), error.get("description")
        return ": ".join(str(x) for x in (code, text) if x) or json.dumps(error)
    return str(error)


async def fetch_history(
    symbol: str,
    interval: str = "1d",
    range_: str = "6mo",
    *,
    base_url: str = CHART_BASE_URL,
    timeout: float = 30.0,
) -> BarFrame:
    """Fetch bars from Yahoo's chart API (``/v8/finance/chart/{symbol}``) as a BarFrame."""
    import aiohttp

    url = f"{base_url.rstrip('/')}/v8/finance/chart/{quote(symbol, safe='')}"
    params = {"interval": interval, "range": range_, "includePrePost": "false"}
    headers = {"User-Agent": USER_AGENT, "Accept": "application/json"}
    try:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout)) as session,
            session.get(url, params=params, headers=headers) as response,
        ):
            text = await response.text()
            status = response.status
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise HistoryError(symbol, None, f"{type(exc).__name__}: {exc}") from exc
    try:
        body = json.loads(text)
    except ValueError:
        body = None
    if status != 200:
        detail = text.strip()[:200] or "empty body"
        if isinstance(body, dict) and isinstance(body.get("chart"), dict):
            detail = _describe(body["chart"].get("error")) or detail
        raise HistoryError(symbol, status, detail)
    if body is None:
        raise HistoryError(symbol, status, f"response is not JSON: {text[:200]!r}")
    frame = parse_chart(symbol, body, interval)
    log.info("yahoo %s: fetched %d %s bars (%s)", symbol, len(frame), interval, range_)
    return frame


def chart_interval(timeframe: Timeframe) -> tuple[str, str]:
    """Return the chart interval whose bars tile a timeframe's bars, and a range to ask for.

    Yahoo's intraday bars are aligned to the 09:30 open, i.e. to the half hour in UTC: its
    60m bars open at :30, so hourly (and longer intraday) bars are made of 30m ones.
    """
    ms = timeframe.ms
    if timeframe.offset_ms:  # weeks, from Monday
        return "1wk", "5y"
    if ms % 86_400_000 == 0:
        return "1d", "2y"
    for interval, minutes, span in (("30m", 30, "1mo"), ("15m", 15, "1mo"), ("5m", 5, "1mo")):
        if ms % (minutes * 60_000) == 0:
            return interval, span
    return "1m", "5d"


async def chart_bars(
    symbol: str, timeframe: Timeframe, *, base_url: str = CHART_BASE_URL
) -> BarFrame:
    """Return the chart's bars of ``timeframe`` (the last one may still be forming)."""
    interval, span = chart_interval(timeframe)
    frame = await fetch_history(symbol, interval, span, base_url=base_url)
    step = _interval_ms(interval) or timeframe.ms
    if len(frame) == 0 or step >= timeframe.ms:
        return frame
    # every bucket the rows reach, the last one too: the caller keeps the ended ones
    stamps = frame.time - (frame.time - timeframe.offset_ms) % timeframe.ms
    first = np.flatnonzero(np.r_[True, stamps[1:] != stamps[:-1]])
    last = np.r_[first[1:] - 1, len(stamps) - 1]
    return BarFrame(
        stamps[first],
        frame.open[first],
        np.maximum.reduceat(frame.high, first),
        np.minimum.reduceat(frame.low, first),
        frame.close[last],
        np.add.reduceat(frame.volume, first),
    )
