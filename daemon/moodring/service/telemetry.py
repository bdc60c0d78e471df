"""Daemon telemetry: Prometheus instruments, an event-loop lag monitor, /metrics and /healthz.

The endpoint is an ``aiohttp.web`` app on the daemon's event loop (aiohttp comes with ccxt):
a scrape reads state owned by the loop (the outbox's SQLite connection, dicts the hot path
mutates), so it has to run on the loop's thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Callable, Iterable, Iterator, Mapping

from aiohttp import hdrs, web
from aiohttp.typedefs import Handler
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.aiohttp import make_aiohttp_handler
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric

from moodring import __version__
from moodring.lifecycle import Component
from moodring.settings import HttpConfig

log = logging.getLogger("moodring.http")

FeedStates = Mapping[str, str] | Callable[[], Mapping[str, str]]
FrameCounts = Mapping[tuple[str, str], int] | Callable[[], Mapping[tuple[str, str], int]]
HealthCheck = Callable[[], tuple[bool, dict[str, object]]]

FEED_STATES = ("ok", "stale", "closed")
HEALTHY_STATES = frozenset({"ok", "closed"})
UPDATE_BUCKETS = (
    1e-6,
    2.5e-6,
    5e-6,
    1e-5,
    2.5e-5,
    5e-5,
    1e-4,
    2.5e-4,
    5e-4,
    1e-3,
    2.5e-3,
    5e-3,
    1e-2,
    2.5e-2,
    0.1,
)
LOOP_LAG_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

REQUEST_TIMEOUT = 5.0  # seconds a connection may stay idle (or half-sent) before it is closed
SHUTDOWN_TIMEOUT = 1.0  # seconds requests in flight get when the endpoint stops
NO_STORE = {hdrs.CACHE_CONTROL: "no-store"}


def _reader(source: Mapping | Callable[[], Mapping] | None) -> Callable[[], Mapping]:
    """Return a callable reading a live mapping, or the given callable itself."""
    if source is None:
        return dict
    if callable(source):
        return source
    return lambda: source


class Telemetry:
    """Prometheus instruments of one daemon, in a private registry, plus its health.

    State the daemon already keeps is read at scrape time, never copied on the hot path:

    - ``bad_frames``: ``BadFrames.counts`` (a live mapping) or a callable returning one;
    - ``feed_states``: ``{feed: "ok" | "stale" | "closed"}`` (mapping or callable);
    - ``outbox_depth``, ``alerts_queued``: callables returning ints (exported only if given).

    The daemon calls, on its hot path: ``tick(feed)`` per trade or candle,
    ``observe_update(seconds)`` per metric update, ``reconnect(feed)``, ``suspect_bar(feed)``
    per bar beyond the feed's ``max_jump``, ``alert_sent(target)`` and
    ``alert_failed(target)`` per delivery attempt, ``alert_dead(target)`` per delivery
    given up, ``reload(ok)`` per config reload and
    ``mark_ready()`` once warmed up. ``watch_loop_lag`` keeps ``loop_lag`` current.
    ``clock`` (epoch seconds) is what feed lag is measured against.
    """

    def __init__(
        self,
        *,
        bad_frames: FrameCounts | None = None,
        feed_states: FeedStates | None = None,
        outbox_depth: Callable[[], int] | None = None,
        alerts_queued: Callable[[], int] | None = None,
        problems: Callable[[], Mapping[str, str]] | None = None,
        alert_counts: Callable[[], Mapping[str, int]] | None = None,
        version: str = __version__,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.registry = CollectorRegistry()
        self.loop_lag = 0.0
        self._bad_frames = _reader(bad_frames)
        self._feed_states = _reader(feed_states)
        self._outbox_depth = outbox_depth
        self._alerts_queued = alerts_queued
        self._problems = problems
        self._alert_counts = alert_counts
        self._clock = clock
        self._started = time.monotonic()
        self._starting = True
        self._last_tick: dict[str, float] = {}
        registry = self.registry
        self._ticks: dict[str, int] = {}  # plain counts on the hot path, exported at scrape
        self._update = Histogram(
            "moodring_metric_update_seconds",
            "Time to update the metrics for one tick or bar.",
            buckets=UPDATE_BUCKETS,
            registry=registry,
        )
        self._sent = Counter(
            "moodring_alerts_sent",
            "Alert deliveries that succeeded.",
            ["target"],
            registry=registry,
        )
        self._failed = Counter(
            "moodring_alerts_failed",
            "Alert delivery attempts that failed.",
            ["target"],
            registry=registry,
        )
        self._dead = Counter(
            "moodring_alerts_dead",
            "Alert deliveries given up (refused, too old, too many attempts); kept in the outbox.",
            ["target"],
            registry=registry,
        )
        self._lag_gauge = Gauge(
            "moodring_event_loop_lag_seconds",
            "How late the event loop last woke a sleeping task.",
            registry=registry,
        )
        self._lag_histogram = Histogram(
            "moodring_event_loop_lag_distribution_seconds",
            "How late the event loop woke a sleeping task, every check.",
            buckets=LOOP_LAG_BUCKETS,
            registry=registry,
        )
        self._reconnects = Counter(
            "moodring_reconnects", "Feed reconnects.", ["feed"], registry=registry
        )
        self._suspect = Counter(
            "moodring_suspect_bars",
            "Closed bars whose close moved more than the feed's max_jump.",
            ["feed"],
            registry=registry,
        )
        Gauge("moodring_up", "1 while the daemon runs.", registry=registry).set(1)
        build = Gauge("moodring_build_info", "The running version.", ["version"], registry=registry)
        build.labels(version).set(1)
        self._reload_ok = Gauge(
            "moodring_last_reload_success",
            "Whether the last config reload succeeded (1) or not (0).",
            registry=registry,
        )
        self._reload_ok.set(1)
        self._reloads = Counter(
            "moodring_config_reloads", "Config reloads by result.", ["result"], registry=registry
        )
        registry.register(_ReadCollector(self))
        if alert_counts is not None:
            registry.register(_AlertCountCollector(alert_counts))

    def tick(self, feed: str, at: float | None = None) -> None:
        """Count a tick of a feed received at ``at`` (epoch seconds; now if None)."""
        self._ticks[feed] = self._ticks.get(feed, 0) + 1
        self._last_tick[feed] = self._clock() if at is None else at

    def observe_update(self, seconds: float) -> None:
        """Record how long updating the metrics for one tick or bar took."""
        self._update.observe(seconds)

    def reconnect(self, feed: str) -> None:
        """Count a reconnect of a feed."""
        self._reconnects.labels(feed).inc()

    def suspect_bar(self, feed: str) -> None:
        """Count a bar of a feed that jumped beyond its max_jump."""
        self._suspect.labels(feed).inc()

    def alert_sent(self, target: str) -> None:
        """Count a successful delivery to a target (its id, never its URL)."""
        self._sent.labels(target).inc()

    def alert_failed(self, target: str) -> None:
        """Count a failed delivery attempt to a target (its id, never its URL)."""
        self._failed.labels(target).inc()

    def alert_dead(self, target: str) -> None:
        """Count a delivery given up for a target (its id, never its URL)."""
        self._dead.labels(target).inc()

    def reload(self, ok: bool) -> None:
        """Record the result of a config reload."""
        self._reload_ok.set(1 if ok else 0)
        self._reloads.labels("success" if ok else "failure").inc()

    def record_loop_lag(self, seconds: float) -> None:
        """Record one event-loop lag measurement (``watch_loop_lag`` calls this)."""
        self.loop_lag = seconds
        self._lag_gauge.set(seconds)
        self._lag_histogram.observe(seconds)

    def mark_ready(self) -> None:
        """Mark the warm-up as done: /healthz stops answering "starting"."""
        self._starting = False

    @property
    def starting(self) -> bool:
        """Return whether the daemon is still warming up."""
        return self._starting

    def feed_states(self) -> dict[str, str]:
        """Return a copy of the current state of every feed."""
        return dict(self._feed_states())

    def tick_counts(self) -> dict[str, int]:
        """Return a copy of the ticks received per feed."""
        return dict(self._ticks)

    def feed_lags(self) -> dict[str, float]:
        """Return the seconds since each feed's latest tick."""
        now = self._clock()
        return {feed: max(0.0, now - at) for feed, at in self._last_tick.items()}

    def bad_frames(self) -> dict[tuple[str, str], int]:
        """Return a copy of the skipped-frame counts by (feed, reason)."""
        return dict(self._bad_frames())

    def outbox_depth(self) -> int | None:
        """Return the outbox depth, or None if not wired."""
        return None if self._outbox_depth is None else self._outbox_depth()

    def alerts_queued(self) -> int | None:
        """Return the alerts queued outside the outbox, or None if not wired."""
        return None if self._alerts_queued is None else self._alerts_queued()

    def problems(self) -> dict[str, str]:
        """Return what keeps the daemon from doing its job besides feeds (e.g. storage)."""
        return {} if self._problems is None else dict(self._problems())

    def health(self) -> tuple[bool, dict[str, object]]:
        """Return whether the daemon is healthy and the /healthz body saying why."""
        feeds = self.feed_states()
        problems = self.problems()
        if self._starting:
            status = "starting"
        elif all(state in HEALTHY_STATES for state in feeds.values()) and not problems:
            status = "ok"
        else:
            status = "unhealthy"
        body: dict[str, object] = {
            "status": status,
            "feeds": feeds,
            "loop_lag_s": self.loop_lag,
            "outbox_depth": self.outbox_depth(),
            "uptime_s": time.monotonic() - self._started,
        }
        if self._problems is not None:
            body["problems"] = problems
        return status == "ok", body


