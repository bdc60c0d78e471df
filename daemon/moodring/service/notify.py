"""The systemd notification protocol (sd_notify) with the standard library only."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from collections.abc import Callable, Mapping

log = logging.getLogger(__name__)


class SdNotify:
    """Send state changes to systemd over ``$NOTIFY_SOCKET``; a no-op when it is unset."""

    def __init__(self, address: str | None = None, watchdog_usec: int | None = None) -> None:
        # address: a filesystem path, or an abstract socket name starting with "\0"
        self._address = address
        self._watchdog_usec = watchdog_usec
        self._sock: socket.socket | None = None
        self._failing = False

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> SdNotify:
        """Build from $NOTIFY_SOCKET, $WATCHDOG_USEC and $WATCHDOG_PID (default: os.environ)."""
        env = os.environ if environ is None else environ
        raw = env.get("NOTIFY_SOCKET", "")
        address: str | None = None
        if raw.startswith("@"):
            address = "\0" + raw[1:]
        elif raw.startswith("/"):
            address = raw
        elif raw:
            log.debug("NOTIFY_SOCKET %r is not a path or an abstract socket; ignoring it", raw)
        return cls(address, _watchdog_usec(env))

    @property
    def enabled(self) -> bool:
        """Return whether there is a notification socket to send to."""
        return self._address is not None

    @property
    def watchdog_interval(self) -> float | None:
        """Return the seconds between watchdog pings (half of WATCHDOG_USEC), or None."""
        if self._address is None or self._watchdog_usec is None:
            return None
        return self._watchdog_usec / 2 / 1e6

    def send(self, message: str | None = None, /, **fields: str | int) -> bool:
        """Send one datagram (a raw message and/or KEY=value fields); return whether it went."""
        lines = [message] if message else []
        for key, value in fields.items():
            text = str(value)
            if "\n" in key or "=" in key or "\n" in text:
                raise ValueError(f"sd_notify field {key!r} must be one KEY=value line")
            lines.append(f"{key}={text}")
        if self._address is None or not lines:
            return False
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
                # a full queue on systemd's side must not stall the event loop: drop instead
                self._sock.setblocking(False)
            self._sock.sendto("\n".join(lines).encode(), self._address)
        except OSError as exc:
            if not self._failing:
                log.debug("sd_notify to %r failed: %s", self._address, exc)
            self._failing = True
            return False
        self._failing = False
        return True

    def ready(self, status: str | None = None) -> bool:
        """Tell systemd start-up (or a reload) is complete, with an optional status line."""
        if status is None:
            return self.send(READY=1)
        return self.send(READY=1, STATUS=_one_line(status))

    def status(self, text: str) -> bool:
        """Set the free-form status line ``systemctl status`` shows."""
        return self.send(STATUS=_one_line(text))

    def reloading(self) -> bool:
        """Tell systemd a reload has begun; send ready() when it is done."""
        now_us = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        return self.send(RELOADING=1, MONOTONIC_USEC=now_us)

    def stopping(self) -> bool:
        """Tell systemd the daemon is shutting down."""
        return self.send(STOPPING=1)

    def watchdog(self) -> bool:
        """Send one watchdog keep-alive ping."""
        return self.send(WATCHDOG=1)

    def close(self) -> None:
        """Close the socket (a later send opens a new one)."""
        if self._sock is not None:
            self._sock.close()
            self._sock = None


def _watchdog_usec(env: Mapping[str, str]) -> int | None:
    pid = env.get("WATCHDOG_PID")
    # the variables may have been inherited from the service's main process by a child
    if pid is not None and pid.strip() != str(os.getpid()):
        return None
    try:
        usec = int(env.get("WATCHDOG_USEC", ""))
    except ValueError:
        return None
    return usec if usec > 0 else None


def _one_line(text: str) -> str:
    return " ".join(text.splitlines())


async def watchdog_loop(notify: SdNotify, healthy: Callable[[], bool]) -> None:
    """Ping the watchdog every interval while healthy(); return at once without a watchdog."""
    interval = notify.watchdog_interval
    if interval is None:
        return
    was_healthy = True
    while True:
        try:
            ok = bool(healthy())
        except Exception:
            log.warning("health check failed; holding back the watchdog ping", exc_info=True)
            ok = False
        if ok:
            notify.watchdog()
        elif was_healthy:
            log.warning("unhealthy: holding back watchdog pings (systemd restarts us if it lasts)")
        was_healthy = ok
        # the sleep runs on the event loop: a blocked loop also stops the pings
        await asyncio.sleep(interval)
