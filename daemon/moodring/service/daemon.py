"""``moodring run``: feeds → engine → rules → delivery, until SIGTERM or SIGINT.

The daemon is a Component made of components, entered in an ``AsyncExitStack``: the order
of ``Daemon._open`` is the start order, its reverse the stop order.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import gc
import json
import logging
import math
import signal
import sqlite3
import time
from collections.abc import Callable, Mapping
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from moodring.configfile import ConfigError, load_settings, with_members
from moodring.delivery.dispatcher import Dispatcher
from moodring.delivery.intake import AlertIntake
from moodring.delivery.outbox import Outbox
from moodring.delivery.sender import WorkerSender
from moodring.digest.schedule import DigestSchedule
from moodring.engine import MetricNode
from moodring.feeds.frames import BadFrames
from moodring.feeds.source import FeedPart, FeedWiring, build_parts, warming
from moodring.lifecycle import Component, Group, first_completed
from moodring.market.bar import Bar
from moodring.market.builder import BarBuilder
from moodring.market.jumps import Jump
from moodring.market.timeframe import Timeframe
from moodring.metrics.ranking import described
from moodring.pipeline import Pipeline
from moodring.rules.alert import Alert
from moodring.rules.silences import Silences
from moodring.service.catchup import CatchUp
from moodring.service.clock import BarClock
from moodring.service.notify import SdNotify, watchdog_loop
from moodring.service.pipeline_sink import PipelineSink
from moodring.service.ranker import Members, Ranker
from moodring.service.recorder import BarRecorder
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
from moodring.service.telemetry import HttpEndpoint, Telemetry, watch_loop_lag
from moodring.settings import Member, Settings, WatchlistConfig
from moodring.statedir import check_dir, state_file
from moodring.times import iso_time

if TYPE_CHECKING:
    from moodring.delivery.mqtt import MqttPublisher
    from moodring.feeds.altseason_feed import AltseasonFeed

log = logging.getLogger("moodring")

# Exit code when a part of the daemon failed unexpectedly (sysexits.h EX_SOFTWARE).
EX_SOFTWARE = 70
# Shutdown budget (systemd gives 5 s): feeds close (each part within lifecycle.STOP_TIMEOUT,
# all at once), then queued alerts get a last try.
DRAIN_SECONDS = 2.5
# READY=1 at the latest this long after start, warmed up or not: without network the feeds
# keep retrying (and say so in STATUS=) instead of systemd killing a start that never ends.
READY_AFTER = 60.0
# The members of the dynamic watchlists last ranked, in the state directory.
MEMBERS_FILE = "watchlists.json"
# The watchdog is fed only while the bar clock has run within this many seconds.
CLOCK_STALL = 5.0
# Ring buffers and rule states are saved this often (and once warmed up, and at shutdown);
# a snapshot older than SNAPSHOT_MAX_AGE is not restored (the outbox forgets sent alerts
# after 7 days too). Rule states also go to the outbox with each alert.
SNAPSHOT_EVERY = 60.0
SNAPSHOT_MAX_AGE = 7 * 86_400.0
# A restored series is continued by fetching the bars since its last one, up to this many
# (one REST call of klines, Binance's cap, less the forming bar and one to overlap).
CATCH_UP_BARS = 1000 - 2
TOO_LATE = "closed while moodring was down, older than notify.late_max_age: not sent"


class Daemon(Component):
    """The running service: one engine, its feeds, the outbox and the dispatcher.

    ``async with Daemon(settings) as daemon:`` starts it (the HTTP endpoint, MQTT, delivery,
    snapshots, the digest, the feeds, the bar clock, in that order) and stops it in reverse
    order when the block ends; ``run()`` does so until SIGTERM or SIGINT, reloading on SIGHUP.
    Use it once, from one task. ``config_path`` is the file SIGHUP re-reads (None: the
    built-in default).
    """

    def __init__(
        self, settings: Settings, *, record: Path | None = None, config_path: Path | None = None
    ) -> None:
        self.config_path = config_path
        state = check_dir(settings.resolved_state_dir())
        self.state_dir = state
        # the members last ranked, until ranked anew: their snapshot states are restored
        self.settings = settings = _saved_members(settings, state / MEMBERS_FILE)
        with state_file(state / "outbox.sqlite", "outbox"):
            self.outbox = Outbox(state / "outbox.sqlite")
        # a silence of a watchlist's rule template mutes every rule expanded from it
        self.silences = Silences(
            state / "silences.json", lambda rule: self.settings.template_of(rule)
        )
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
        self.alerts = AlertIntake(self.dispatcher, self.silences)
        self.recorder = BarRecorder(record) if record is not None else None
        self.snapshots = Snapshotter(
            lambda: self.engine, state / "snapshot.npz", every=SNAPSHOT_EVERY
        )
        saved = load(self.snapshots.path, settings, max_age_s=SNAPSHOT_MAX_AGE)
        fresh = _fresh(saved) if saved else None
        self.engine, _ = self._engine(settings, fresh, forming_bars=False)
        self.sink = PipelineSink(
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
        self.stopping = asyncio.Event()
        self._reload_wanted = asyncio.Event()
        # the parts each start and stop as one, and are swapped as one by a reload
        self.parts, others = self._feed_parts(settings)
        self.feeds = Group([*self.parts, *others], name="feeds")
        self.delivery = Group([self.dispatcher], name="delivery")
        self.publishing = Group([self.mqtt] if self.mqtt else [], name="mqtt")
        self.digest = Group(self._digest(settings), name="digest")
        self.clock = BarClock(lambda: self.engine, lambda: self.parts, self._on_round)
        self.http = HttpEndpoint(settings.http, self.telemetry)
        self.ranker = Ranker(self._dynamic, self._on_ranked)
        self.ranker.members.update({n: settings.members(n) for n in self._dynamic()})
        self._applying = asyncio.Lock()  # a reload and a re-rank apply one after the other
        self._stack: contextlib.AsyncExitStack | None = None
        self._status = ""

    def _dispatcher(self, settings: Settings) -> Dispatcher:
        def counted(target: str, ok: bool) -> None:
            (self.telemetry.alert_sent if ok else self.telemetry.alert_failed)(target)

        return Dispatcher(
            self.outbox,
            settings.notify,
            sender=WorkerSender(settings.notify),
            render_chart=_render_chart,
            chart_dir=self.state_dir / "charts",
            on_result=counted,
            on_dead=self.telemetry.alert_dead,
            drain=DRAIN_SECONDS,
        )

    def _engine(
        self, settings: Settings, state: EngineState | None = None, *, forming_bars: bool = True
    ) -> tuple[Pipeline, bool]:
        """Build an engine for ``settings`` (holding ``state``), wired to the outputs.

        Also return whether some series has no bars from ``state`` (it needs a warm-up).
        """
        engine = Pipeline(settings)
        if settings.digest is not None:  # before the restore: its replay fills the history
            from moodring.digest.content import DIGEST_BARS, digest_columns

            engine.track(digest_columns(settings), DIGEST_BARS)
        cold = True
        if state is not None:
            # restored before the wiring: the replay reaches no output
            cold = bool(restore(engine, state, forming_bars=forming_bars).warm_up())
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

    def _feed_parts(self, settings: Settings) -> tuple[list[FeedPart], list[Component]]:
        """Build the parts streaming the feeds, and the others (the altseason feed)."""
        wiring = FeedWiring(self.sink, self._builders, self.telemetry.reconnect)
        others: list[Component] = []
        if settings.altseason is not None:  # hundreds of REST calls: READY does not wait
            others.append(_altseason(settings, self._on_external))
        return build_parts(settings.feeds, wiring), others

    def _digest(self, settings: Settings) -> list[Component]:
        if settings.digest is None:
            return []
        return [DigestSchedule(settings.digest, self.send_digest)]

    def _builders(self, feed: str) -> list[BarBuilder]:
        """Return the current engine's builders of a feed (the engine changes on reload)."""
        return self.engine.builders(feed)

    def _on_jump(self, jump: Jump) -> None:
        log.warning("%s", jump.describe())
        self.telemetry.suspect_bar(jump.feed)

    def _on_alert(self, engine: Pipeline, alert: Alert) -> None:
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
                self.mqtt.metric(column, value, time_ms, closed=True)

    def _on_bar(self, feed: str, timeframe: str, bar: Bar) -> None:
        if self.mqtt is not None:
            self.mqtt.bar(feed, timeframe, bar)

    def _on_state(self, feed: str, state: str, t_ms: int) -> None:
        if self.mqtt is not None:
            self.mqtt.feed_state(feed, state, t_ms)

    def _on_round(self, engine: Pipeline, now_ms: int) -> None:
        mqtt = self.mqtt
        if mqtt is None:
            return
        # values with the forming bars: the publisher throttles them
        for column, value in engine.peek_values().items():
            mqtt.metric(column, value, now_ms, closed=False)
        firing = []
        for rule in engine.rules.rules:  # the publisher sends only changes
            name, status, fires = rule.config.name, rule.status, rule.firing_at(now_ms)
            muted = status.muted_since is not None
            mqtt.rule_state(name, status.state, now_ms, firing=fires, muted=muted)
            if fires:
                firing.append(name)
        mqtt.firing_rules(firing, now_ms)

    def _announce(self, settings: Settings) -> None:
        """Tell MQTT the metrics, feeds and rules of ``settings``, and each feed's state."""
        if self.mqtt is None:
            return
        rules = [rule.name for rule in settings.rules]
        self.mqtt.announce(settings.metric_columns(), feeds=settings.feeds, rules=rules)
        now_ms = int(time.time() * 1000)
        for feed, state in self.feed_states().items():
            self.mqtt.feed_state(feed, state, now_ms)

    def send_digest(self, at: datetime) -> None:
        """Send the digest of the moment ``at``: outbox (apprise, its chart) and MQTT."""
        from moodring.digest.content import build_digest, digest_alert, digest_payload

        digest = build_digest(self.engine, self.settings, int(at.timestamp() * 1000))
        log.info("digest %s: %s", iso_time(digest.time), digest.title)
        self.alerts(digest_alert(digest))  # silences apply: `moodring silence digest`
        if self.mqtt is not None:
            self.mqtt.publish("digest", digest_payload(digest), retain=True, qos=1)

    def feed_states(self) -> dict[str, str]:
        """Return every configured feed's state (``ok`` until it reports otherwise)."""
        states = self.sink.states
        return {name: states.get(name, "ok") for name in self.settings.feeds}

    def problems(self) -> dict[str, str]:
        """Return what keeps the daemon from its job (outbox, snapshot, a refused feed), by part."""
        found = {}
        checks = (("outbox", self.alerts.problem()), ("snapshot", self.snapshots.problem()))
        for part, problem in checks:
            if problem is not None:
                found[part] = problem
        for feed_part in self.parts:
            problem = feed_part.problem()
            if problem is not None:
                found[feed_part.name] = problem
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
        """Return whether the loop runs, the bar clock ticks and every feed part runs."""
        if time.monotonic() - self.clock.beat > CLOCK_STALL:
            return False
        return all(part.running for part in self.parts)

    async def run(self) -> int:
        """Run until asked to stop; return the exit code."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, self.stop)
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(signal.SIGHUP, self._reload_wanted.set)
        code = 0
        try:
            async with self:
                await self._serve()
        except ExceptionGroup as failed:  # a task failed: its TaskGroup stopped the daemon
            for error in _leaves(failed):
                log.critical(
                    "stopped by an unexpected error: %s: %s",
                    type(error).__name__,
                    error,
                    exc_info=error,
                )
            code = EX_SOFTWARE
        log.info("stopped")
        return code

    async def _serve(self) -> None:
        """Wait until asked to stop, reloading the config each time SIGHUP asks."""
        while not self.stopping.is_set():
            await first_completed(self.stopping.wait(), self._reload_wanted.wait())
            if self._reload_wanted.is_set() and not self.stopping.is_set():
                self._reload_wanted.clear()
                await self.reload()

    def stop(self) -> None:
        """Ask the daemon to stop (signal handlers call this)."""
        self.stopping.set()

    async def _setup(self) -> None:
        """Start the parts in order; the ones a later part relies on first."""
        stack = self._stack = contextlib.AsyncExitStack()
        stack.callback(self._release)  # last: after every part has stopped
        http = self.http.config
        try:
            await stack.enter_async_context(self.http)
        except OSError as exc:
            raise ConfigError(
                f"http: cannot listen on {http.host}:{http.port}: {exc.strerror or exc} "
                "(set http.port, or http.enabled: false)"
            ) from None
        self._announce(self.settings)
        # MQTT says offline after the last alert went out; delivery drains once the alerts
        # held in memory are written; the snapshot is taken once the feeds have stopped
        await stack.enter_async_context(self.publishing)
        await stack.enter_async_context(self.delivery)
        await stack.enter_async_context(self.snapshots)
        await stack.enter_async_context(self.alerts)
        await stack.enter_async_context(self.digest)
        await stack.enter_async_context(self.feeds)
        # stops first: no bar is closed by the clock once the feeds are stopping
        await stack.enter_async_context(self.clock)
        await stack.enter_async_context(self.ranker)
        self.spawn(watch_loop_lag(self.telemetry), name="loop lag")
        self.spawn(watchdog_loop(self.notify, self.healthy), name="watchdog")
        self.spawn(self._ready(), name="ready")
        log.info(
            "moodring running: %d feed(s), %d rule(s)",
            len(self.settings.feeds),
            len(self.settings.rules),
        )

    async def _wind_down(self) -> None:
        log.info("stopping")
        self.notify.stopping()

    async def _teardown(self) -> None:
        stack, self._stack = self._stack, None
        if stack is not None:
            await stack.aclose()

    def _release(self) -> None:
        """Close what the daemon holds open once every part has stopped."""
        self.outbox.close()
        if self.recorder is not None:
            self.recorder.close()
        self.notify.close()

    async def reload(self) -> bool:
        """Re-read the config; apply it if valid, else keep running the old one.

        Call it from the task that runs the daemon (``run()`` does, on SIGHUP).
        """
        started = time.monotonic()
        self.notify.reloading()
        try:
            settings = _ranked_as_before(load_settings(self.config_path), self.settings)
        except ConfigError as exc:
            log.error("reload failed, still running the previous config:\n%s", exc)
            self.telemetry.reload(False)
            self.notify.ready(self._status_line())
            return False
        async with self._applying:
            await self._apply(settings)
        self.telemetry.reload(True)
        self.notify.ready(self._status_line())
        log.info(
            "reloaded %s in %.0f ms",
            self.config_path or "the built-in config",
            (time.monotonic() - started) * 1000,
        )
        return True

    def _dynamic(self) -> dict[str, WatchlistConfig]:
        """Return the dynamic watchlists some template is declared for (the ones to rank)."""
        settings = self.settings
        used = {
            watchlist
            for section in ("feeds", "series", "metrics", "rules")
            for watchlist in settings.expansion.templates(section).values()
        }
        return {n: w for n, w in settings.watchlists.items() if w.dynamic and n in used}

    async def _on_ranked(self, name: str, members: Members) -> None:
        """Apply a dynamic watchlist's new members as a reload applies a changed config."""
        async with self._applying:
            if self.settings.watchlists.get(name) != self.ranker.ranked_by.get(name):
                return  # a reload changed the watchlist meanwhile: it is ranked anew
            ranked = {n: self.settings.members(n) for n in self._dynamic()}
            try:
                settings = with_members(self.settings, {**ranked, name: members})
            except ConfigError as exc:
                log.error("watchlist %s: its new members are not applied:\n%s", name, exc)
                return
            await self._apply(settings)
            _save_members(self.state_dir / MEMBERS_FILE, settings, self._dynamic())
        self.notify.ready(self._status_line())

    async def _apply(self, settings: Settings) -> None:
        """Run ``settings`` from now on: swap only the parts they change."""
        gc.unfreeze()  # what the swap drops (an old engine, its cycles) can be collected
        try:
            await self._swap(settings)
        finally:
            _settle_heap()

    async def _swap(self, settings: Settings) -> None:
        old, self.settings = self.settings, settings
        self.sink.catch_up = None  # a restart of the feeds now warms up quietly, as before
        for alert in _members_gone(self.engine, old, settings):
            self._on_alert(self.engine, alert)
        restart = (settings.feeds, settings.altseason) != (old.feeds, old.altseason)
        if _engine_part(settings) != _engine_part(old):
            # a new engine holding the old one's bars, rule states and external values
            engine, cold = self._engine(settings, capture(self.engine))
            self.engine = self.sink.engine = engine
            # series the old bars do not cover (a new one, a longer window) need a warm-up
            restart = restart or cold
            for part in self.parts if not restart else ():
                part.resync()  # bars held in the old engine's builders: repair them anew
        if restart:
            parts, others = self._feed_parts(settings)
            self.parts = []  # while they are swapped, the clock and the watchdog skip them
            await self.feeds.replace([*parts, *others])
            self.parts = parts
        if settings.notify != old.notify:
            self.dispatcher.drain_on_exit = 0.0  # the new one takes the queue over at once
            self.dispatcher = self.alerts.dispatcher = self._dispatcher(settings)
            await self.delivery.replace([self.dispatcher])
        if settings.mqtt != old.mqtt:
            self.mqtt = _publisher(settings)
            self._announce(settings)
            await self.publishing.replace([self.mqtt] if self.mqtt else [])
        elif _engine_part(settings) != _engine_part(old):
            self._announce(settings)  # entities added or gone
        if settings.digest != old.digest:
            await self.digest.replace(self._digest(settings))
        if settings.http != old.http:
            log.warning("http: changes take effect at the next restart")

    async def _ready(self) -> None:
        """Say READY=1 once every feed is warmed up (or after READY_AFTER); keep STATUS= fresh."""
        deadline = time.monotonic() + READY_AFTER
        # the members of a dynamic watchlist ranked at start are warmed up before READY
        while (warming(self.parts) or self.ranker.waiting()) and time.monotonic() < deadline:
            self._set_status()
            await asyncio.sleep(0.2)
        self.telemetry.mark_ready()
        self.notify.ready(self._status_line())
        if waiting := [*warming(self.parts), *(f"watchlist {n}" for n in self.ranker.waiting())]:
            log.warning("ready before warm-up finished; still waiting for %s", ", ".join(waiting))
        else:
            log.info("warmed up: ready")
        _settle_heap()
        await self.snapshots.save_soon()  # a crash from now on resumes from here
        while True:
            await asyncio.sleep(1.0)
            self._set_status()

    def _status_line(self) -> str:
        by_state: dict[str, list[str]] = {}
        for name, state in self.feed_states().items():
            by_state.setdefault(state, []).append(name)
        parts = [f"{state}: {', '.join(names)}" for state, names in sorted(by_state.items())]
        if waiting := warming(self.parts):
            parts.insert(0, f"warming up {', '.join(sorted(waiting))}")
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

    def _on_external(self, column: str, t_ms: int, value: float, closed: bool) -> None:
        """Pass a value computed outside the bars (the altseason index) to engine and MQTT."""
        self.engine.set_external(column, t_ms, value, closed=closed)
        if self.mqtt is not None:
            self.mqtt.metric(column, value, t_ms, closed=closed)


