"""apprise in a short-lived worker process, so its ~190 plugins never load into the daemon.

The parent (``DeliveryWorker``) starts ``python -m moodring.delivery.worker`` on the first
question or send and keeps it while work comes; ``idle_s`` seconds after the last answer it
closes the worker's stdin and the worker exits. Sends run concurrently in the worker (one
slow service holds back no other), each bounded by its timeout.

A worker that dies takes its unanswered requests with it: a send fails, retryable (the
outbox sends it again, its failure recorded), never silently dropped and never resent here;
a question (``ask``) is asked once more of a fresh worker. A worker found dead when a
request is written to it never took it: a fresh one takes it.

Frames on the pipes are JSON lines: a request ``{"id", "op", "arg"}``, a reply ``{"id",
"answer"}`` or ``{"id", "error"}`` (a traceback).
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import contextlib
import json
import logging
import os
import re
import signal
import subprocess
import sys
import threading
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import moodring
from moodring.notifyurls import LOCAL, apprise_silenced
from moodring.workerproc import EXIT_WAIT_S, close_pipes, exit_status, stop

if TYPE_CHECKING:
    import apprise

log = logging.getLogger("moodring.delivery")

IDLE_S = 30.0  # seconds a worker waits for more work before it exits
ASK_TIMEOUT_S = 60.0  # a question about a URL or an apprise config (a config URL is fetched)
_LINE_LIMIT = 64 * 1024 * 1024

_URL_LIKE = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://\S+")
# apprise's plugins log a refused request's HTTP status as "... error=400."
_HTTP_STATUS = re.compile(r"\berror=(\d{3})\b")
# 4xx answers that may succeed later: request timeout, too many requests
RETRYABLE_4XX = frozenset({408, 429})


@dataclass(frozen=True)
class DeliveryError:
    """Why a send failed (never the URL); ``permanent`` when retrying cannot help."""

    reason: str
    permanent: bool = False

    def __str__(self) -> str:
        return self.reason


class WorkerError(RuntimeError):
    """The worker died (or could not be started) before it answered."""


class AppriseSender:
    """One apprise.Apprise per URL, created on first use; sends bounded by a timeout."""

    def __init__(self) -> None:
        self._apprise: dict[str, apprise.Apprise | None] = {}

    def load(self, url: str) -> apprise.Apprise | None:
        """Return the Apprise object of a URL (None if apprise cannot parse it)."""
        if url in self._apprise:
            return self._apprise[url]
        import apprise

        ap = apprise.Apprise()
        with apprise_silenced():
            loaded = ap if ap.add(url) else None
        self._apprise[url] = loaded
        return loaded

    async def send(self, request: dict[str, Any]) -> DeliveryError | None:
        """Send one alert (url, title, body, type, format, attach, timeout); None on success."""
        url, timeout = request["url"], request.get("timeout") or None
        ap = self.load(url)
        if ap is None:
            return DeliveryError("apprise cannot parse the URL", permanent=True)
        try:
            async with asyncio.timeout(timeout):
                result = await ap.async_notify(
                    body=request["body"],
                    title=request["title"],
                    notify_type=request["type"],
                    body_format=request["format"],
                    attach=request.get("attach"),
                )
        except TimeoutError:
            return DeliveryError(f"timed out after {timeout:g} s")
        except Exception as exc:
            return DeliveryError(f"apprise raised {type(exc).__name__}")
        if result:
            return None
        return _failure(result, url)


def _failure(result: object, url: str) -> DeliveryError:
    """Return a failure's status and apprise's last warning (URLs scrubbed); 4xx is permanent."""
    status = getattr(result, "status", None)
    reason = f"apprise {getattr(status, 'name', 'failure')}"
    messages = [
        entry.message
        for entry in getattr(result, "logs", list)()
        if entry.level in ("WARNING", "ERROR", "CRITICAL")
    ]
    codes = [int(code) for text in messages for code in _HTTP_STATUS.findall(text)]
    permanent = bool(codes) and 400 <= codes[-1] < 500 and codes[-1] not in RETRYABLE_4XX
    if messages:
        text = messages[-1].replace(url, "<url>")
        reason += ": " + _URL_LIKE.sub("<url>", text)[:300]
    return DeliveryError(reason, permanent)


class _Running:
    """One worker process and the requests it has not answered yet."""

    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        self.proc = proc
        self.pending: dict[int, concurrent.futures.Future[Any]] = {}


class DeliveryWorker:
    """The delivery worker process, started on demand and retired after ``idle_s`` idle seconds.

    Safe to use from any thread and any event loop: ``ask`` blocks, ``send`` is awaited.
    """

    def __init__(self, idle_s: float = IDLE_S) -> None:
        self.idle_s = idle_s
        self.started = 0  # worker processes started so far
        self._lock = threading.Lock()  # guards _current, the ids and the writes
        self._current: _Running | None = None
        self._next_id = 0
        self._timer: threading.Timer | None = None

    @property
    def pid(self) -> int | None:
        """Return the running worker's pid, or None when there is none."""
        current = self._current
        return current.proc.pid if current is not None and current.proc.poll() is None else None

    def ask(self, op: str, arg: Any) -> Any:
        """Return the worker's answer to a question (``notifyurls.LOCAL``); asked twice at most."""
        for attempt in (1, 2):
            try:
                return self.request(op, arg).result(timeout=ASK_TIMEOUT_S)
            except WorkerError:
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    async def send(self, request: dict[str, Any]) -> DeliveryError | None:
        """Have the worker send one alert (see ``AppriseSender.send``); a dead worker: retryable."""
        timeout = request.get("timeout") or None
        try:
            future = self.request("send", request)
        except WorkerError as exc:
            return DeliveryError(str(exc))
        try:
            # the worker keeps the timeout; this bounds a worker that stopped answering
            async with asyncio.timeout(timeout + EXIT_WAIT_S if timeout else None):
                answer = await asyncio.wrap_future(future)
        except TimeoutError:
            return DeliveryError(f"timed out after {timeout:g} s (the worker did not answer)")
        except WorkerError as exc:
            return DeliveryError(str(exc))
        return None if answer is None else DeliveryError(answer["reason"], answer["permanent"])

    def request(self, op: str, arg: Any) -> concurrent.futures.Future[Any]:
        """Write one request; return the future of its answer (WorkerError if the worker dies)."""
        future: concurrent.futures.Future[Any] = concurrent.futures.Future()
        with self._lock:
            self._stop_timer()
            self._next_id += 1
            line = json.dumps({"id": self._next_id, "op": op, "arg": arg}).encode() + b"\n"
            for _ in (1, 2):
                current = self._running()
                current.pending[self._next_id] = future
                try:
                    assert current.proc.stdin is not None
                    current.proc.stdin.write(line)
                    current.proc.stdin.flush()
                    return future
                except OSError:
                    # it had died before it took the request: a fresh one takes it
                    current.pending.pop(self._next_id, None)
                    self._forget(current)
            raise WorkerError("the delivery worker could not be started")

    def close(self) -> None:
        """Stop the worker now (requests in progress fail with WorkerError)."""
        with self._lock:
            self._stop_timer()
            current, self._current = self._current, None
        if current is not None:
            stop(current.proc)

    def _running(self) -> _Running:
        """Return the worker, starting one if there is none (call with _lock held)."""
        current = self._current
        if current is not None and current.proc.poll() is None:
            return current
        if current is not None:
            self._forget(current)
        env = dict(os.environ)
        # the child imports this very moodring, wherever it was imported from
        root = str(Path(moodring.__file__).resolve().parents[1])
        env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
        try:
            proc = subprocess.Popen(
                [sys.executable, "-m", "moodring.delivery.worker"],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                env=env,
                close_fds=True,
            )
        except OSError as exc:
            raise WorkerError(f"the delivery worker could not be started ({exc})") from None
        current = _Running(proc)
        self._current = current
        self.started += 1
        threading.Thread(
            target=self._read, args=(current,), name="delivery worker replies", daemon=True
        ).start()
        return current

    def _forget(self, current: _Running) -> None:
        """Stop using a worker that failed (call with _lock held); its reader reaps it."""
        if self._current is current:
            self._current = None
        with contextlib.suppress(OSError):
            current.proc.kill()

    def _read(self, current: _Running) -> None:
        """Hand each reply to its request's future; at the end fail what is left unanswered."""
        stdout = current.proc.stdout
        assert stdout is not None
        with contextlib.suppress(OSError, ValueError):
            for line in stdout:
                reply = json.loads(line)
                with self._lock:
                    future = current.pending.pop(reply["id"], None)
                    if not current.pending and self._current is current:
                        self._arm_timer(current)
                if future is None or future.done():
                    continue  # given up by its caller
                with contextlib.suppress(concurrent.futures.InvalidStateError):
                    if "error" in reply:
                        last = reply["error"].strip().splitlines()[-1]  # the exception
                        future.set_exception(RuntimeError(last))
                    else:
                        future.set_result(reply["answer"])
        with self._lock:
            if self._current is current:
                self._current = None
            left, current.pending = current.pending, {}
        _reap(current.proc)
        error = WorkerError(f"the delivery worker exited ({exit_status(current.proc)})")
        for future in left.values():
            with contextlib.suppress(concurrent.futures.InvalidStateError):
                future.set_exception(error)

    def _arm_timer(self, current: _Running) -> None:
        """Retire ``current`` after ``idle_s`` without requests (call with _lock held)."""
        self._stop_timer()
        timer = threading.Timer(self.idle_s, self._retire_idle, args=(current,))
        timer.daemon = True
        self._timer = timer
        timer.start()

    def _stop_timer(self) -> None:
        timer, self._timer = self._timer, None
        if timer is not None:
            timer.cancel()

    def _retire_idle(self, current: _Running) -> None:
        """Let an idle worker exit (its timer ran out), unless work came meanwhile."""
        with self._lock:
            if self._timer is not threading.current_thread() or current.pending:
                return
            self._timer = None
            if self._current is current:
                self._current = None
        stop(current.proc)


