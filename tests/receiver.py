"""A real local HTTP endpoint that apprise's json:// posts to, for delivery tests."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class Receiver:
    """A local HTTP endpoint for apprise's json://: ok (200), fail (500), slow, or down."""

    def __init__(self) -> None:
        self.mode = "ok"
        self.port = 0
        self.requests = 0
        self.payloads: list[dict[str, Any]] = []
        self.events: list[str] = []
        self.paths: list[str] = []
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self.up()

    @property
    def messages(self) -> list[str]:
        with self._lock:
            return [p["message"] for p in self.payloads]

    def up(self) -> None:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                with receiver._lock:
                    receiver.requests += 1
                    mode = receiver.mode
                if mode == "fail":
                    self.send_response(500)
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
