"""A stand-in for systemd's notify socket: the datagrams a service sends to it."""

from __future__ import annotations

import socket
import threading
import time


class NotifySocket:
    """A bound AF_UNIX datagram socket that records (receive time, datagram) in a thread."""

    def __init__(self, address: str) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(address)
        self.sock.settimeout(0.05)
        self.got: list[tuple[float, bytes]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                data = self.sock.recv(4096)
            except TimeoutError:
                continue
            self.got.append((time.monotonic(), data))

    def wait_for(self, n: int, timeout: float = 5.0) -> list[bytes]:
        deadline = time.monotonic() + timeout
        while len(self.got) < n and time.monotonic() < deadline:
            time.sleep(0.005)
        return [data for _, data in self.got]

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self.sock.close()
