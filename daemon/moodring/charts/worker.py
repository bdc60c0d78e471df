"""Charts rendered in a short-lived worker process, so matplotlib never stays in the daemon.

The parent (``ChartWorker``) starts ``python -m moodring.charts.worker`` on the first chart,
sends it charts one at a time over its stdin and reads PNGs from its stdout. After
``idle_s`` seconds without a chart it closes the worker's stdin and the worker exits, taking
matplotlib's memory (~60 MB) with it. A render that overruns its budget kills the worker;
the next chart starts a new one. Starting a worker (Python, matplotlib, a first font cache)
has its own bound, ``STARTUP_S``: a slow start on a loaded machine does not cost a chart.

Frames on the pipes: the worker first writes one ``R`` byte once it has rendered a warm-up
chart (a first render loads fonts and date formatters). A request is a 4-byte big-endian
length and the chart as JSON; a reply is one kind byte (``P`` a PNG, ``C`` a ChartError
message, ``E`` a traceback), a 4-byte length and the body.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import signal
import struct
import subprocess
import sys
import threading
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Literal

import moodring
from moodring.workerproc import EXIT_WAIT_S, close_pipes, exit_status, stop

Kind = Literal["png", "chart", "error"]
IDLE_S = 30.0  # seconds a worker waits for another chart before it exits
STARTUP_S = 60.0  # seconds a new worker may take to import what it renders with
_READY = b"R"
_LENGTH = struct.Struct(">I")
_KINDS: dict[bytes, Kind] = {b"P": "png", b"C": "chart", b"E": "error"}
_CODES: dict[Kind, bytes] = {kind: code for code, kind in _KINDS.items()}


class WorkerError(RuntimeError):
    """The worker died or was killed before it answered."""


class AbandonedError(RuntimeError):
    """The request was given up (its budget ran out) before the worker took it."""


def _read_exact(stream: IO[bytes], size: int) -> bytes:
    """Read exactly ``size`` bytes; EOFError if the stream ends first."""
    data = stream.read(size)
    if data is None or len(data) != size:
        raise EOFError("the pipe closed")
    return data


def _read_frame(stream: IO[bytes]) -> bytes:
    (size,) = _LENGTH.unpack(_read_exact(stream, _LENGTH.size))
    return _read_exact(stream, size)


def _write_frame(stream: IO[bytes], head: bytes, body: bytes) -> None:
    stream.write(head + _LENGTH.pack(len(body)) + body)
    stream.flush()


class ChartWorker:
    """A chart-rendering process, started on demand and retired after ``idle_s`` idle seconds.

    ``render`` blocks (call it in a thread); requests are served one at a time. Safe to use
    from any thread and any event loop.
    """

    def __init__(self, idle_s: float = IDLE_S) -> None:
        self.idle_s = idle_s
        self.started = 0  # worker processes started so far
        self._lock = threading.Lock()  # one request at a time on the pipes
        self._state = threading.Lock()  # guards _proc and _busy against abandon()
        self._proc: subprocess.Popen[bytes] | None = None
        self._busy: threading.Event | None = None  # the request the worker is rendering
        self._timer: threading.Timer | None = None

    @property
    def busy(self) -> bool:
        """Return whether the worker has a chart now (or is starting for one)."""
        return self._busy is not None

    @property
    def pid(self) -> int | None:
        """Return the running worker's pid, or None when there is none."""
        proc = self._proc
        return proc.pid if proc is not None and proc.poll() is None else None

    def start(self, cancel: threading.Event) -> None:
        """Start a worker unless one runs, and block until it can render.

        Raises AbandonedError or WorkerError as ``render`` does.
        """
        with self._exclusive():
            self._running(cancel)

    def render(self, chart_json: bytes, cancel: threading.Event) -> tuple[Kind, bytes]:
        """Send one chart (JSON) and return the worker's reply; blocks until it comes.

        Raises AbandonedError if ``cancel`` was set before the worker took the chart, WorkerError
        if the worker dies (or is killed by ``abandon``) before it answers. A worker that dies
        before it answers (a kill while idle shows only once the chart is sent) is replaced
        and the chart sent again, once.
        """
        with self._exclusive():
            for attempt in (1, 2):
                proc = self._running(cancel)
                assert proc.stdin is not None and proc.stdout is not None
                with self._busy_with(cancel):
                    try:
                        _write_frame(proc.stdin, b"", chart_json)
                    except OSError:
                        self._discard(proc)
                        if cancel.is_set():  # abandon() killed it while it took the chart
                            raise WorkerError(
                                f"the chart worker exited ({exit_status(proc)})"
                            ) from None
                        if attempt == 1:
                            continue  # it had died while idle: a fresh one takes the chart
                        raise WorkerError("the chart worker could not be started") from None
                    try:
                        head = _read_exact(proc.stdout, 1)
                        return _KINDS[head], _read_frame(proc.stdout)
                    except (OSError, EOFError, KeyError, struct.error):
                        self._discard(proc)
                        if attempt == 1 and not cancel.is_set():
                            continue  # a render is idempotent: a fresh worker tries once
                        raise WorkerError(
                            f"the chart worker exited ({exit_status(proc)})"
                        ) from None
            raise AssertionError("unreachable")

    @contextlib.contextmanager
    def _exclusive(self) -> Iterator[None]:
        """Hold the pipes (one request at a time); the idle timer waits meanwhile."""
        with self._lock:
            self._stop_timer()
            try:
                yield
            finally:
                self._arm_timer()

    @contextlib.contextmanager
    def _busy_with(self, cancel: threading.Event) -> Iterator[None]:
        """Mark the worker busy with ``cancel``'s request; AbandonedError if it was given up."""
        with self._state:  # abandon() sets cancel first, then looks at _busy
            if cancel.is_set():
                raise AbandonedError("the chart was given up before the worker took it")
            self._busy = cancel
        try:
            yield
        finally:
            with self._state:
                self._busy = None

    def abandon(self, cancel: threading.Event) -> None:
        """Give up the request of ``cancel``: killing the worker if it is rendering it."""
        cancel.set()
        with self._state:
            if self._busy is cancel and self._proc is not None:
                with contextlib.suppress(OSError):
                    self._proc.kill()

    def close(self) -> None:
        """Stop the worker now (a render in progress fails with WorkerError)."""
        self._stop_timer()
        with self._state:
            proc, self._proc = self._proc, None
        if proc is not None:
            _retire(proc)

    def _running(self, cancel: threading.Event) -> subprocess.Popen[bytes]:
        """Return the worker process, starting one that is ready if none runs (hold _lock)."""
        proc = self._proc
        if proc is not None and proc.poll() is None:
            return proc
        if proc is not None:
            self._discard(proc)
        proc = self._spawn()
        assert proc.stdout is not None
        try:
            with self._busy_with(cancel):  # abandon() kills a worker that starts too slowly
                try:
                    ready = _read_exact(proc.stdout, 1) == _READY
                except (OSError, EOFError):
                    ready = False
        except BaseException:
            self._discard(proc)
            raise
        if not ready:
            self._discard(proc)  # killed by abandon(), or it failed: reaped, so its status shows
            raise WorkerError(f"the chart worker did not start ({exit_status(proc)})")
        return proc

    def _spawn(self) -> subprocess.Popen[bytes]:
        """Start a worker process."""
        env = dict(os.environ)
        # the child imports this very moodring, wherever it was imported from
        root = str(Path(moodring.__file__).resolve().parents[1])
        env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
        proc = subprocess.Popen(
            [sys.executable, "-m", "moodring.charts.worker"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=env,
            close_fds=True,
        )
        with self._state:
            self._proc = proc
        self.started += 1
        return proc

    def _discard(self, proc: subprocess.Popen[bytes]) -> None:
        """Forget a worker that failed and make sure it is gone."""
        with self._state:
            if self._proc is proc:
                self._proc = None
        with contextlib.suppress(OSError):
            proc.kill()
        _reap(proc)

    def _arm_timer(self) -> None:
        if self._proc is None:
            return
        timer = threading.Timer(self.idle_s, self._retire_idle)
        timer.daemon = True
        self._timer = timer
        timer.start()

    def _stop_timer(self) -> None:
        timer, self._timer = self._timer, None
        if timer is not None:
            timer.cancel()

    def _retire_idle(self) -> None:
        """Let an idle worker exit (its timer ran out)."""
        if not self._lock.acquire(blocking=False):
            return  # a chart came just now: the timer is armed again after it
        try:
            if self._timer is None or self._timer is not threading.current_thread():
                return  # superseded by a newer timer
            self._timer = None
            with self._state:
                proc, self._proc = self._proc, None
            if proc is not None:
                _retire(proc)
        finally:
            self._lock.release()


def _retire(proc: subprocess.Popen[bytes]) -> None:
    """Stop the worker and close its pipes."""
    stop(proc)
    _reap(proc)


def _reap(proc: subprocess.Popen[bytes]) -> None:
    """Wait for a killed or exiting worker and close its pipes."""
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=EXIT_WAIT_S)
    close_pipes(proc)


