"""``moodring run``: feeds → engine → rules → delivery, until SIGTERM or SIGINT."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from pathlib import Path

from moodring.delivery.charts import render_with_budget
from moodring.delivery.dispatcher import Dispatcher
from moodring.delivery.outbox import Outbox
from moodring.delivery.sink import AlertSink
from moodring.engine import Engine
from moodring.feeds.ccxt_feed import ExchangeFeeds
from moodring.rules.alert import Alert
from moodring.rules.silences import Silences
from moodring.service.recorder import BarRecorder
from moodring.service.sink import EngineSink
from moodring.settings import Settings
from moodring.times import iso_time

log = logging.getLogger("moodring")

# Trades may arrive this long after their bar ended and still count.
CLOSE_GRACE_MS = 2_000
# How long shutdown may spend delivering what is queued (systemd waits 5 s for us).
DRAIN_SECONDS = 3.0


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
        tasks.append(asyncio.create_task(self._clock(), name="clock"))
        delivery = asyncio.create_task(self.dispatcher.run(), name="delivery")
        log.info("moodring running: %d feed(s), %d rule(s)", len(self.settings.feeds),
                 len(self.settings.rules))  # fmt: skip
        await self.stopping.wait()
        log.info("stopping")
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
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

    async def _clock(self) -> None:
        """Close bars whose interval has ended even when no trade comes to close them."""
        while True:
            await asyncio.sleep(1.0)
            for exchange in self.exchanges:
                self.engine.advance(exchange.clock_ms() - CLOSE_GRACE_MS, exchange.feeds)


def _log_alert(alert: Alert) -> None:
    log.info("ALERT %s %s [%s] %s: %s — %s", iso_time(alert.time), alert.rule, alert.severity,
             alert.state, alert.title, alert.message)  # fmt: skip
