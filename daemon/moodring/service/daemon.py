"""``moodring run``: feeds → engine → rules → delivery, until SIGTERM or SIGINT."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from pathlib import Path

from moodring.delivery.charts import render_with_budget
from moodring.delivery.dispatcher import Dispatcher
from moodring.delivery.outbox import Outbox
from moodring.delivery.sink import AlertSink
from moodring.engine import Engine
from moodring.feeds.backoff import Backoff
from moodring.feeds.calendar import MarketCalendar
from moodring.feeds.ccxt_feed import ExchangeFeeds
from moodring.feeds.yahoo import HistoryError, YahooStreamer, fetch_history
from moodring.market.bar import Bar
from moodring.rules.alert import Alert
from moodring.rules.silences import Silences
from moodring.service.recorder import BarRecorder
from moodring.service.sink import EngineSink
from moodring.settings import FeedConfig, Settings
from moodring.times import iso_time

log = logging.getLogger("moodring")

# Trades may arrive this long after their bar ended and still count.
CLOSE_GRACE_MS = 2_000
# Shutdown budget (systemd gives 5 s): feeds close, then queued alerts get a last try.
STOP_FEEDS_SECONDS = 1.5
DRAIN_SECONDS = 2.5
YAHOO_STREAMER = "wss://streamer.finance.yahoo.com/?version=2"
YAHOO_CHART = "https://query2.finance.yahoo.com"
# moodring timeframe -> Yahoo chart interval and a range that covers the windows
YAHOO_INTERVALS = {
    "1m": ("1m", "5d"), "5m": ("5m", "1mo"), "15m": ("15m", "1mo"), "1h": ("60m", "3mo"),
    "1d": ("1d", "2y"), "1w": ("1wk", "5y"),
}  # fmt: skip


class Daemon:
    """The running service: one engine, its feeds, the outbox and the dispatcher."""

    def __init__(self, settings: Settings, *, record: Path | None = None) -> None:
        self.settings = settings
        self.engine = Engine(settings)
        self.sink = EngineSink(self.engine)
        state = settings.resolved_state_dir()
        state.mkdir(parents=True, exist_ok=True)
        self.outbox = Outbox(state / "outbox.sqlite")
        self.dispatcher = Dispatcher(
            self.outbox,
            settings.notify,
            render_chart=render_with_budget,
            chart_dir=state / "charts",
        )
        self.alerts = AlertSink(self.dispatcher, Silences(state / "silences.json"))
        self.engine.rules.subscribe(self.alerts)
        self.engine.rules.subscribe(_log_alert)
        self.recorder = BarRecorder(record) if record is not None else None
        if self.recorder is not None:
            for feed in settings.feeds:
                for builder in self.engine.builders(feed):
                    self.recorder.attach(feed, builder)
        self.exchanges = self._exchange_feeds()
        self.stopping = asyncio.Event()

    def _exchange_feeds(self) -> list[ExchangeFeeds]:
        groups: dict[tuple[str, str | None, str | None], dict] = {}
        for name, feed in self.settings.feeds.items():
            if feed.source == "yahoo":
                continue
            if feed.source != "ccxt":
                log.warning("%s: source %s is not supported yet; feed skipped", name, feed.source)
                continue
            groups.setdefault((feed.exchange, feed.ws_url, feed.rest_url), {})[name] = feed
        return [
            ExchangeFeeds(exchange, feeds, self.sink, self.engine.builders)
            for (exchange, _, _), feeds in groups.items()
        ]

    async def run(self) -> int:
        """Run until asked to stop; return the exit code."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, self.stop)
        tasks = [asyncio.create_task(ex.run(), name=f"feed {ex.exchange}") for ex in self.exchanges]
        for name, feed in self.settings.feeds.items():
            if feed.source == "yahoo":
                tasks.append(asyncio.create_task(self._yahoo(name, feed), name=f"feed {name}"))
        tasks.append(asyncio.create_task(self._clock(), name="clock"))
        delivery = asyncio.create_task(self.dispatcher.run(), name="delivery")
        log.info("moodring running: %d feed(s), %d rule(s)", len(self.settings.feeds),
                 len(self.settings.rules))  # fmt: skip
        await self.stopping.wait()
        log.info("stopping")
        for task in tasks:
            task.cancel()
        _, stuck = await asyncio.wait(tasks, timeout=STOP_FEEDS_SECONDS)
        for task in stuck:
            log.warning("%s did not stop in time; left behind", task.get_name())
        delivered = await self.dispatcher.drain(DRAIN_SECONDS)
        delivery.cancel()
        await asyncio.gather(delivery, return_exceptions=True)
        if not delivered:
            log.warning("%d alert(s) still queued; they go out after the next start",
                        self.outbox.depth())  # fmt: skip
        self.outbox.close()
        if self.recorder is not None:
            self.recorder.close()
        log.info("stopped")
        return 0

    def stop(self) -> None:
        """Ask the daemon to stop (signal handlers call this)."""
        self.stopping.set()

    async def _yahoo(self, name: str, feed: FeedConfig) -> None:
        """Warm a Yahoo feed up from chart history (retrying meanwhile), then stream it."""
        streamer = YahooStreamer(
            name, feed.symbol, self.sink, url=feed.ws_url or YAHOO_STREAMER,
            calendar=MarketCalendar(), stale_after=feed.stale_after,
        )  # fmt: skip
        warm = asyncio.create_task(self._yahoo_history(name, feed))
        try:
            await streamer.run()
        finally:
            warm.cancel()

    async def _yahoo_history(self, name: str, feed: FeedConfig) -> None:
        backoff = Backoff(2.0, 300.0)
        for builder in self.engine.builders(name):
            interval, span = YAHOO_INTERVALS.get(builder.timeframe.name, ("1d", "2y"))
            while True:
                try:
                    frame = await fetch_history(
                        feed.symbol, interval, span, base_url=feed.rest_url or YAHOO_CHART
                    )
                    break
                except (HistoryError, OSError) as exc:
                    delay = backoff.next()
                    log.warning("%s: history: %s; retrying in %.0f s", name, exc, delay)
                    await asyncio.sleep(delay)
            tf = builder.timeframe.ms
            now = int(time.time() * 1000)
            bars = [Bar(*row) for row in zip(*(c.tolist() for c in (
                frame.time, frame.open, frame.high, frame.low, frame.close, frame.volume)),
                strict=True)]  # fmt: skip
            closed = [bar for bar in bars if bar.time + tf <= now]
            self.sink.history(name, closed, length_ms=tf)
            log.info("%s: warmed up %d %s bars", name, len(closed), builder.timeframe)

    async def _clock(self) -> None:
        """Close bars whose interval has ended even when no trade comes to close them."""
        wall_clocked = [n for n, f in self.settings.feeds.items() if f.source != "ccxt"]
        while True:
            await asyncio.sleep(1.0)
            for exchange in self.exchanges:
                self.engine.advance(exchange.clock_ms() - CLOSE_GRACE_MS, exchange.feeds)
                exchange.on_clock()
            if wall_clocked:
                self.engine.advance(int(time.time() * 1000) - CLOSE_GRACE_MS, wall_clocked)


def _log_alert(alert: Alert) -> None:
    log.info("ALERT %s %s [%s] %s: %s — %s", iso_time(alert.time), alert.rule, alert.severity,
             alert.state, alert.title, alert.message)  # fmt: skip