_Families = tuple[
    CounterMetricFamily,
    CounterMetricFamily,
    GaugeMetricFamily,
    GaugeMetricFamily,
    GaugeMetricFamily,
    GaugeMetricFamily,
]


class _ReadCollector:
    """Exports what Telemetry reads at scrape time: ticks, bad frames, feed lag, queues."""

    def __init__(self, telemetry: Telemetry) -> None:
        self._telemetry = telemetry

    def describe(self) -> Iterable[Metric]:
        """Return the families this collector exports, without samples."""
        return list(self._families())

    def collect(self) -> Iterable[Metric]:
        """Return the families with current samples; a failing source is logged and skipped."""
        t = self._telemetry
        families = self._families()
        ticks, bad, lag, state, depth, queued = families
        for feed, count in t.tick_counts().items():
            ticks.add_metric([feed], count)
        yield ticks
        with _source("bad frames"):
            for (feed, reason), count in t.bad_frames().items():
                bad.add_metric([feed, reason], count)
            yield bad
        with _source("feed lag"):
            for feed, seconds in t.feed_lags().items():
                lag.add_metric([feed], seconds)
            yield lag
        with _source("feed states"):
            for feed, current in t.feed_states().items():
                states = FEED_STATES if current in FEED_STATES else (*FEED_STATES, current)
                for name in states:
                    state.add_metric([feed, name], 1.0 if name == current else 0.0)
            yield state
        with _source("outbox depth"):
            value = t.outbox_depth()
            if value is not None:
                depth.add_metric([], value)
                yield depth
        with _source("alerts queued"):
            value = t.alerts_queued()
            if value is not None:
                queued.add_metric([], value)
                yield queued

    @staticmethod
    def _families() -> _Families:
        """Return empty families of every metric this collector exports."""
        return (
            CounterMetricFamily(
                "moodring_ticks", "Ticks (trades or candles) received.", labels=["feed"]
            ),
            CounterMetricFamily(
                "moodring_bad_frames",
                "Frames skipped, by feed and reason.",
                labels=["feed", "reason"],
            ),
            GaugeMetricFamily(
                "moodring_feed_lag_seconds",
                "Seconds since the feed's latest tick.",
                labels=["feed"],
            ),
            GaugeMetricFamily(
                "moodring_feed_state",
                "1 for the feed's current state, 0 for the others.",
                labels=["feed", "state"],
            ),
            GaugeMetricFamily("moodring_outbox_depth", "Deliveries waiting in the outbox."),
            GaugeMetricFamily("moodring_alerts_queued", "Alerts queued outside the outbox."),
        )


