"""Binance trade captures synthesised from real bars, for the fake exchange to replay.

The real trade captures in ``../shared/data`` and the bundled samples span minutes; a replay
of days (the crypto half of a trading week, beside the fake Yahoo) needs trades of real bars
instead. ``write_capture`` turns bars into the ``<receive ns> <combined-stream JSON>`` lines
of a Binance ``@trade`` capture, which ``FakeExchange`` replays like a real one:

- each bar becomes ``per_bar`` trades (at least four), evenly spaced from its open time: the
  open first, then the low and the high (the high first on a falling bar) at a third and
  two thirds of the way, the close last, in straight lines between them, the prices rounded
  to the bar's own decimals (so every one lies within the bar's low and high);
- the bar's volume is split evenly over its trades in units of 1e-8 (the last one takes
  what is left, so they add up to it exactly);
- trade ids are consecutive from ``first_id``, receive and event times are the trade's.

So the bars built from the trades (by the fake's klines or by a daemon) are the input bars:
the same open, high, low and close, and the same volume up to float rounding.
"""

from __future__ import annotations

import gzip
import json
from decimal import ROUND_HALF_EVEN, Decimal
from pathlib import Path
from typing import TextIO

import numpy as np

from moodring.market.frame import BarFrame

__all__ = ["write_capture"]

_UNIT = Decimal("0.00000001")
_DUMPS = json.JSONEncoder(separators=(",", ":")).encode


def _places(values: np.ndarray) -> int:
    """Return the most decimals any of the prices is written with (at most 8)."""
    most = 0
    for value in np.unique(values).tolist():
        exponent = Decimal(repr(float(value))).normalize().as_tuple().exponent
        if isinstance(exponent, int):
            most = max(most, -exponent)
    return min(most, 8)


def _path(o: float, h: float, low: float, c: float, n: int) -> np.ndarray:
    """Return ``n`` prices from the open through the extremes to the close."""
    first, second = (low, h) if c >= o else (h, low)
    anchors = [0, round((n - 1) / 3), round(2 * (n - 1) / 3), n - 1]
    return np.interp(np.arange(n), anchors, [o, first, second, c])


def write_capture(
    bars: BarFrame,
    symbol: str,
    path: str | Path,
    *,
    per_bar: int = 4,
    length_ms: int | None = None,
    first_id: int = 1,
) -> int:
    """Write ``bars`` of ``symbol`` (``ETHUSDT``) as a Binance trade capture; return the trades.

    ``length_ms`` is the bars' length (default: the most common step between them).
    """
    if len(bars) == 0:
        raise ValueError("no bars to make trades of")
    if length_ms is None:
        if len(bars) < 2:
            raise ValueError("one bar does not tell the bar length: give length_ms")
        steps, counts = np.unique(np.diff(bars.time), return_counts=True)
        length_ms = int(steps[np.argmax(counts)])
    n = max(4, per_bar)
    places = _places(np.concatenate([bars.open, bars.high, bars.low, bars.close]))
    tick = Decimal(1).scaleb(-places)
    stream = f"{symbol.lower()}@trade"
    target = Path(path)
    opener = gzip.open if target.suffix == ".gz" else open
    trade_id = first_id
    with opener(target, "wt", encoding="utf-8") as out:
        for row in range(len(bars)):
            start = int(bars.time[row])
            prices = _path(
                float(bars.open[row]),
                float(bars.high[row]),
                float(bars.low[row]),
                float(bars.close[row]),
                n,
            )
            units = int((Decimal(repr(float(bars.volume[row]))) / _UNIT).to_integral_value())
            share, rest = divmod(units, n)
            for k in range(n):
                t_ms = start + k * length_ms // n
                price = Decimal(repr(float(prices[k]))).quantize(tick, ROUND_HALF_EVEN)
                amount = (share + (rest if k == n - 1 else 0)) * _UNIT
                _write(out, stream, symbol, t_ms, trade_id, price, amount, k % 2 == 1)
                trade_id += 1
    return trade_id - first_id


def _write(
    out: TextIO,
    stream: str,
    symbol: str,
    t_ms: int,
    trade_id: int,
    price: Decimal,
    amount: Decimal,
    maker: bool,
) -> None:
    """Write one capture line: receive time in ns, then the combined-stream frame."""
    data = {
        "e": "trade",
        "E": t_ms,
        "s": symbol.upper(),
        "t": trade_id,
        "p": f"{price:.8f}",
        "q": f"{amount:.8f}",
        "T": t_ms,
        "m": maker,
        "M": True,
    }
    out.write(f"{t_ms * 1_000_000} {_DUMPS({'stream': stream, 'data': data})}\n")