def _settle_heap() -> None:
    """Collect once, then keep the objects alive now out of the collector's passes.

    At hundreds of members the daemon holds some 300,000 objects: a full collection of
    them takes about 0.1 s, and comes at any allocation, often amid the burst of bar closes
    at a minute's turn. Frozen (``gc.freeze``) they are still freed when unreferenced; only
    cycles among them wait for the next ``gc.unfreeze`` (a reload's).
    """
    gc.collect()
    gc.freeze()


def _members_gone(engine: Pipeline, old: Settings, new: Settings) -> list[Alert]:
    """Return a resolved alert for each firing rule of a member no longer in its watchlist."""
    kept = {rule.name for rule in new.rules}
    now = int(time.time() * 1000)
    gone = []
    for rule in engine.rules.rules:
        config, status = rule.config, rule.status
        origin = old.origin("rules", config.name)
        if origin is None or config.name in kept or rule.edge is not None:
            continue
        if status.state == "firing" and status.told == "firing":
            watchlist = old.watchlists[origin.watchlist]
            where = (
                described(origin.watchlist, watchlist)
                if watchlist.dynamic
                else f"watchlist {origin.watchlist}"
            )
            text = f"{origin.member.base} left {where}"
            gone.append(
                Alert(
                    config.name,
                    "resolved",
                    now - now % rule.timeframe.ms,
                    rule.columns[0],
                    math.nan,
                    config.severity,
                    text,
                    f"{text}: {config.name} is no longer watched.",
                )
            )
    return gone


