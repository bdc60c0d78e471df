"""Malformed trade frames in each exchange's shapes, to prove feeds count and survive them.

``fuzz_frames("kraken")`` starts from the fake's own trade frames of that exchange (real
captured trades, re-encoded) and breaks each one in one way: cut short, not UTF-8, not JSON,
the wrong JSON type, a trade field (price, amount, time, symbol, channel) missing or with a
value no trade can have, the trade list empty or of the wrong type, two frames glued
together, or nested too deep for ``json.loads``. None of them carries a usable trade; a feed
should count each as one bad frame and go on. The list is the same for the same arguments.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

SAMPLE = Path(__file__).resolve().parents[2] / "defaults" / "samples" / "ethusdt_trades.gz"

# The keys ccxt reads to make a trade of a frame, per exchange (anywhere in the frame).
TRADE_KEYS: dict[str, frozenset[str]] = {
    "binance": frozenset({"data", "e", "s", "p", "q", "T"}),
    "binanceus": frozenset({"data", "e", "s", "p", "q", "T"}),
    "coinbase": frozenset({"channel", "events", "trades", "product_id", "price", "size", "time"}),
    "kraken": frozenset({"channel", "data", "symbol", "price", "qty", "timestamp"}),
    "bybit": frozenset({"topic", "data", "p", "v", "T"}),
}
# Values no trade field can hold.
BAD_VALUES: tuple[Any, ...] = (
    None,
    "",
    "abc",
    "NaN",
    "Infinity",
    "-1",
    -1,
    True,
    [],
    {},
    "1e400",
    "0x1f",
    "2024-13-45T99:99:99Z",
    "\u0000",
    "x" * 300,
)


def _paths(node: Any, keys: frozenset[str], path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Return the paths to every value under one of ``keys`` in a parsed frame."""
    found: list[tuple[Any, ...]] = []
    if isinstance(node, dict):
        for key, value in node.items():
            if key in keys:
                found.append((*path, key))
            found.extend(_paths(value, keys, (*path, key)))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            found.extend(_paths(value, keys, (*path, index)))
    return found


def _parent(root: Any, path: tuple[Any, ...]) -> Any:
    """Return the container holding the value at ``path``."""
    node = root
    for step in path[:-1]:
        node = node[step]
    return node


def _replace(rng: random.Random, frame: Any, keys: frozenset[str]) -> str:
    """Give one trade field a value no trade can have."""
    path = rng.choice(_paths(frame, keys))
    _parent(frame, path)[path[-1]] = rng.choice(BAD_VALUES)
    return json.dumps(frame, separators=(",", ":"), ensure_ascii=False)


def _delete(rng: random.Random, frame: Any, keys: frozenset[str]) -> str:
    """Drop one trade field."""
    path = rng.choice(_paths(frame, keys))
    del _parent(frame, path)[path[-1]]
    return json.dumps(frame, separators=(",", ":"))


def _empty(rng: random.Random, frame: Any, keys: frozenset[str]) -> str:
    """Empty the trade list (or make it the wrong type)."""
    lists = [p for p in _paths(frame, keys) if isinstance(_parent(frame, p)[p[-1]], list | dict)]
    path = rng.choice(lists)
    _parent(frame, path)[path[-1]] = rng.choice([[], {}, "[]", None, 0])
    return json.dumps(frame, separators=(",", ":"))


def _truncate(rng: random.Random, text: str) -> str:
    """Cut a frame short."""
    return text[: rng.randrange(1, len(text) - 1)]


def _not_utf8(rng: random.Random, text: str) -> bytes:
    """Spoil a frame's bytes."""
    data = bytearray(text.encode())
    for _ in range(rng.randrange(1, 4)):
        data[rng.randrange(len(data))] = rng.choice([0x80, 0xC3, 0xFF, 0xFE])
    return bytes(data)


def _not_json(rng: random.Random, text: str) -> str:
    """Replace a frame by text that is not JSON."""
    choices = [
        "",
        " ",
        "null,",
        "{'single': 'quotes'}",
        "NaN",
        text.replace('"', "'"),
        text.replace(":", "=", 1),
        "{" + text,
        text + "}",
        "\u0000" + text,
    ]
    return rng.choice(choices)


def _wrong_type(rng: random.Random, text: str) -> str:
    """Replace a frame by JSON of the wrong type."""
    return rng.choice(["null", "0", "-1", "true", '"trade"', "[]", "{}", f"[{text}]", "[[]]"])


def _glued(rng: random.Random, text: str) -> str:
    """Glue two frames together (one message, two JSON documents)."""
    return text + rng.choice(["", " ", "\n"]) + text


def _deep(rng: random.Random, text: str) -> str:
    """Nest a frame deeper than ``json.loads`` can follow."""
    depth = rng.randrange(5_000, 20_000)
    return "[" * depth + text + "]" * depth


def fuzz_frames(
    exchange: str = "binance",
    count: int = 1000,
    *,
    seed: int = 0,
    captures: Sequence[Path | str] = (),
    quote: str | None = None,
) -> list[str | bytes]:
    """Return ``count`` malformed variants of an exchange's trade frames (same seed, same list).

    The frames start from the fake's trade frames of the first trades of ``captures``
    (default: the bundled ETHUSDT sample) under ``exchange``'s names.
    """
    from moodring.testing.fake_exchange.core import FakeExchange

    fake = FakeExchange(list(captures) or [SAMPLE], exchange=exchange, quote=quote)
    keys = TRADE_KEYS[exchange]
    market = fake.markets[0]
    valid = [fake.protocol.trade_frame(market, t) for t in market.trades[:50]]
    on_json: list[Callable[[random.Random, Any, frozenset[str]], str]] = [
        _replace,
        _replace,
        _replace,
        _delete,
        _delete,
        _empty,
    ]
    on_text: list[Callable[[random.Random, str], str | bytes]] = [
        _truncate,
        _truncate,
        _not_utf8,
        _not_json,
        _wrong_type,
        _glued,
        _deep,
    ]
    rng = random.Random(f"{exchange}:{seed}")
    frames: list[str | bytes] = []
    kinds = len(on_json) + len(on_text)
    for index in range(count):
        text = rng.choice(valid)
        kind = index % kinds
        if kind < len(on_json):
            frames.append(on_json[kind](rng, json.loads(text), keys))
        else:
            frames.append(on_text[kind - len(on_json)](rng, text))
    return frames
