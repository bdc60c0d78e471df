"""A real Mosquitto broker for tests: install, start on a free loopback port, stop, restart.

Also a TCP proxy to put between a client and the broker, to cut connections abruptly or keep
a client out while the test gets ready, and a subscriber that records what arrives.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiomqtt

SBIN = Path("/usr/sbin")


def find_tool(name: str) -> str | None:
    """Return the path of a Mosquitto program, on PATH or in /usr/sbin."""
    found = shutil.which(name)
    if found is None and (SBIN / name).is_file():
        found = str(SBIN / name)
    return found


def ensure_mosquitto() -> tuple[str, str]:
    """Return the paths of mosquitto and mosquitto_passwd, installing the package if needed."""
    if find_tool("mosquitto") is None or find_tool("mosquitto_passwd") is None:
        subprocess.run(
            "apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y mosquitto",
            shell=True,
            check=False,
            capture_output=True,
            timeout=600,
        )
    broker, passwd = find_tool("mosquitto"), find_tool("mosquitto_passwd")
    assert broker is not None, "mosquitto is not installed and apt-get could not install it"
    assert passwd is not None, "mosquitto_passwd is missing after installing mosquitto"
    return broker, passwd


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def port_accepts(port: int) -> bool:
    """Return whether something accepts TCP connections on 127.0.0.1:port."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def make_password_file(passwd_tool: str, path: Path, user: str, password: str) -> Path:
    """Write a Mosquitto password file with one user."""
    subprocess.run([passwd_tool, "-b", "-c", str(path), user, password], check=True, timeout=30)
    return path


def make_tls_files(directory: Path) -> tuple[Path, Path, Path]:
    """Create a test CA and a server certificate for 127.0.0.1; return (ca, cert, key)."""
    ca, ca_key = directory / "ca.crt", directory / "ca.key"
    cert, key, csr = directory / "server.crt", directory / "server.key", directory / "server.csr"
    ext = directory / "server.ext"
    ext.write_text("subjectAltName=IP:127.0.0.1\n")
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    commands = [
        [
            "openssl",
            "req",
            "-x509",
            *ec,
            "-keyout",
            ca_key,
            "-out",
            ca,
            "-days",
            "2",
            "-subj",
            "/CN=moodring test CA",
        ],
        ["openssl", "req", *ec, "-keyout", key, "-out", csr, "-subj", "/CN=127.0.0.1"],
        [
            "openssl",
            "x509",
            "-req",
            "-in",
            csr,
            "-CA",
            ca,
            "-CAkey",
            ca_key,
            "-CAcreateserial",
            "-out",
            cert,
            "-days",
            "2",
            "-extfile",
            ext,
        ],
    ]
    for command in commands:
        subprocess.run([str(part) for part in command], check=True, capture_output=True)
    return ca, cert, key


class Mosquitto:
    """One broker process with its own config file; ``start``/``stop`` keep the same port."""

    def __init__(
        self,
        binary: str,
        workdir: Path,
        password_file: Path | None = None,
        tls_files: tuple[Path, Path, Path] | None = None,
    ) -> None:
        self.binary = binary
        self.workdir = workdir
        self.port = free_port()
        self.password_file = password_file
        self.tls_files = tls_files  # (ca, cert, key): the listener speaks TLS only
        self.config = workdir / "mosquitto.conf"
        self.log = workdir / "mosquitto.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def write_config(self) -> None:
        """Write the broker's config file."""
        lines = [
            f"listener {self.port} 127.0.0.1",
            "persistence false",
            # running as root, mosquitto would switch to the `mosquitto` user, who cannot
            # read a pytest tmp_path
            "user root",
        ]
        if self.tls_files is not None:
            ca, cert, key = self.tls_files
            lines += [f"cafile {ca}", f"certfile {cert}", f"keyfile {key}"]
        if self.password_file is None:
            lines.append("allow_anonymous true")
        else:
            lines += ["allow_anonymous false", f"password_file {self.password_file}"]
        self.config.write_text("\n".join(lines) + "\n")

    def start(self, timeout: float = 20.0) -> None:
        """Start the broker and wait until its port accepts connections."""
        assert self.proc is None, "broker already running"
        self.write_config()
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [self.binary, "-c", str(self.config), "-v"], stdout=out, stderr=subprocess.STDOUT
            )
        deadline = time.monotonic() + timeout
        while not port_accepts(self.port):
            if self.proc.poll() is not None:
                self.proc = None
                raise RuntimeError(f"mosquitto exited at start:\n{self.log.read_text()}")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"mosquitto did not listen on {self.port}:\n{self.logs()}")
            time.sleep(0.02)

    def stop(self) -> None:
        """Stop the broker by its pid (SIGTERM, then SIGKILL) and wait for it to exit."""
        proc, self.proc = self.proc, None
        if proc is None:
            return
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)

    def restart(self) -> None:
        """Stop the broker and start it again on the same port."""
        self.stop()
        self.start()

    def logs(self) -> str:
        """Return what the broker logged so far."""
        return self.log.read_text(errors="replace") if self.log.exists() else ""


