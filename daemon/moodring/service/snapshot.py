"""Engine state across restarts and reloads: capture, atomic save, load, restore.

A snapshot holds, per (feed, timeframe), the latest closed bars the engine's builders
delivered (a journal as long as the feed's warm-up fetches, at least the ring's capacity:
``journal_bars``) and the forming bar, and per rule its ``RuleStatus``. Restoring replays
the closed bars into a fresh engine, quietly and as one moment, which rebuilds rings,
ratio series, joins, metrics, chart and rule histories exactly as the original built
them, as long as the journal holds every bar they have seen (indicators are
deterministic in their input bars); then the forming bars and the rule statuses are put
back. Replaying the journal rather than the rings matters: recursive averages (EMA) and
windows of joins between a 24/7 and a session market depend on more bars than a ring
keeps. Once an engine outlives its journal the restored values are those of a warm-up
on the journal's bars, the bars a restart's warm-up fetches: a longer journal would buy
nothing a restart has not, and would cost a watchlist of hundreds of 1m series tens of
megabytes (2048 bars of six columns are 98 KB a series).

Rule statuses are taken as saved (timers, pending counts, ``told``, ``muted_since``)
when the rule's name still exists with the same metric output and operator kind (edge
or level), or for a composite the same items' metrics in the same all/any shape: a
changed threshold keeps them, the next bar judges the new one. Otherwise
the rule keeps what the replay gave it, as after a warm-up. Feed health is not restored:
feeds prove staleness afresh. A (feed, timeframe) is restored only when its feed is the
same (symbol, source, exchange, market, URLs) and its bars cover what the engine keeps
now; else it is left empty and the report says to warm it up from REST, as at a start.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import heapq
import io
import json
import logging
import os
import tempfile
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from moodring.delivery.outbox import SavedRuleState
from moodring.engine import External
from moodring.feeds.source import warm_up_bars
from moodring.lifecycle import Component
from moodring.market.bar import Bar
from moodring.market.builder import BarBuilder
from moodring.market.ring import BarRing
from moodring.pipeline import Pipeline
from moodring.rules.book import Rule, RuleStatus
from moodring.settings import FeedConfig, Settings
from moodring.times import format_duration, iso_time

log = logging.getLogger("moodring.snapshot")

SNAPSHOT_VERSION = 1
# Closed bars kept per (feed, timeframe) of a feed whose warm-up fetches a chart's range
# (equity feeds) rather than a ring-full (exchange feeds: ``journal_bars``).
KEEP_BARS = 2048
_COLUMNS = ("open", "high", "low", "close", "volume")
_STATES = ("inactive", "pending", "firing")
_TOLD = ("firing", "resolved")
_STATUS_FIELDS = tuple(f.name for f in dataclasses.fields(RuleStatus))

# Bars a journal has room for at first; it doubles as bars come, up to its capacity.
JOURNAL_START = 64


class _Column:
    """One column of a journal: a circular buffer, stored once, grown as bars come."""

    __slots__ = ("_buf", "_capacity", "_next", "_size")

    def __init__(self, capacity: int, dtype: type) -> None:
        self._capacity = capacity
        self._buf: np.ndarray = np.zeros(min(capacity, JOURNAL_START), dtype=dtype)
        self._next = 0
        self._size = 0

    def push(self, value: float) -> None:
        """Append a value, evicting the oldest once the capacity is reached."""
        buf = self._buf
        if self._size == len(buf) < self._capacity:  # full, never wrapped: grow
            self._next = len(buf)
            more = np.zeros(min(len(buf), self._capacity - len(buf)), dtype=buf.dtype)
            buf = self._buf = np.concatenate([buf, more])
        buf[self._next] = value
        self._next = (self._next + 1) % len(buf)
        self._size = min(self._size + 1, len(buf))

    def window(self) -> np.ndarray:
        """Return the values, oldest first."""
        buf, size = self._buf, self._size
        if size < len(buf):
            return buf[:size]
        return np.concatenate([buf[self._next :], buf[: self._next]])


class _Journal:
    """The closed bars a builder delivered, up to ``capacity``, as ``BarRing``-like columns.

    Unlike a ring it is read only when a snapshot is taken, so it stores each value once
    and grows with the bars: a watchlist of hundreds of series pays for what it has seen.
    """

    __slots__ = ("close", "high", "low", "open", "time", "volume")

    def __init__(self, capacity: int) -> None:
        self.time = _Column(capacity, np.int64)
        self.open = _Column(capacity, np.float64)
        self.high = _Column(capacity, np.float64)
        self.low = _Column(capacity, np.float64)
        self.close = _Column(capacity, np.float64)
        self.volume = _Column(capacity, np.float64)

    def push(self, bar: Bar) -> None:
        """Append a closed bar."""
        self.time.push(bar.time)
        self.open.push(bar.open)
        self.high.push(bar.high)
        self.low.push(bar.low)
        self.close.push(bar.close)
        self.volume.push(bar.volume)


_journals: weakref.WeakKeyDictionary[Pipeline, dict[int, _Journal]] = weakref.WeakKeyDictionary()
# an engine's settings' fingerprint and feed identities
_hashes: weakref.WeakKeyDictionary[Pipeline, tuple[str, dict[str, str]]] = (
    weakref.WeakKeyDictionary()
)


@dataclass(frozen=True, slots=True, eq=False)
class SeriesState:
    """One feed's closed bars at one timeframe (oldest first) and its forming bar."""

    feed: str
    timeframe: str
    identity: str
    kept: int
    time: np.ndarray
    ohlcv: np.ndarray
    forming: dict[str, Any] | None


