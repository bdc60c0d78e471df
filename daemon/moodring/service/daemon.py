"""``moodring run``: feeds → engine → rules → delivery, until SIGTERM or SIGINT."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import logging
import signal
import sqlite3
import time
from collections.abc import Awaitable
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from moodring.configfile import ConfigError, load_settings
from moodring.delivery.charts import render_with_budget
from moodring.delivery.dispatcher import Dispatcher
from moodring.delivery.outbox import Outbox
from moodring.delivery.sink import AlertSink
from moodring.digest.content import (
    DIGEST_BARS,
    build_digest,
    digest_alert,
    digest_columns,
    digest_payload,
)
from moodring.digest.schedule import run_schedule
from moodring.engine import Engine, MetricNode
from moodring.feeds.backoff import Backoff
from moodring.feeds.calendar import MarketCalendar
from moodring.feeds.ccxt_feed import KLINES_LIMIT, ExchangeFeeds
from moodring.feeds.health import BadFrames
from moodring.market.bar import Bar
from moodring.market.builder import BarBuilder
from moodring.market.jumps import Jump
from moodring.market.timeframe import Timeframe
from moodring.rules.alert import Alert
from moodring.rules.silences import Silences
from moodring.service.catchup import CatchUp
from moodring.service.health import HealthServer, Telemetry, watch_loop_lag
from moodring.service.notify import SdNotify, watchdog_loop
from moodring.service.recorder import BarRecorder
from moodring.service.sink import EngineSink
from moodring.service.snapshot import (
    EngineState,
    Snapshotter,
    attach,
    capture,
    load,
    restore,
    resume_rules,
    rule_state_json,
)
from moodring.settings import FeedConfig, Settings
from moodring.statedir import check_dir, state_file
from moodring.times import iso_time

if TYPE_CHECKING:
    from moodring.delivery.mqtt import MqttPublisher

log = logging.getLogger("moodring")

# Trades may arrive this long after their bar ended and still count.
CLOSE_GRACE_MS = 2_000
# Shutdown budget (systemd gives 5 s): feeds close, then queued alerts get a last try.
STOP_FEEDS_SECONDS = 1.5
DRAIN_SECONDS = 2.5
# READY=1 at the latest this long after start, warmed up or not: without network the feeds
# keep retrying (and say so in STATUS=) instead of systemd killing a start that never ends.
READY_AFTER = 60.0
# The watchdog is fed only while the bar clock has run within this many seconds.
CLOCK_STALL = 5.0
# Ring buffers and rule states are saved this often (and once warmed up, and at shutdown);
# a snapshot older than SNAPSHOT_MAX_AGE is not restored (the outbox forgets sent alerts
# after 7 days too). Rule states also go to the outbox with each alert.
SNAPSHOT_EVERY = 60.0
SNAPSHOT_MAX_AGE = 7 * 86_400.0
# A restored series is continued by fetching the bars since its last one, up to this many.
CATCH_UP_BARS = KLINES_LIMIT - 2
TOO_LATE = "closed while moodring was down, older than notify.late_max_age: not sent"
YAHOO_STREAMER = "wss://streamer.finance.yahoo.com/?version=2"
YAHOO_CHART = "https://query2.finance.yahoo.com"
# moodring timeframe -> Yahoo chart interval and a range that covers the windows
YAHOO_INTERVALS = {
    "1m": ("1m", "5d"),
    "5m": ("5m", "1mo"),
    "15m": ("15m", "1mo"),
    "1h": ("60m", "3mo"),
    "1d": ("1d", "2y"),
    "1w": ("1wk", "5y"),
}


class Daemon:
    """The running service: one engine, its feeds, the outbox and the dispatcher.

    ``config_path`` is the file SIGHUP re-reads (None: the built-in default).
    """

    def __init__(
        self, settings: Settings, *, record: Path | None = None, config_path: Path | None = None
    ) -> None:
        self.settings = settings
        self.config_path = config_path
        state = check_dir(settings.resolved_state_dir())
        self.state_dir = state
        with state_file(state / "outbox.sqlite", "outbox"):
            self.outbox = Outbox(state / "outbox.sqlite")
        self.silences = Silences(state / "silences.json")
        self.notify = SdNotify.from_env()
        self.bad_frames = BadFrames()
        self.mqtt = _publisher(settings)
        self.telemetry = Telemetry(
            bad_frames=self.bad_frames.counts,
            feed_states=self.feed_states,
            outbox_depth=self.outbox.depth,
            alerts_queued=lambda: self.mqtt.stats.queued_alerts if self.mqtt else 0,
            problems=self.problems,
            alert_counts=self._alert_counts,
        )
        self.dispatcher = self._dispatcher(settings)
        self.alerts = AlertSink(self.dispatcher, self.silences)
        self.recorder = BarRecorder(record) if record is not None else None
        self.snapshots = Snapshotter(lambda: self.engine, state / "snapshot.npz")
        saved = load(self.snapshots.path, settings, max_age_s=SNAPSHOT_MAX_AGE)
        fresh = _fresh(saved) if saved else None
        self.engine, _ = self._engine(settings, fresh, forming=False)
        self.sink = EngineSink(
            self.engine,
            self.bad_frames,
            on_tick=self.telemetry.tick,
            on_state=self._on_state,
            on_update=self.telemetry.observe_update,
        )
        self.catch_up: CatchUp | None = None
        if fresh is not None:
            # a rule whose alert was saved after the snapshot continues from that state
            resume_rules(self.engine, self.outbox.rule_states(), fresh.taken_ms)
            self.catch_up = self.sink.catch_up = _catch_up(self.engine, settings)
        self.exchanges = self._exchange_feeds()
        self.stopping = asyncio.Event()
        self._feed_tasks: list[asyncio.Task[None]] = []
        self._warming: set[str] = set()
        self._clock_beat = time.monotonic()
        self._status = ""
        self._delivery: asyncio.Task[None] | None = None
        self._mqtt_task: asyncio.Task[None] | None = None
        self._digest_task: asyncio.Task[None] | None = None

    def _dispatcher(self, settings: Settings) -> Dispatcher:
        def counted(target: str, ok: bool) -> None:
            (self.telemetry.alert_sent if ok else self.telemetry.alert_failed)(target)

        return Dispatcher(
            self.outbox,
            settings.notify,
            render_chart=render_with_budget,
            chart_dir=self.state_dir / "charts",
            on_result=counted,
            on_dead=self.telemetry.alert_dead,
        )

    def _engine(
        self, settings: Settings, state: EngineState | None = None, *, forming: bool = True
    ) -> tuple[Engine, bool]:
        """Build an engine for ``settings`` (holding ``state``), wired to the outputs.

        Also return whether some series has no bars from ``state`` (it needs a warm-up).
        """
        engine = Engine(settings)
        if settings.digest is not None:  # before the restore: its replay fills the history
            engine.track(digest_columns(settings), DIGEST_BARS)
        cold = True
        if state is not None:
            # restored before the wiring: the replay reaches no output
            cold = bool(restore(engine, state, forming=forming).warm_up())
        else:
            attach(engine)
        engine.rules.subscribe(functools.partial(self._on_alert, engine))
        engine.subscribe(self._on_metric)
        engine.subscribe_jumps(self._on_jump)
        for feed in settings.feeds:
            for builder in engine.builders(feed):
                if self.recorder is not None:
                    self.recorder.attach(feed, builder)
                builder.subscribe(functools.partial(self._on_bar, feed, builder.timeframe.name))
        return engine, cold

    def _builders(self, feed: str) -> list[BarBuilder]:
        """Return the current engine's builders of a feed (the engine changes on reload)."""
        return self.engine.builders(feed)

    def _on_jump(self, jump: Jump) -> None:
        log.warning("%s", jump.describe())
        self.telemetry.suspect_bar(jump.feed)

    def _on_alert(self, engine: Engine, alert: Alert) -> None:
        rule = engine.rules.rule(alert.rule)
        state = rule_state_json(rule) if rule is not None else None
        catch_up = self.sink.catch_up
        if catch_up is not None and catch_up.active:
            verdict, alert = catch_up.judge(alert)
            if verdict == "past":
                return  # the run before judged this bar: a warm-up's alert
            if verdict == "too_old":
                _log_alert(alert, TOO_LATE)
                if state is not None:
                    self.alerts.keep_state(alert, state)
                return
        _log_alert(alert)
        self.alerts(alert, state)
        if self.mqtt is not None:
            self.mqtt.alert(alert)

    def _on_metric(self, node: MetricNode, time_ms: int) -> None:
        if self.mqtt is not None:
            for column, value in zip(node.outputs, node.values, strict=True):
                self.mqtt.metric(column, value, time_ms, forming=False)

    def _on_bar(self, feed: str, timeframe: str, bar: Bar) -> None:
        if self.mqtt is not None:
            self.mqtt.bar(feed, timeframe, bar)

    def _on_state(self, feed: str, state: str, t_ms: int) -> None:
        if self.mqtt is not None:
            self.mqtt.feed_state(feed, state, t_ms)

    def _start_digest(self) -> asyncio.Task[None] | None:
        if self.settings.digest is None:
            return None
        return asyncio.create_task(
            run_schedule(self.settings.digest, self.send_digest), name="digest"
        )

    def send_digest(self, at: datetime) -> None:
        """Send the digest of the moment ``at``: outbox (apprise, its chart) and MQTT."""
        digest = build_digest(self.engine, self.settings, int(at.timestamp() * 1000))
        log.info("digest %s: %s", iso_time(digest.time), digest.title)
        self.alerts(digest_alert(digest))  # silences apply: `moodring silence digest`
        if self.mqtt is not None:
            self.mqtt.publish("digest", digest_payload(digest), retain=True, qos=1)

    def _start_mqtt(self) -> asyncio.Task[None] | None:
        if self.mqtt is None:
            return None
        self.mqtt.announce(self.settings.metric_columns())
        return asyncio.create_task(self.mqtt.run(), name="mqtt")

    def feed_states(self) -> dict[str, str]:
        """Return every configured feed's state (``ok`` until it reports otherwise)."""
        states = self.sink.states
        return {name: states.get(name, "ok") for name in self.settings.feeds}

    def problems(self) -> dict[str, str]:
        """Return what keeps the daemon from keeping its state (outbox, snapshot), by part."""
        found = {}
        checks = (("outbox", self.alerts.problem()), ("snapshot", self.snapshots.problem()))
        for part, problem in checks:
            if problem is not None:
                found[part] = problem
        return found

    def _alert_counts(self) -> dict[str, int]:
        catch_up = self.catch_up
        return {
            "moodring_alerts_unsaved": self.alerts.held,
            "moodring_alerts_lost": self.alerts.lost,
            "moodring_alerts_late": catch_up.late if catch_up else 0,
            "moodring_alerts_too_late": catch_up.too_old if catch_up else 0,
        }

    def healthy(self) -> bool:
        """Return whether the loop runs, the bar clock ticks and no feed task has died."""
        if time.monotonic() - self._clock_beat > CLOCK_STALL:
            return False
        return not any(task.done() for task in self._feed_tasks)

    async def run(self) -> int:
        """Run until asked to stop; return the exit code."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, self.stop)
        reloads: list[asyncio.Task[bool]] = []
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(
                signal.SIGHUP,
                lambda: reloads.append(loop.create_task(self.reload(), name="reload")),
            )
        http = self.settings.http
        async with contextlib.AsyncExitStack() as stack:
            try:
                await stack.enter_async_context(HealthServer(http, self.telemetry))
            except OSError as exc:
                raise ConfigError(
                    f"http: cannot listen on {http.host}:{http.port}: {exc.strerror or exc} "
                    "(set http.port, or http.enabled: false)"
                ) from None
            background = [
                asyncio.create_task(self._clock(), name="clock"),
                asyncio.create_task(watch_loop_lag(self.telemetry), name="loop lag"),
                asyncio.create_task(watchdog_loop(self.notify, self.healthy), name="watchdog"),
                asyncio.create_task(self._ready(), name="ready"),
                asyncio.create_task(self.snapshots.run(SNAPSHOT_EVERY), name="snapshots"),
                asyncio.create_task(self.alerts.retry(), name="outbox retry"),
            ]
            self._digest_task = self._start_digest()
            self._delivery = asyncio.create_task(self.dispatcher.run(), name="delivery")
            self._mqtt_task = self._start_mqtt()
            self._start_feeds()
            log.info(
                "moodring running: %d feed(s), %d rule(s)",
                len(self.settings.feeds),
                len(self.settings.rules),
            )
            await self.stopping.wait()
            log.info("stopping")
            self.notify.stopping()
            for task in [*background, *reloads, self._digest_task]:
                if task is not None:
                    task.cancel()
            await self._stop_feeds()
            if not self.alerts.flush():
                held, problem = self.alerts.held, self.alerts.problem()
                log.error("%d alert(s) LOST: still held in memory at exit (%s)", held, problem)
            self.snapshots.save_now()
            await self._stop_delivery(DRAIN_SECONDS)
            await self._stop_mqtt()
        self.outbox.close()
        if self.recorder is not None:
            self.recorder.close()
        self.notify.close()
        log.info("stopped")
        return 0

    def stop(self) -> None:
        """Ask the daemon to stop (signal handlers call this)."""
        self.stopping.set()

    async def reload(self) -> bool:
        """Re-read the config; apply it if valid, else keep running the old one."""
        started = time.monotonic()
        self.notify.reloading()
        try:
            settings = load_settings(self.config_path)
        except ConfigError as exc:
            log.error("reload failed, still running the previous config:\n%s", exc)
            self.telemetry.reload(False)
            self.notify.ready(self._status_line())
            return False
        old, self.settings = self.settings, settings
        self.sink.catch_up = None  # a restart of the feeds now warms up quietly, as before
        restart = (settings.feeds, settings.altseason) != (old.feeds, old.altseason)
        if _engine_part(settings) != _engine_part(old):
            # a new engine holding the old one's bars, rule states and published values
            engine, cold = self._engine(settings, capture(self.engine))
            self.engine = self.sink.engine = engine
            # series the old bars do not cover (a new one, a longer window) need a warm-up
            restart = restart or cold
            for exchange in self.exchanges if not restart else ():
                exchange.resync()  # bars held in the old engine's builders: repair them anew
        if restart:
            await self._stop_feeds()
            self.exchanges = self._exchange_feeds()
            self._start_feeds()
        if settings.notify != old.notify:
            await self._stop_delivery(0.0)
            self.dispatcher = self.alerts.dispatcher = self._dispatcher(settings)
            self._delivery = asyncio.create_task(self.dispatcher.run(), name="delivery")
        if settings.mqtt != old.mqtt:
            await self._stop_mqtt()
            self.mqtt = _publisher(settings)
            self._mqtt_task = self._start_mqtt()
        if settings.digest != old.digest:
            if self._digest_task is not None:
                self._digest_task.cancel()
            self._digest_task = self._start_digest()
        if settings.http != old.http:
            log.warning("http: changes take effect at the next restart")
        self.telemetry.reload(True)
        self.notify.ready(self._status_line())
        log.info(
            "reloaded %s in %.0f ms",
            self.config_path or "the built-in config",
            (time.monotonic() - started) * 1000,
        )
        return True

    async def _stop_delivery(self, drain: float) -> None:
        """Give queued alerts ``drain`` seconds, then stop the dispatcher (rows stay queued)."""
        delivered = await self.dispatcher.drain(drain) if drain else False
        if self._delivery is not None:
            self._delivery.cancel()
            await asyncio.gather(self._delivery, return_exceptions=True)
        if drain and not delivered:
            log.warning(
                "%d alert(s) still queued; they go out after the next start", self.outbox.depth()
            )

    async def _stop_mqtt(self) -> None:
        """Stop the publisher: it says ``offline`` and disconnects."""
        if self._mqtt_task is not None:
            self._mqtt_task.cancel()
            await asyncio.gather(self._mqtt_task, return_exceptions=True)
            self._mqtt_task = None

    def _start_feeds(self) -> None:
        """Start a task per exchange and per Yahoo feed, each warming up first."""
        tasks = []
        for exchange in self.exchanges:
            tasks.append(asyncio.create_task(self._exchange(exchange), name=exchange.exchange))
        for name, feed in self.settings.feeds.items():
            if feed.source != "ccxt":
                tasks.append(asyncio.create_task(self._equity(name, feed), name=f"feed {name}"))
        self._warming = {t.get_name() for t in tasks}
        if self.settings.altseason is not None:  # hundreds of REST calls: READY does not wait
            tasks.append(asyncio.create_task(self._altseason(), name="altseason"))
        self._feed_tasks = tasks

    async def _stop_feeds(self) -> None:
        for task in self._feed_tasks:
            task.cancel()
        if self._feed_tasks:
            _, stuck = await asyncio.wait(self._feed_tasks, timeout=STOP_FEEDS_SECONDS)
            for task in stuck:
                log.warning("%s did not stop in time; left behind", task.get_name())
        self._feed_tasks = []

    def _exchange_feeds(self) -> list[ExchangeFeeds]:
        groups: dict[tuple[str, str | None, str | None], dict] = {}
        for name, feed in self.settings.feeds.items():
            if feed.source != "ccxt":
                continue
            groups.setdefault((feed.exchange, feed.ws_url, feed.rest_url), {})[name] = feed
        return [
            ExchangeFeeds(
                exchange,
                feeds,
                self.sink,
                self._builders,
                on_reconnect=self.telemetry.reconnect,
            )
            for (exchange, _, _), feeds in groups.items()
        ]

    async def _exchange(self, exchange: ExchangeFeeds) -> None:
        await self._warmed(exchange.run(), exchange.warmed.wait(), exchange.exchange)

    async def _warmed(self, run: Awaitable[None], warm: Awaitable[object], name: str) -> None:
        """Run a feed; note when its warm-up is done."""

        async def note() -> None:
            await warm
            self._warming.discard(name)

        noted = asyncio.ensure_future(note())
        try:
            await run
        finally:
            noted.cancel()

    async def _ready(self) -> None:
        """Say READY=1 once every feed is warmed up (or after READY_AFTER); keep STATUS= fresh."""
        deadline = time.monotonic() + READY_AFTER
        while self._warming and time.monotonic() < deadline:
            self._set_status()
            await asyncio.sleep(0.2)
        self.telemetry.mark_ready()
        self.notify.ready(self._status_line())
        if self._warming:
            log.warning(
                "ready before warm-up finished; still waiting for %s",
                ", ".join(sorted(self._warming)),
            )
        else:
            log.info("warmed up: ready")
        await self.snapshots.save_soon()  # a crash from now on resumes from here
        while True:
            await asyncio.sleep(1.0)
            self._set_status()

    def _status_line(self) -> str:
        by_state: dict[str, list[str]] = {}
        for name, state in self.feed_states().items():
            by_state.setdefault(state, []).append(name)
        parts = [f"{state}: {', '.join(names)}" for state, names in sorted(by_state.items())]
        if self._warming:
            parts.insert(0, f"warming up {', '.join(sorted(self._warming))}")
        parts.extend(self.problems().values())
        try:
            parts.append(f"{self.outbox.depth()} alert(s) queued")
        except sqlite3.Error as exc:
            parts.append(f"outbox unreadable: {exc}")
        return "; ".join(parts)

    def _set_status(self) -> None:
        status = self._status_line()
        if status != self._status:
            self._status = status
            self.notify.status(status)

    async def _equity(self, name: str, feed: FeedConfig) -> None:
        """Warm an equity feed up from Yahoo's chart history, then stream it from its source."""
        # imported here: a daemon without equity feeds does not carry them
        from moodring.feeds.alpaca import ALPACA_URL, AlpacaStreamer
        from moodring.feeds.finnhub import FINNHUB_URL, FinnhubStreamer
        from moodring.feeds.yahoo import YahooStreamer

        common = {"calendar": MarketCalendar(), "stale_after": feed.stale_after}
        streamer: YahooStreamer | FinnhubStreamer | AlpacaStreamer
        if feed.source == "finnhub":
            streamer = FinnhubStreamer(
                name,
                feed.symbol,
                self.sink,
                url=feed.ws_url or FINNHUB_URL,
                api_key=feed.api_key,
                **common,
            )
        elif feed.source == "alpaca":
            streamer = AlpacaStreamer(
                name,
                feed.symbol,
                self.sink,
                url=feed.ws_url or ALPACA_URL,
                api_key=feed.api_key,
                api_secret=feed.api_secret,
                **common,
            )
        else:
            streamer = YahooStreamer(
                name, feed.symbol, self.sink, url=feed.ws_url or YAHOO_STREAMER, **common
            )
        warm = asyncio.create_task(self._yahoo_history(name, feed))
        try:
            await self._warmed(streamer.run(), asyncio.shield(warm), f"feed {name}")
        finally:
            warm.cancel()

    async def _altseason(self) -> None:
        """Keep the Altcoin Season Index current from its exchange."""
        from moodring.feeds.altseason import AltseasonFeed

        assert self.settings.altseason is not None
        await AltseasonFeed(self.settings.altseason, self._publish).run()

    def _publish(self, column: str, t_ms: int, value: float, closed: bool) -> None:
        """Pass a value computed outside the bars (the altseason index) to engine and MQTT."""
        self.engine.publish(column, t_ms, value, closed=closed)
        if self.mqtt is not None:
            self.mqtt.metric(column, value, t_ms, forming=not closed)

    async def _yahoo_history(self, name: str, feed: FeedConfig) -> None:
        from moodring.feeds.yahoo import HistoryError, fetch_history

        backoff = Backoff(2.0, 300.0)
        for builder in self._builders(name):
            interval, span = YAHOO_INTERVALS.get(builder.timeframe.name, ("1d", "2y"))
            while True:
                try:
                    # keyed sources have no free history: Yahoo's serves them too
                    own = feed.rest_url if feed.source == "yahoo" else None
                    frame = await fetch_history(
                        feed.symbol, interval, span, base_url=own or YAHOO_CHART
                    )
                    break
                except (HistoryError, OSError) as exc:
                    delay = backoff.next()
                    log.warning(
                        "%s: history: %s; retrying in %.0f s",
                        name,
                        exc,
                        delay,
                        extra={"feed": name},
                    )
                    await asyncio.sleep(delay)
            tf = builder.timeframe.ms
            now = int(time.time() * 1000)
            bars = [
                Bar(*row)
                for row in zip(
                    *(
                        c.tolist()
                        for c in (
                            frame.time,
                            frame.open,
                            frame.high,
                            frame.low,
                            frame.close,
                            frame.volume,
                        )
                    ),
                    strict=True,
                )
            ]
            closed = [bar for bar in bars if bar.time + tf <= now]
            self.sink.history(name, closed, length_ms=tf)
            log.info(
                "%s: warmed up %d %s bars",
                name,
                len(closed),
                builder.timeframe,
                extra={"feed": name},
            )

    async def _clock(self) -> None:
        """Close bars whose interval has ended even when no trade comes to close them."""
        while True:
            await asyncio.sleep(1.0)
            self._clock_beat = time.monotonic()
            for exchange in self.exchanges:
                with self.engine.deferred():  # each feed by its own stream's clock, one moment
                    for feed in exchange.feeds:
                        self.engine.advance(exchange.clock_ms(feed) - CLOSE_GRACE_MS, (feed,))
                exchange.on_clock()
            now = int(time.time() * 1000)
            wall_clocked = [n for n, f in self.settings.feeds.items() if f.source != "ccxt"]
            if wall_clocked:
                self.engine.advance(now - CLOSE_GRACE_MS, wall_clocked)
            if self.mqtt is not None:  # forming values: the publisher throttles them
                for column, value in self.engine.forming_values().items():
                    self.mqtt.metric(column, value, now, forming=True)


