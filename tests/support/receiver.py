"""A real local HTTP endpoint that apprise's json:// posts to, for delivery tests."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class Receiver:
    """A local HTTP endpoint for apprise's json://: ok (200), fail (500), slow, hang, or down.

    ``hang`` holds each request unanswered and unrecorded (``hung`` is set) until
    ``release`` is set, then answers 500.

    ``answer``, when set, picks the HTTP status of each message from its payload; the
    payloads answered with anything but 2xx are kept in ``refused``.
    """

    def __init__(self) -> None:
        self.mode = "ok"
        self.answer: Callable[[dict[str, Any]], int] | None = None
        self.port = 0
        self.requests = 0
        self.payloads: list[dict[str, Any]] = []
        self.refused: list[dict[str, Any]] = []
        self.events: list[str] = []
        self.paths: list[str] = []
        self.hung = threading.Event()
        self.release = threading.Event()
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self.up()

    @property
    def messages(self) -> list[str]:
        with self._lock:
            return [p["message"] for p in self.payloads]

    def refusing(self, status: int, containing: str) -> None:
        """Answer ``status`` to every message whose text contains ``containing``, else 200."""
        self.answer = lambda payload: status if containing in payload["message"] else 200

    def up(self) -> None:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                with receiver._lock:
                    receiver.requests += 1
                    mode = receiver.mode
                if mode == "hang":
                    receiver.hung.set()
                    receiver.release.wait(60)
                if mode in ("fail", "hang"):
                    self.send_response(500)
                    self.end_headers()
                    return
                status = receiver.answer(json.loads(body)) if receiver.answer else 200
                if not 200 <= status < 300:
                    with receiver._lock:
                        receiver.refused.append(json.loads(body))
                    self.send_response(status)
                    self.end_headers()
                    return
                if mode == "slow":
                    receiver.events.append("received")
                    time.sleep(2.0)
                with receiver._lock:
                    receiver.payloads.append(json.loads(body))
                    receiver.paths.append(self.path)
                self.send_response(200)
                self.end_headers()
                if mode == "slow":
                    receiver.events.append("responded")

            def log_message(self, format: str, *args: Any) -> None:
                pass

        server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        server.daemon_threads = True
        self.port = server.server_address[1]
        threading.Thread(target=server.serve_forever, args=(0.02,), daemon=True).start()
        self._server = server

    def down(self) -> None:
        """Close the listening socket: connections are refused until ``up()``."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def url(self, path: str = "hook") -> str:
        return f"json://127.0.0.1:{self.port}/{path}"