@dataclass(frozen=True, slots=True)
class RuleState:
    """A rule's status and what it judged: its metric output, operator kind and trigger.

    A composite's metric is its shape, such as ``all(eth_rut_corr,eth_mfi)``.
    """

    metric: str
    kind: Literal["edge", "level"]
    on: Literal["close", "tick"]
    status: RuleStatus


@dataclass(frozen=True, slots=True, eq=False)
class EngineState:
    """Everything a restore needs: bars, rule statuses and external (altseason) values."""

    taken_ms: int
    fingerprint: str
    series: tuple[SeriesState, ...]
    rules: dict[str, RuleState]
    version: int = SNAPSHOT_VERSION
    externals: dict[str, External] = dataclasses.field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class SeriesRestore:
    """What a restore did for one (feed, timeframe) of the engine."""

    feed: str
    timeframe: str
    restored: int
    needed: int
    last_closed: int | None
    forming: bool
    reason: str = ""

    @property
    def warm_up(self) -> bool:
        """Return whether nothing was restored, so the feed must warm this up from REST."""
        return self.restored == 0


@dataclass(frozen=True, slots=True)
class RestoreReport:
    """Per (feed, timeframe) what was restored, and per rule whether its status was."""

    series: tuple[SeriesRestore, ...]
    rules: dict[str, str]

    def warm_up(self) -> list[tuple[str, str]]:
        """Return the (feed, timeframe) pairs left empty: warm them up as at a fresh start."""
        return [(s.feed, s.timeframe) for s in self.series if s.warm_up]

    def last_closed(self, feed: str, timeframe: str) -> int | None:
        """Return the open time of a series' last restored closed bar (gap-fill after it)."""
        for s in self.series:
            if (s.feed, s.timeframe) == (feed, timeframe):
                return s.last_closed
        return None


def feed_identity(feed: FeedConfig) -> str:
    """Return a hash of what makes a feed's bars the same bars (not its health settings)."""
    # the hash of when every source had an exchange (binance unless set): snapshots match
    keys = ("symbol", "source", "exchange", "market", "ws_url", "rest_url")
    return _digest({key: getattr(feed, key, "binance") for key in keys})


