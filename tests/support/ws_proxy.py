"""A websocket relay for fault tests: frames pass through, and a test may add its own."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

from websockets.asyncio.client import ClientConnection, connect
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed

# Given each frame from upstream, return the frames to send in its place (it included or not).
Rewrite = Callable[[str], list[str]]


class WebsocketProxy:
    """Relays every websocket connection on 127.0.0.1 to the same path upstream.

    Frames from the client go upstream unchanged; each frame from upstream is passed to
    ``rewrite``, and what it returns is sent to the client in order.
    """

    def __init__(self, upstream_port: int, rewrite: Rewrite) -> None:
        self.upstream_port = upstream_port
        self.rewrite = rewrite
        self.port = 0
        self._server: Server | None = None

    async def start(self) -> int:
        self._server = await serve(self._relay, "127.0.0.1", 0, compression=None, max_queue=None)
        self.port = self._server.sockets[0].getsockname()[1]
        return self.port

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _relay(self, client: ServerConnection) -> None:
        path = client.request.path if client.request is not None else "/"
        url = f"ws://127.0.0.1:{self.upstream_port}{path}"
        async with connect(url, compression=None, max_queue=None) as upstream:
            tasks = [
                asyncio.create_task(self._pump(client, upstream)),
                asyncio.create_task(self._down(upstream, client)),
            ]
            try:
                await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)

    @staticmethod
    async def _pump(client: ServerConnection, upstream: ClientConnection) -> None:
        with contextlib.suppress(ConnectionClosed):
            async for message in client:
                await upstream.send(message)

    async def _down(self, upstream: ClientConnection, client: ServerConnection) -> None:
        with contextlib.suppress(ConnectionClosed):
            async for message in upstream:
                text = message if isinstance(message, str) else message.decode()
                for frame in self.rewrite(text):
                    await client.send(frame)
