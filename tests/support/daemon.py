"""``moodring run`` as a child process: its log, its sd_notify datagrams, its HTTP port."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import socket
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import yaml

from moodring.testing.fake_exchange import FakeExchange
from tests.support.receiver import Receiver

# an alert key in a message of ``frequent_rules``
KEY = re.compile(r"key=(\S+)")


def daemon_config(fake: FakeExchange, state: Path, *, below: float = 0.3, window: int = 3) -> dict:
    """ETH and BTC from the fake exchange, a 1m correlation and MFI, a rule on the correlation."""
    urls = {"ws_url": fake.ws_url, "rest_url": fake.rest_url}
    return {
        "feeds": {"eth": {"symbol": "ETH/USDT", **urls}, "btc": {"symbol": "BTC/USDT", **urls}},
        "metrics": {
            "corr": {
                "type": "correlation",
                "a": "eth",
                "b": "btc",
                "timeframe": "1m",
                "window": window,
            },
            "mfi": {"type": "mfi", "series": "eth", "timeframe": "1m", "period": 3},
        },
        "rules": [{"name": "decoupling", "metric": "corr", "condition": {"below": below}}],
        "http": {"port": 0},
        "state_dir": str(state),
    }


class Service:
    """A ``moodring run`` child process with its own NOTIFY_SOCKET, log lines and HTTP port."""

    def __init__(self, proc: asyncio.subprocess.Process, notify: socket.socket) -> None:
        self.proc = proc
        self.notify = notify
        self.lines: list[str] = []
        self.datagrams: list[str] = []
        self.port: int | None = None
        self._tasks = [asyncio.create_task(self._read_log()), asyncio.create_task(self._recv())]

    async def _read_log(self) -> None:
        assert self.proc.stderr is not None
        async for raw in self.proc.stderr:
            line = raw.decode(errors="replace").rstrip()
            self.lines.append(line)
            found = re.search(r"/healthz on 127\.0\.0\.1:(\d+)", line)
            if found:
                self.port = int(found.group(1))

    async def _recv(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            data = await loop.sock_recv(self.notify, 4096)
            self.datagrams.append(data.decode())

    async def wait(self, predicate, timeout: float = 60.0, what: str = "") -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            if self.proc.returncode is not None or time.monotonic() > deadline:
                log = "\n".join(self.lines[-40:])
                raise AssertionError(f"timed out waiting for {what}\n{log}")
            await asyncio.sleep(0.05)

    async def log_read(self) -> None:
        """Wait until the child's stderr has been read to its end (it has exited)."""
        await self._tasks[0]

    def sent(self, prefix: str) -> list[str]:
        return [d for d in self.datagrams if d.startswith(prefix)]

    def logged(self, text: str) -> list[str]:
        return [line for line in self.lines if text in line]

    async def get(self, path: str) -> tuple[int, bytes]:
        def fetch() -> tuple[int, bytes]:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=5) as r:
                    return r.status, r.read()
            except urllib.error.HTTPError as exc:
                return exc.code, exc.read()

        return await asyncio.to_thread(fetch)

    async def close(self) -> None:
        if self.proc.returncode is None:
            self.proc.kill()
            await self.proc.wait()
        for task in self._tasks:
            task.cancel()
        self.notify.close()


# ``moodring run`` writing the names of the modules it has loaded to a file as it exits
MODULES_AT_EXIT = (
    "import atexit, runpy, sys; out = sys.argv.pop(1); "
    "atexit.register(lambda: open(out, 'w').write('\\n'.join(sorted(sys.modules)))); "
    "runpy.run_module('moodring.cli', run_name='__main__', alter_sys=True)"
)


async def start(
    tmp_path: Path, cfg: dict, watchdog_usec: int = 1_000_000, modules_to: Path | None = None
) -> Service:
    """Start ``moodring run`` on ``cfg``; with ``modules_to`` it lists its modules there at exit."""
    path = tmp_path / "moodring.yaml"
    path.write_text(yaml.safe_dump(cfg))
    address = str(tmp_path / "notify.sock")
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(address)
    notify.setblocking(False)
    env = {**os.environ, "NOTIFY_SOCKET": address, "WATCHDOG_USEC": str(watchdog_usec)}
    env.pop("JOURNAL_STREAM", None)
    exe = shutil.which("moodring")
    argv = [exe] if exe else [sys.executable, "-m", "moodring.cli"]
    if modules_to is not None:
        argv = [sys.executable, "-c", MODULES_AT_EXIT, str(modules_to)]
    proc = await asyncio.create_subprocess_exec(
        *argv,
        "run",
        "-c",
        str(path),
        env=env,
        stderr=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.DEVNULL,
    )
    return Service(proc, notify)


def frequent_rules(fake: FakeExchange, state: Path, receiver: Receiver) -> dict:
    """Rules on 1m bars that fire and resolve about every other bar; the key in the message."""
    urls = {"ws_url": fake.ws_url, "rest_url": fake.rest_url}
    feeds = {"eth": {"symbol": "ETH/USDT", **urls}, "btc": {"symbol": "BTC/USDT", **urls}}
    metrics = {
        f"{feed}_chg": {"type": "pct_change", "series": feed, "timeframe": "1m", "lookback": 1}
        for feed in feeds
    }
    rules = [
        {
            "name": f"{feed}-up",
            "metric": f"{feed}_chg",
            "condition": {"above": 0},
            "send_resolved": True,
            "title": f"{feed} up",
            "message": "key={{ rule }}|{{ state }}|{{ time }}",
        }
        for feed in feeds
    ]
    notify = {
        "urls": [receiver.url()],
        "rate_per_minute": 600,
        "retry_initial": "0.2s",
        "retry_max": "1s",
    }
    return {
        "feeds": feeds,
        "metrics": metrics,
        "rules": rules,
        "notify": notify,
        "http": {"port": 0},
        "state_dir": str(state),
    }