def fingerprint(settings: Settings) -> str:
    """Return a hash of the feeds and timeframes a snapshot of this config depends on."""
    return _digest(
        {
            "feeds": {name: feed_identity(feed) for name, feed in settings.feeds.items()},
            "series": sorted(_series_keys(settings)),
        }
    )


def journal_bars(feed: FeedConfig, builder: BarBuilder) -> int:
    """Return the closed bars to journal for a builder: what the feed's warm-up fetches.

    An exchange's REST warm-up fetches about a ring-full of candles; a source that does not
    say (an equity chart's range of its choosing) gets up to ``KEEP_BARS``.
    """
    capacity = builder.bars.time.capacity
    fetched = warm_up_bars(feed, capacity)
    return max(capacity, KEEP_BARS if fetched is None else fetched)


def attach(engine: Pipeline, *, keep_bars: int | None = None) -> None:
    """Start journalling the engine's closed bars for snapshots (call before any bar).

    ``keep_bars`` replaces ``journal_bars`` (at least the ring's capacity).
    """
    if engine in _journals:
        return
    journal: dict[int, _Journal] = {}
    for feed, builder in _feed_builders(engine):
        if keep_bars is None:
            kept = journal_bars(engine.settings.feeds[feed], builder)
        else:
            kept = max(keep_bars, builder.bars.time.capacity)
        ring = _Journal(kept)
        for bar in _bars_of(builder.bars):
            ring.push(bar)
        builder.subscribe(ring.push)
        journal[id(builder)] = ring
    _journals[engine] = journal


def capture(engine: Pipeline) -> EngineState:
    """Return the engine's state (copies: safe to save from another thread)."""
    journal = _journals.get(engine, {})
    settings = engine.settings
    # taken on the event loop every minute: hashed once per engine (its settings are fixed)
    hashed = _hashes.get(engine)
    if hashed is None:
        identities = {name: feed_identity(feed) for name, feed in settings.feeds.items()}
        hashed = _hashes[engine] = (fingerprint(settings), identities)
    fingerprinted, identities = hashed
    series = []
    for feed, builder in _feed_builders(engine):
        ring: _Journal | BarRing = journal.get(id(builder), builder.bars)
        ohlcv = np.column_stack([getattr(ring, c).window() for c in _COLUMNS])
        series.append(
            SeriesState(
                feed,
                builder.timeframe.name,
                identities[feed],
                builder.bars.time.capacity,
                ring.time.window().copy(),
                ohlcv,
                # a forming bar after held (unsettled) bars would hide the gap from a gap-fill
                None if builder.holding else builder.forming_state(),
            )
        )
    rules = {rule.config.name: rule_state(rule) for rule in engine.rules.rules}
    return EngineState(
        int(time.time() * 1000),
        fingerprinted,
        tuple(series),
        rules,
        externals=engine.externals(),
    )


def restore(engine: Pipeline, state: EngineState, *, forming_bars: bool = True) -> RestoreReport:
    """Put ``state`` into a fresh engine quietly (no forming bars at a start); report gaps."""
    if any(b.time >= 0 or b.last_time >= 0 for b in _builders(engine)):
        raise ValueError("restore needs a fresh engine")
    attach(engine)
    saved = {(s.feed, s.timeframe): s for s in state.series}
    reports = []
    replay: list[tuple[BarBuilder, SeriesState]] = []
    resume: list[tuple[BarBuilder, dict[str, Any]]] = []
    for feed, builder in _feed_builders(engine):
        tf = builder.timeframe
        needed = builder.bars.time.capacity
        old = saved.get((feed, tf.name))
        reason = _unusable(old, feed_identity(engine.settings.feeds[feed]), needed)
        if old is None or reason:
            reports.append(SeriesRestore(feed, tf.name, 0, needed, None, False, reason))
            continue
        replay.append((builder, old))
        last = int(old.time[-1])
        bar = old.forming if forming_bars else None
        if bar is not None and bar["time"] > last:
            resume.append((builder, bar))
        resumed = bool(resume) and resume[-1][0] is builder
        reports.append(SeriesRestore(feed, tf.name, len(old.time), needed, last, resumed))
    with engine.rules.quiet(), engine.deferred():
        for builder, t, row in _merged(replay):
            builder.add_candle(t, *row, closed=True, length_ms=builder.timeframe.ms)
    for builder, bar in resume:
        builder.resume_forming(bar)
    for node in engine.metrics.values():
        node.dirty = True
    rules = _restore_rules(engine, state.rules)
    engine.adopt_externals(state.externals)
    _log_restore(state, reports, rules)
    return RestoreReport(tuple(reports), rules)