# name -> (kind, help) of the alert counts the daemon keeps outside the outbox
ALERT_COUNTS = {
    "moodring_alerts_unsaved": (
        "gauge",
        "Alerts held in memory because the outbox cannot be written.",
    ),
    "moodring_alerts_lost": (
        "counter",
        "Alerts lost: more than memory holds while the outbox cannot be written.",
    ),
    "moodring_alerts_late": (
        "counter",
        "Alerts of bars closed while moodring was down, sent marked late.",
    ),
    "moodring_alerts_too_late": (
        "counter",
        "Alerts of bars closed while moodring was down, too old to send.",
    ),
}


class _AlertCountCollector:
    """Exports the alert counts of ``ALERT_COUNTS`` that a callable reads at scrape time."""

    def __init__(self, counts: Callable[[], Mapping[str, int]]) -> None:
        self._counts = counts

    def describe(self) -> Iterable[Metric]:
        """Return the families this collector exports, without samples."""
        return list(self._families({}))

    def collect(self) -> Iterable[Metric]:
        """Return the families with current samples."""
        with _source("alert counts"):
            yield from self._families(self._counts())

    @staticmethod
    def _families(counts: Mapping[str, int]) -> Iterator[Metric]:
        for name, (kind, text) in ALERT_COUNTS.items():
            family: Metric
            if kind == "gauge":
                family = GaugeMetricFamily(name, text)
            else:
                family = CounterMetricFamily(name, text)
            if name in counts:
                family.add_metric([], counts[name])
            yield family