def _reap(proc: subprocess.Popen[bytes]) -> None:
    """Wait for an exiting worker (killing it if it lingers) and close its pipes."""
    try:
        proc.wait(timeout=EXIT_WAIT_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    close_pipes(proc)


DELIVERY_WORKER = DeliveryWorker()
atexit.register(DELIVERY_WORKER.close)


async def serve(requests: asyncio.StreamReader, replies: IO[bytes]) -> None:
    """Answer each request on ``requests`` until they end; then drop what is in progress."""
    sender = AppriseSender()
    tasks: set[asyncio.Task[None]] = set()

    def reply(message: dict[str, Any]) -> None:
        replies.write(json.dumps(message).encode() + b"\n")
        replies.flush()

    async def answer(request: dict[str, Any]) -> None:
        result: Any
        try:
            if request["op"] == "send":
                error = await sender.send(request["arg"])
                result = None if error is None else vars(error)
            elif request["op"] == "load":
                result = sender.load(request["arg"]) is not None
            else:
                result = await asyncio.to_thread(LOCAL[request["op"]], request["arg"])
        except Exception:
            reply({"id": request["id"], "error": traceback.format_exc()})
        else:
            reply({"id": request["id"], "answer": result})

    while line := await requests.readline():
        task = asyncio.create_task(answer(json.loads(line)))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    # the daemon went away (or retired this worker idle): nobody would learn the outcome
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


async def _main() -> None:
    loop = asyncio.get_running_loop()
    requests = asyncio.StreamReader(limit=_LINE_LIMIT)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(requests), sys.stdin)
    await serve(requests, sys.stdout.buffer)


def main() -> int:
    """Run as the worker: requests on stdin, replies on stdout."""
    # Ctrl-C and a stop reach the whole process group: the daemon decides when its worker ends
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    # apprise's records carry URLs: never shown (only read back from its results)
    logging.getLogger().addHandler(logging.NullHandler())
    with contextlib.suppress(BrokenPipeError):  # the daemon went away mid-send
        asyncio.run(_main())
    return 0


if __name__ == "__main__":
    sys.exit(main())