def rule_state(rule: Rule) -> RuleState:
    """Return a copy of a rule's status with what it judges."""
    kind: Literal["edge", "level"] = "edge" if rule.edge is not None else "level"
    return RuleState(rule.config.subject, kind, rule.config.on, dataclasses.replace(rule.status))


def rule_state_json(rule: Rule) -> str:
    """Return a rule's state as the JSON text the outbox keeps with its alerts."""
    kind: Literal["edge", "level"] = "edge" if rule.edge is not None else "level"
    state = RuleState(rule.config.subject, kind, rule.config.on, rule.status)  # read, not kept
    return json.dumps(_rule_data(state), separators=(",", ":"))


def resume_rules(engine: Pipeline, saved: Iterable[SavedRuleState], taken_ms: int) -> list[str]:
    """Resume rules from states the outbox saved after the snapshot taken at ``taken_ms``.

    Such a state is the newer one: the rule continues from it and skips the closed bars
    up to the bar it was saved at. Return the names of the rules resumed.
    """
    resumed = []
    for row in saved:
        rule = engine.rules.rule(row.rule)
        if rule is None or row.saved * 1000 < taken_ms:
            continue
        try:
            state = _rule(json.loads(row.state))
        except (ValueError, KeyError, TypeError) as exc:
            log.warning("rule %s: saved state unreadable (%s); using the snapshot's", row.rule, exc)
            continue
        if _changed(rule, state):
            continue
        engine.rules.resume(row.rule, state.status, row.at)
        if state.on != rule.config.on:
            rule.status.tick_bar = None
        resumed.append(row.rule)
    if resumed:
        names = ", ".join(resumed)
        log.info("rule state(s) newer than the snapshot resumed from the outbox: %s", names)
    return resumed


def save(path: Path, state: EngineState) -> None:
    """Write ``state`` to ``path`` atomically: a failure leaves the previous file whole."""
    meta = {
        "version": state.version,
        "taken_ms": state.taken_ms,
        "fingerprint": state.fingerprint,
        "series": [
            {
                "feed": s.feed,
                "timeframe": s.timeframe,
                "identity": s.identity,
                "kept": s.kept,
                "count": len(s.time),
                "forming": s.forming,
            }
            for s in state.series
        ],
        "rules": {name: _rule_data(r) for name, r in state.rules.items()},
        "published": state.externals,
    }
    times = [s.time for s in state.series]
    values = [s.ohlcv for s in state.series]
    arrays = {
        "meta": np.frombuffer(json.dumps(meta).encode(), np.uint8),
        "time": np.concatenate(times) if times else np.empty(0, np.int64),
        "ohlcv": np.concatenate(values) if values else np.empty((0, len(_COLUMNS))),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as out:
            np.savez(out, allow_pickle=False, **arrays)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temp)
        raise
    _fsync_dir(path.parent)