@contextlib.contextmanager
def _source(what: str) -> Iterator[None]:
    """Log and swallow an error of one scrape-time source so the rest is still exported."""
    try:
        yield
    except Exception as exc:
        log.warning("metrics: reading %s failed: %s: %s", what, type(exc).__name__, exc)


async def watch_loop_lag(telemetry: Telemetry, interval: float = 0.5) -> None:
    """Measure, until cancelled, how late the loop wakes a task sleeping ``interval`` seconds."""
    loop = asyncio.get_running_loop()
    while True:
        start = loop.time()
        await asyncio.sleep(interval)
        telemetry.record_loop_lag(max(0.0, loop.time() - start - interval))


class HttpEndpoint(Component):
    """Serve ``GET /metrics`` and ``GET /healthz`` on ``config.host:config.port`` (aiohttp).

    ``async with HttpEndpoint(config, telemetry) as server:`` listens until the block ends;
    ``server.port`` is the bound port (None when ``config.enabled`` is false: then nothing is
    served). ``/metrics`` is prometheus_client's aiohttp handler (OpenMetrics when asked
    for, gzip when accepted); ``/healthz`` answers ``health()`` (default
    ``telemetry.health``) as JSON, 200 when healthy, else 503. A connection idle (or
    half-sent) for ``timeout`` seconds is closed.
    """

    def __init__(
        self,
        config: HttpConfig,
        telemetry: Telemetry,
        *,
        health: HealthCheck | None = None,
        timeout: float = REQUEST_TIMEOUT,
    ) -> None:
        self.config = config
        self.telemetry = telemetry
        self.port: int | None = None
        self._health = health if health is not None else telemetry.health
        self._timeout = timeout
        self._runner: web.AppRunner | None = None

    async def _setup(self) -> None:
        if not self.config.enabled:
            return
        app = web.Application()
        app.router.add_get("/metrics", self._metrics(make_aiohttp_handler(self.telemetry.registry)))
        app.router.add_get("/healthz", self._healthz)
        runner = web.AppRunner(
            app,
            access_log=None,
            keepalive_timeout=self._timeout,
            shutdown_timeout=SHUTDOWN_TIMEOUT,
        )
        await runner.setup()
        self._runner = runner
        site = web.TCPSite(runner, self.config.host, self.config.port)
        await site.start()
        self.port = int(runner.addresses[0][1])
        log.info("serving /metrics and /healthz on %s:%d", self.config.host, self.port)

    async def _teardown(self) -> None:
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    @staticmethod
    def _metrics(handler: Handler) -> Handler:
        """Return ``handler`` answering with ``Cache-Control: no-store``."""

        async def metrics(request: web.Request) -> web.StreamResponse:
            response = await handler(request)
            response.headers[hdrs.CACHE_CONTROL] = "no-store"
            return response

        return metrics

    async def _healthz(self, request: web.Request) -> web.Response:
        """Answer the health check: 200 when healthy, else 503, the reasons as JSON."""
        try:
            healthy, body = self._health()
            data = json.dumps(body, default=str).encode() + b"\n"
        except Exception:
            log.exception("HTTP /healthz failed")
            return web.Response(status=500, text="internal error\n", headers=NO_STORE)
        return web.Response(
            status=200 if healthy else 503,
            body=data,
            content_type="application/json",
            headers=NO_STORE,
        )