def _saved_members(settings: Settings, path: Path) -> Settings:
    """Return ``settings`` with the saved members of each dynamic watchlist ranked alike."""
    try:
        saved = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return settings
    except (OSError, ValueError) as exc:
        log.warning("%s unreadable (%s): watchlists are ranked anew", path, exc)
        return settings
    members = {}
    try:
        for name, watchlist in settings.watchlists.items():
            entry = saved.get(name) if isinstance(saved, dict) else None
            if not watchlist.dynamic or not isinstance(entry, dict):
                continue
            if entry.get("config") == watchlist.model_dump(mode="json"):  # ranked alike
                members[name] = tuple(Member.of(str(s)) for s in entry.get("members", ()))
        return with_members(settings, members) if members else settings
    except (ConfigError, ValueError, TypeError) as exc:
        log.warning("%s not used (%s): watchlists are ranked anew", path, exc)
        return settings


def _save_members(path: Path, settings: Settings, dynamic: dict[str, WatchlistConfig]) -> None:
    """Save the members of the dynamic watchlists (with the config they were ranked by)."""
    saved = {
        name: {
            "config": watchlist.model_dump(mode="json"),
            "members": [m.symbol for m in settings.members(name)],
        }
        for name, watchlist in dynamic.items()
    }
    try:
        temporary = path.with_suffix(".tmp")
        temporary.write_text(json.dumps(saved, indent=1), encoding="utf-8")
        temporary.replace(path)
    except OSError as exc:
        log.warning("cannot save the watchlists' members to %s: %s", path, exc)