CHART_WORKER = ChartWorker()
atexit.register(CHART_WORKER.close)


def serve(requests: IO[bytes], replies: IO[bytes]) -> None:
    """Render each chart that arrives on ``requests`` until they end (the worker's loop)."""
    import json

    from moodring.charts.model import ChartError
    from moodring.charts.render import render_png

    while True:
        try:
            chart = json.loads(_read_frame(requests))
        except EOFError:
            return
        kind: Kind
        try:
            kind, body = "png", render_png(chart)
        except ChartError as exc:
            kind, body = "chart", str(exc).encode()
        except Exception:
            kind, body = "error", traceback.format_exc().encode()
        _write_frame(replies, _CODES[kind], body)


def main() -> int:
    """Run as the worker: charts on stdin, replies on stdout."""
    # Ctrl-C reaches the whole process group: the daemon decides when its worker ends
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    import matplotlib

    matplotlib.use("Agg")
    from moodring.charts.render import warm_up

    warm_up()  # a first render loads fonts and formatters: not the first chart's budget

    with contextlib.suppress(BrokenPipeError):  # the daemon went away mid-start or mid-render
        sys.stdout.buffer.write(_READY)
        sys.stdout.buffer.flush()
        serve(sys.stdin.buffer, sys.stdout.buffer)
    return 0


if __name__ == "__main__":
    sys.exit(main())
