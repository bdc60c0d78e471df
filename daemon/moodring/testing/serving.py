"""Run a fake (exchange or Yahoo) as a process: its port and URLs on stdout, signals."""

from __future__ import annotations

import asyncio
import signal
from typing import Protocol


class Replaying(Protocol):
    """A fake server replaying captured data (``FakeExchange``, ``FakeYahoo``)."""

    @property
    def port(self) -> int:
        """Return the listening port."""
        ...

    @property
    def ws_url(self) -> str:
        """Return the websocket URL."""
        ...

    @property
    def rest_url(self) -> str:
        """Return the REST URL."""
        ...

    async def start(self, port: int = 0) -> int:
        """Start listening and return the port."""
        ...

    async def stop(self) -> None:
        """Stop serving."""
        ...

    def pause(self) -> None:
        """Pause the replay."""
        ...

    def resume(self) -> None:
        """Resume the replay."""
        ...


async def serve_until_signalled(fake: Replaying, port: int) -> None:
    """Serve until SIGINT/SIGTERM: port on the first stdout line, URLs on the second.

    SIGUSR1 pauses the replay and SIGUSR2 resumes it.
    """
    await fake.start(port)
    print(fake.port, flush=True)
    print(f"ws_url={fake.ws_url} rest_url={fake.rest_url}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    loop.add_signal_handler(signal.SIGUSR1, fake.pause)
    loop.add_signal_handler(signal.SIGUSR2, fake.resume)
    try:
        await stop.wait()
    finally:
        await fake.stop()