def _ranked_as_before(settings: Settings, old: Settings) -> Settings:
    """Return freshly read ``settings`` with the members of each unchanged dynamic watchlist.

    A dynamic watchlist whose config changed has no members until it is ranked anew.
    """
    kept = {
        name: old.members(name)
        for name, watchlist in settings.watchlists.items()
        if watchlist.dynamic and old.watchlists.get(name) == watchlist and old.members(name)
    }
    return with_members(settings, kept) if kept else settings


def _publisher(settings: Settings) -> MqttPublisher | None:
    """Return an MQTT publisher if a broker is configured (aiomqtt is imported only then)."""
    if not settings.mqtt.host:
        return None
    from moodring.delivery.mqtt import MqttPublisher

    return MqttPublisher(settings.mqtt)


async def _render_chart(chart: Mapping[str, Any]) -> bytes | None:
    """Render an alert's chart (the chart modules are imported only by a first chart)."""
    from moodring.charts.render import render_with_budget

    return await render_with_budget(chart)


def _altseason(
    settings: Settings, on_value: Callable[[str, int, float, bool], None]
) -> AltseasonFeed:
    """Return the altseason feed of ``settings`` (ccxt.pro is imported only then)."""
    from moodring.feeds.altseason_feed import AltseasonFeed

    assert settings.altseason is not None
    return AltseasonFeed(settings.altseason, on_value)


def _leaves(group: BaseExceptionGroup[Exception]) -> list[Exception]:
    """Return the errors of a (nested) exception group."""
    found: list[Exception] = []
    for error in group.exceptions:
        found.extend(_leaves(error) if isinstance(error, BaseExceptionGroup) else [error])
    return found


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


def _catch_up(engine: Pipeline, settings: Settings) -> CatchUp:
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
