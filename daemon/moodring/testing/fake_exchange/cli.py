"""``python -m moodring.testing.fake_exchange``: run a fake exchange until SIGINT/SIGTERM."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from moodring.testing.fake_exchange.core import FakeExchange
from moodring.testing.fake_exchange.protocols import PROTOCOLS
from moodring.testing.fake_exchange.universe import load_universe_bars
from moodring.testing.serving import serve_until_signalled


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """Parse the command line."""
    parser = argparse.ArgumentParser(
        prog="python -m moodring.testing.fake_exchange",
        description="Replay captured Binance trades as a local fake exchange for ccxt.pro.",
    )
    parser.add_argument("--capture", action="append", default=[], type=Path, help="capture file")
    parser.add_argument(
        "--relabel",
        action="append",
        default=[],
        metavar="NEW=CAPTURED",
        help="also replay a captured market's trades as another market, e.g. "
        "SOLUSDT=ETHUSDT (repeatable)",
    )
    parser.add_argument(
        "--relabel-thin",
        type=int,
        default=1,
        metavar="K",
        help="a relabelled market's trade stream carries one in every K of its trades",
    )
    parser.add_argument(
        "--kline-every",
        type=float,
        default=None,
        metavar="SECONDS",
        help="send each market's candle updates at most every SECONDS (Binance: 2)",
    )
    parser.add_argument(
        "--weight-limit",
        type=int,
        default=None,
        metavar="N",
        help="answer REST past N request weight a minute with HTTP 429 (Binance: 6000)",
    )
    parser.add_argument(
        "--lead",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="replay the capture's first SECONDS at once (history for REST klines)",
    )
    parser.add_argument(
        "--exchange",
        choices=list(PROTOCOLS),
        default="binance",
        help="the exchange protocol to speak (default binance)",
    )
    parser.add_argument(
        "--quote",
        default=None,
        help="quote currency of the markets (default USD on coinbase and kraken, else USDT)",
    )
    parser.add_argument(
        "--universe",
        action="append",
        default=[],
        type=Path,
        help="folder or file of <BASE>USDT_1d.csv daily bars to serve (binance only)",
    )
    parser.add_argument("--today", default=None, help="the universe's forming day (YYYY-MM-DD)")
    parser.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (0 = any free)")
    parser.add_argument(
        "--speed", type=float, default=1.0, help="times real time; 0 or inf = at once"
    )
    parser.add_argument("--drop-every", type=float, default=None, help="close sockets every N s")
    parser.add_argument("--start-paused", action="store_true", help="silent until SIGUSR2")
    parser.add_argument("--start-now", action="store_true", help="start the clock without waiting")
    parser.add_argument(
        "--loop", action="store_true", help="replay again, time-shifted, at the end"
    )
    parser.add_argument(
        "--restricted",
        action="store_true",
        help="answer every request as the exchange answers a refused location (451/403)",
    )
    parser.add_argument("--log-level", default="INFO", help="stderr log level")
    args = parser.parse_args(argv)
    if not args.capture and not args.universe:
        parser.error("give at least one --capture or --universe")
    if args.universe and args.exchange != "binance":
        parser.error("--universe is served by --exchange binance only")
    missing = [str(p) for p in [*args.capture, *args.universe] if not p.exists()]
    if missing:
        parser.error(f"no such file: {', '.join(missing)}")
    for item in args.relabel:
        new, sep, old = item.partition("=")
        if not sep or not new.isalnum() or not old.isalnum():
            parser.error(f"--relabel takes NEW=CAPTURED symbols like SOLUSDT=ETHUSDT, not {item!r}")
    if args.relabel_thin < 1:
        parser.error(f"--relabel-thin must be at least 1, not {args.relabel_thin}")
    if args.kline_every is not None and args.kline_every <= 0:
        parser.error(f"--kline-every must be positive, not {args.kline_every:g}")
    if args.weight_limit is not None and args.weight_limit < 1:
        parser.error(f"--weight-limit must be at least 1, not {args.weight_limit}")
    if args.lead < 0:
        parser.error(f"--lead must not be negative, not {args.lead:g}")
    if args.quote is not None and not args.quote.isalnum():
        parser.error(f"--quote must be a currency code like USD, not {args.quote!r}")
    return args


def _fake(args: argparse.Namespace) -> FakeExchange:
    """Return the fake exchange the arguments describe (ValueError: they do not fit the data)."""
    return FakeExchange(
        args.capture,
        exchange=args.exchange,
        quote=args.quote,
        speed=args.speed,
        drop_every=args.drop_every,
        loop=args.loop,
        autostart=not args.start_now,
        start_paused=args.start_paused,
        universe=load_universe_bars(args.universe) if args.universe else None,
        today=args.today,
        restricted=args.restricted,
        relabel=dict(item.split("=", 1) for item in args.relabel),
        relabel_thin=args.relabel_thin,
        kline_every=args.kline_every,
        weight_limit=args.weight_limit,
        lead=args.lead,
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point."""
    args = _parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(),
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    logging.getLogger("websockets").setLevel(logging.WARNING)
    try:
        fake = _fake(args)
    except ValueError as exc:  # e.g. --relabel of a market no capture holds
        print(f"python -m moodring.testing.fake_exchange: error: {exc}", file=sys.stderr)
        return 2
    asyncio.run(serve_until_signalled(fake, args.port))
    return 0