def load(
    path: Path, settings: Settings, *, max_age_s: float, now_ms: int | None = None
) -> EngineState | None:
    """Return the snapshot at ``path`` if usable for ``settings``, else None (logged why)."""
    if not path.exists():
        log.info("no snapshot at %s: starting with a warm-up", path)
        return None
    try:
        state = _read(path.read_bytes())
    except _UnknownFormatError as exc:
        log.info("snapshot %s not used: %s", path, exc)
        return None
    except Exception as exc:  # whatever is wrong with the file, a warm-up replaces it
        log.warning(
            "snapshot %s is unreadable (%s: %s): starting with a warm-up",
            path,
            type(exc).__name__,
            exc,
        )
        return None
    now = int(time.time() * 1000) if now_ms is None else now_ms
    age = (now - state.taken_ms) / 1000
    if age > max_age_s:
        log.info(
            "snapshot %s is %s old (limit %s): starting with a warm-up",
            path,
            format_duration(age),
            format_duration(max_age_s),
        )
        return None
    if state.fingerprint == fingerprint(settings):
        return state
    identities = {name: feed_identity(feed) for name, feed in settings.feeds.items()}
    keys = _series_keys(settings)
    same = [
        s
        for s in state.series
        if (s.feed, s.timeframe) in keys and identities.get(s.feed) == s.identity
    ]
    if not same:
        log.info("snapshot %s is of other feeds: starting with a warm-up", path)
        return None
    log.info(
        "config changed since snapshot %s: %d of its %d series still match",
        path,
        len(same),
        len(state.series),
    )
    return state


class Snapshotter(Component):
    """Saves the current engine's state to one file, periodically and on demand.

    ``async with snapshotter:`` saves every ``every`` seconds; leaving the block saves once
    more. A write that fails (a full disk, an I/O error) is logged when writes start failing
    and when they work again; meanwhile ``problem()`` says why and the daemon runs on.
    """

    def __init__(
        self, engine_of: Callable[[], Pipeline], path: Path, *, every: float = 60.0
    ) -> None:
        self.engine_of = engine_of
        self.path = path
        self.every = every
        self._lock = threading.Lock()
        self._taken = 0
        self._written = 0
        self._failure: str | None = None
        self._failures = 0

    def problem(self) -> str | None:
        """Return why the last write failed (None when it worked)."""
        if self._failure is None:
            return None
        return f"snapshot {self.path} cannot be written ({self._failure})"

    def save_now(self) -> bool:
        """Capture and write the state now (at shutdown); return whether it was written."""
        return self._write(*self._capture())

    async def save_soon(self) -> bool:
        """Capture the state now and write it in a thread; return whether it was written."""
        return await asyncio.to_thread(self._write, *self._capture())

    async def _setup(self) -> None:
        self.spawn(self.run(self.every), name="snapshots")

    async def _teardown(self) -> None:
        self.save_now()

    async def run(self, interval_s: float) -> None:
        """Save every ``interval_s`` until cancelled: capture on the loop, write in a thread."""
        while True:
            await asyncio.sleep(interval_s)
            await self.save_soon()

    def _capture(self) -> tuple[int, EngineState]:
        self._taken += 1
        return self._taken, capture(self.engine_of())

    def _write(self, taken: int, state: EngineState) -> bool:
        # a periodic write still running in its thread must not land after a newer one
        with self._lock:
            if taken <= self._written:
                return False
            started = time.perf_counter()
            try:
                save(self.path, state)
            except (OSError, ValueError) as exc:
                self._failed(str(exc) or type(exc).__name__)
                return False
            self._written = taken
            if self._failure is not None:
                failures = self._failures
                log.warning(
                    "snapshot %s written again after %d failed write(s)", self.path, failures
                )
                self._failure = None
        log.debug(
            "snapshot %s written in %.1f ms", self.path, (time.perf_counter() - started) * 1000
        )
        return True

    def _failed(self, reason: str) -> None:
        if self._failure is None:
            self._failures = 0
            log.error("snapshot %s not written: %s; retrying at the next one", self.path, reason)
        elif reason != self._failure:
            log.error("snapshot %s still not written, now: %s", self.path, reason)
        self._failure = reason
        self._failures += 1


