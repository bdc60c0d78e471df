"""An exchange's "too many requests" (HTTP 429 or 418): wait what it says, within a bound.

Binance answers a client past its request-weight limit with HTTP 429 and ``Retry-After``
(seconds until its window ends), and bans an IP that goes on asking (HTTP 418, again with
``Retry-After``). ccxt raises ``DDoSProtection`` (or its ``RateLimitExceeded``) and keeps
the answer's headers in ``last_response_headers``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from ccxt.base.errors import DDoSProtection

log = logging.getLogger("moodring.feeds.ccxt")

T = TypeVar("T")

# The longest ``Retry-After`` waited for in place; a longer one fails the call (RateLimitedError).
RETRY_AFTER_MAX = 120.0
# Waits for one call before it fails all the same.
RATE_LIMIT_TRIES = 3


class RateLimitedError(Exception):
    """The exchange refused requests for ``wait`` seconds more than a call may wait."""

    def __init__(self, message: str, wait: float) -> None:
        super().__init__(message)
        self.wait = wait


def retry_after(client: Any) -> float | None:
    """Return the ``Retry-After`` seconds of the client's last answer (None if it had none)."""
    headers = getattr(client, "last_response_headers", None) or {}
    for name, value in headers.items():
        if name.lower() == "retry-after":
            try:
                seconds = float(value)
            except (TypeError, ValueError):
                return None
            return seconds if seconds >= 0 else None
    return None


async def heeding_retry_after(
    client: Any,
    call: Callable[[], Awaitable[T]],
    *,
    timeout: float,
    what: str,
    longest: float = RETRY_AFTER_MAX,
    tries: int = RATE_LIMIT_TRIES,
) -> T:
    """Await ``call()`` (each try within ``timeout``); on a 429 wait its ``Retry-After``, retry.

    A refusal without ``Retry-After`` (a refused location) is raised as it is; one asking
    for longer than ``longest``, or the last of ``tries``, raises ``RateLimitedError``.
    """
    attempt = 0
    while True:
        attempt += 1
        try:
            async with asyncio.timeout(timeout):
                return await call()
        except DDoSProtection as exc:
            wait = retry_after(client)
            if wait is None:
                raise
            if wait > longest or attempt == tries:
                raise RateLimitedError(
                    f"{what}: rate-limited, retry after {wait:.0f} s", wait
                ) from exc
            log.warning(
                "%s: %s rate-limited (HTTP 429); waiting %.0f s as the exchange asks",
                getattr(client, "id", "exchange"),
                what,
                wait,
            )
            await asyncio.sleep(wait)