class TcpProxy:
    """Forwards 127.0.0.1:port to a target port; can cut every connection and stop listening."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = free_port()
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self.blackhole = False  # when set, what clients send is swallowed, not forwarded
        self.swallowed = 0  # bytes swallowed so far

    async def listen(self) -> None:
        """Start accepting connections (again) on the same port."""
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", self.port)

    async def close_listener(self) -> None:
        """Stop accepting new connections; established ones stay."""
        server, self._server = self._server, None
        if server is not None:
            server.close()

    def sever(self) -> None:
        """Abort every forwarded connection at once, like a network failure (RST, no FIN)."""
        for writer in list(self._writers):
            writer.transport.abort()
        self._writers.clear()

    async def close(self) -> None:
        """Stop listening and cut everything."""
        await self.close_listener()
        self.sever()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            writer.transport.abort()
            return
        self._writers |= {writer, up_writer}
        pumps = [
            asyncio.create_task(self._pump(reader, up_writer, upstream=True)),
            asyncio.create_task(self._pump(up_reader, writer, upstream=False)),
        ]
        self._tasks.update(pumps)
        try:
            await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for pump in pumps:
                pump.cancel()
                self._tasks.discard(pump)
            for end in (writer, up_writer):
                self._writers.discard(end)
                end.transport.abort()

    async def _pump(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, upstream: bool
    ) -> None:
        with contextlib.suppress(OSError, asyncio.IncompleteReadError):
            while data := await reader.read(65536):
                if upstream and self.blackhole:
                    self.swallowed += len(data)
                    continue
                writer.write(data)
                await writer.drain()


class Collector:
    """A subscriber that records every message on a topic filter, for assertions."""

    def __init__(
        self,
        port: int,
        topic: str = "#",
        username: str | None = None,
        password: str | None = None,
        ca_file: Path | None = None,
    ) -> None:
        tls = aiomqtt.TLSParameters(ca_certs=str(ca_file)) if ca_file is not None else None
        self.client = aiomqtt.Client(
            "127.0.0.1", port, username=username, password=password, tls_params=tls, timeout=30
        )
        self.topic = topic
        self.messages: list[aiomqtt.Message] = []
        self._reader: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Collector:
        await self.client.__aenter__()
        await self.client.subscribe(self.topic, qos=1)
        self._reader = asyncio.create_task(self._read())
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._reader is not None:
            self._reader.cancel()
            await asyncio.gather(self._reader, return_exceptions=True)
        with contextlib.suppress(aiomqtt.MqttError):
            await self.client.__aexit__(None, None, None)

    async def _read(self) -> None:
        with contextlib.suppress(aiomqtt.MqttError):
            async for message in self.client.messages:
                self.messages.append(message)

    def on(self, topic: str) -> list[aiomqtt.Message]:
        """Return the messages received on exactly ``topic``, in order."""
        return [m for m in self.messages if m.topic.value == topic]

    def texts(self, topic: str) -> list[str]:
        """Return the payloads received on ``topic`` as text."""
        return [bytes(m.payload).decode() for m in self.on(topic)]  # type: ignore[arg-type]

    def jsons(self, topic: str) -> list[Any]:
        """Return the payloads received on ``topic`` parsed as JSON."""
        return [json.loads(text) for text in self.texts(topic)]

    async def wait_for(self, predicate: Callable[[Collector], bool], timeout: float = 30.0) -> None:
        """Wait until ``predicate(self)`` holds; fail with what arrived if it never does."""
        deadline = time.monotonic() + timeout
        while not predicate(self):
            if time.monotonic() > deadline:
                seen = [(m.topic.value, m.payload) for m in self.messages]
                raise AssertionError(f"condition not met within {timeout}s; received {seen}")
            await asyncio.sleep(0.02)