class _UnknownFormatError(ValueError):
    """A well-formed snapshot this version cannot use."""


def _digest(data: object) -> str:
    text = json.dumps(data, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _series_keys(settings: Settings) -> set[tuple[str, str]]:
    """Return the (feed, timeframe) pairs an engine of ``settings`` builds bars for."""
    return {
        (feed, metric.timeframe)
        for metric in settings.metrics.values()
        for feed in settings.feeds_of(metric.inputs())
    }


def _feed_builders(engine: Pipeline) -> Iterator[tuple[str, BarBuilder]]:
    for feed in engine.settings.feeds:
        for builder in engine.builders(feed):
            yield feed, builder


def _builders(engine: Pipeline) -> Iterator[BarBuilder]:
    return (builder for _, builder in _feed_builders(engine))


def _bars_of(ring: BarRing) -> Iterator[Bar]:
    columns = [ring.time.window().tolist()] + [getattr(ring, c).window().tolist() for c in _COLUMNS]
    return (Bar(*row) for row in zip(*columns, strict=True))


def _unusable(old: SeriesState | None, identity: str, needed: int) -> str:
    """Return why a saved series cannot be restored ("" when it can)."""
    if old is None:
        return "not in the snapshot"
    if old.identity != identity:
        return "the feed changed"
    count = len(old.time)
    # an engine that kept as many already had all a warm-up gets: the history is that short
    if count == 0 or (count < needed and old.kept < needed):
        return f"{count} of the {needed} bars needed"
    return ""


def _merged(replay: list[tuple[BarBuilder, SeriesState]]) -> Iterator[tuple[BarBuilder, int, list]]:
    """Yield every saved closed bar in time order across series, series in config order."""

    def rows(rank: int, builder: BarBuilder, s: SeriesState) -> Iterator[tuple]:
        for t, row in zip(s.time.tolist(), s.ohlcv.tolist(), strict=True):
            yield t, rank, builder, row

    streams = [rows(rank, builder, s) for rank, (builder, s) in enumerate(replay)]
    for t, _, builder, row in heapq.merge(*streams, key=lambda item: item[:2]):
        yield builder, t, row


def _changed(rule: Rule, old: RuleState) -> str:
    """Return why a saved state no longer fits the rule ("" when it does)."""
    kind = "edge" if rule.edge is not None else "level"
    if old.metric != rule.config.subject:
        return f"its metric was {old.metric}"
    if old.kind != kind:
        return f"its operator was {old.kind}, now {kind}"
    return ""


def _rule_data(state: RuleState) -> dict[str, Any]:
    status = state.status  # its fields are plain values: no ``asdict`` (a deep copy) needed
    return {
        "metric": state.metric,
        "kind": state.kind,
        "on": state.on,
        "status": {name: getattr(status, name) for name in _STATUS_FIELDS},
    }


def _restore_rules(engine: Pipeline, saved: dict[str, RuleState]) -> dict[str, str]:
    """Put saved statuses back where the rule still judges the same thing; say which."""
    outcome = {}
    for rule in engine.rules.rules:
        name, config = rule.config.name, rule.config
        old = saved.get(name)
        if old is None:
            outcome[name] = "fresh: not in the snapshot"
        elif changed := _changed(rule, old):
            outcome[name] = f"fresh: {changed}"
        else:
            for field in dataclasses.fields(RuleStatus):
                setattr(rule.status, field.name, getattr(old.status, field.name))
            if old.on != config.on:
                rule.status.tick_bar = None
            outcome[name] = "restored"
    return outcome


def _log_restore(state: EngineState, reports: list[SeriesRestore], rules: dict[str, str]) -> None:
    restored = [r for r in reports if not r.warm_up]
    log.info(
        "restored the snapshot of %s: %d series (%d bars), %d of %d rule states",
        iso_time(state.taken_ms),
        len(restored),
        sum(r.restored for r in restored),
        sum(v == "restored" for v in rules.values()),
        len(rules),
    )
    for r in reports:
        if r.warm_up:
            log.info("%s %s: not restored (%s): warming up", r.feed, r.timeframe, r.reason)


def _read(data: bytes) -> EngineState:
    """Parse a saved snapshot, checking every field (raises on anything malformed)."""
    with np.load(io.BytesIO(data), allow_pickle=False) as npz:
        meta = json.loads(npz["meta"].tobytes().decode())
        times = npz["time"]
        ohlcv = npz["ohlcv"]
    if not isinstance(meta, dict):
        raise ValueError("metadata is not an object")
    if meta.get("version") != SNAPSHOT_VERSION:
        raise _UnknownFormatError(f"format version {meta.get('version')!r}, not {SNAPSHOT_VERSION}")
    if times.dtype != np.int64 or times.ndim != 1:
        raise ValueError("bar times are not int64")
    if ohlcv.dtype != np.float64 or ohlcv.shape != (len(times), len(_COLUMNS)):
        raise ValueError("bar values do not match the times")
    series = []
    start = 0
    for s in meta["series"]:
        count = _int(s["count"])
        end = start + count
        if count < 0 or end > len(times):
            raise ValueError("series counts exceed the bars")
        t = times[start:end]
        if count > 1 and not bool(np.all(t[1:] > t[:-1])):
            raise ValueError(f"{s['feed']} {s['timeframe']}: bar times out of order")
        series.append(
            SeriesState(
                _str(s["feed"]),
                _str(s["timeframe"]),
                _str(s["identity"]),
                _int(s["kept"]),
                t,
                ohlcv[start:end],
                _forming(s["forming"]),
            )
        )
        start = end
    if start != len(times):
        raise ValueError("bars left over after the last series")
    rules = {_str(name): _rule(r) for name, r in meta["rules"].items()}
    externals = {
        _str(column): (
            float(closed),
            float(latest),
            [(_int(t), None if v is None else float(v)) for t, v in history],
        )
        for column, (closed, latest, history) in meta.get("published", {}).items()
    }
    return EngineState(
        _int(meta["taken_ms"]),
        _str(meta["fingerprint"]),
        tuple(series),
        rules,
        externals=externals,
    )


def _rule(data: dict[str, Any]) -> RuleState:
    status = data["status"]
    if status["state"] not in _STATES or status["told"] not in _TOLD:
        raise ValueError("unknown rule state")
    times = ("fired_at", "notified_at", "tick_bar", "muted_since")
    parsed = RuleStatus(
        state=status["state"],
        pending=_int(status["pending"]),
        told=status["told"],
        **{key: None if status[key] is None else _int(status[key]) for key in times},
    )
    kind, on = data["kind"], data["on"]
    if kind not in ("edge", "level") or on not in ("close", "tick"):
        raise ValueError("unknown rule kind")
    return RuleState(_str(data["metric"]), kind, on, parsed)


def _forming(data: Any) -> dict[str, Any] | None:
    if data is None:
        return None
    bar, base = data["bar"], data["base"]
    if len(bar) != len(_COLUMNS) or (base is not None and len(base) != 4):
        raise ValueError("malformed forming bar")
    return {
        "time": _int(data["time"]),
        "sub_time": _int(data["sub_time"]),
        "bar": [float(x) for x in bar],
        "base": None if base is None else [float(x) for x in base],
        "trades": bool(data["trades"]),
    }


def _int(value: Any) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise ValueError(f"expected an integer, got {type(value).__name__}")
    return value


def _str(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError(f"expected a string, got {type(value).__name__}")
    return value


def _fsync_dir(directory: Path) -> None:
    """Make the rename durable (a no-op where directories cannot be opened)."""
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