def _publisher(settings: Settings) -> MqttPublisher | None:
    """Return an MQTT publisher if a broker is configured (aiomqtt is imported only then)."""
    if not settings.mqtt.host:
        return None
    from moodring.delivery.mqtt import MqttPublisher

    return MqttPublisher(settings.mqtt)


def _engine_part(settings: Settings) -> tuple[object, ...]:
    """Return the parts of a config the engine is built from."""
    return (settings.feeds, settings.series, settings.metrics, settings.rules)


def _fresh(state: EngineState) -> EngineState:
    """Return ``state`` without series whose last bar is older than warm-up reaches back.

    Warm-up fetches the bars since each restored series' last one, at most CATCH_UP_BARS
    (or its window, if longer); an older series would keep a hole, so it is warmed up
    from scratch instead.
    """
    now = int(time.time() * 1000)
    kept = tuple(
        series
        for series in state.series
        if len(series.time)
        and now - int(series.time[-1])
        <= max(series.kept, CATCH_UP_BARS) * Timeframe.parse(series.timeframe).ms
    )
    return dataclasses.replace(state, series=kept)


def _catch_up(engine: Engine, settings: Settings) -> CatchUp:
    """Return the judge of the warm-up's alerts for an engine restored from a snapshot."""
    judged, timeframes = {}, {}
    for rule in engine.rules.rules:
        name, tf = rule.config.name, rule.timeframe
        timeframes[name] = tf.ms
        lasts = [
            builder.last_time
            for feed in rule.feeds
            for builder in engine.builders(feed)
            if builder.timeframe == tf and builder.last_time >= 0
        ]
        if lasts:
            judged[name] = min(lasts)
    return CatchUp(judged, timeframes, settings.notify.late_max_age)


def _log_alert(alert: Alert, note: str = "") -> None:
    log.info(
        "ALERT %s %s [%s] %s: %s — %s%s",
        iso_time(alert.time),
        alert.rule,
        alert.severity,
        alert.state,
        alert.title,
        alert.message,
        f" ({note})" if note else "",
        extra={"rule": alert.rule, "alert_key": alert.key, "state": alert.state},
    )
