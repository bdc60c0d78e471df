"""A durable outbox on SQLite: alerts and their per-target deliveries survive restarts."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, closing, contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from moodring.rules.alert import Alert

KEEP_DELIVERED = 7 * 86400.0

_SCHEMA = """
CREATE TABLE IF NOT EXISTS alerts (
    id INTEGER PRIMARY KEY,
    key TEXT NOT NULL UNIQUE,
    body TEXT NOT NULL,
    added REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS deliveries (
    id INTEGER PRIMARY KEY,
    alert_id INTEGER NOT NULL REFERENCES alerts (id),
    target TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_try REAL NOT NULL DEFAULT 0,
    error TEXT,
    delivered REAL
);
CREATE INDEX IF NOT EXISTS deliveries_pending
    ON deliveries (target, id) WHERE delivered IS NULL;
"""
# Each rule's latest state change (an opaque JSON text here), written in the transaction
# that enqueues its alert: a crash cannot keep one without the other.
_RULE_STATES_SCHEMA = """
CREATE TABLE IF NOT EXISTS rule_states (
    rule TEXT PRIMARY KEY,
    at INTEGER NOT NULL,
    saved REAL NOT NULL,
    state TEXT NOT NULL
);
"""
# Columns added since the first schema, added to older files when they are opened.
_ADDED_COLUMNS = {
    "failing_since": "REAL",  # the first failed attempt since it was (re)queued
    "overtaken": "REAL",  # since when later rows may be sent before it
    "dead": "REAL",  # when it was given up: kept, never retried unless requeued
    "requeued": "REAL",  # when it was put back by hand: its age counts from here
}
_ADDED_INDEXES = """
CREATE INDEX IF NOT EXISTS deliveries_overtaken ON deliveries (target, id)
    WHERE delivered IS NULL AND dead IS NULL AND overtaken IS NOT NULL;
"""

_INSERT_ALERT = "INSERT OR IGNORE INTO alerts (key, body, added) VALUES (?, ?, ?)"
_INSERT_DELIVERY = "INSERT INTO deliveries (alert_id, target) VALUES (?, ?)"
# a replay of older bars after a restart must not overwrite a newer state
_SAVE_RULE_STATE = """
INSERT INTO rule_states (rule, at, saved, state) VALUES (?, ?, ?, ?)
ON CONFLICT (rule) DO UPDATE SET at = excluded.at, saved = excluded.saved, state = excluded.state
WHERE excluded.at >= rule_states.at
"""
_SELECT = """
SELECT d.id, d.target, a.body, d.attempts, d.next_try, d.error, a.added,
       coalesce(d.requeued, a.added), d.failing_since, d.overtaken, d.dead
FROM deliveries d JOIN alerts a ON a.id = d.alert_id
"""
_PENDING = _SELECT + "WHERE d.target = ? AND d.delivered IS NULL AND d.dead IS NULL "
_REQUEUE = (
    "UPDATE deliveries SET dead = NULL, attempts = 0, next_try = 0, failing_since = NULL, "
    "overtaken = NULL, requeued = ? WHERE delivered IS NULL"
)


@dataclass(frozen=True)
class Delivery:
    """One alert still to be delivered to one target."""

    id: int
    target: str
    alert: Alert
    attempts: int
    next_try: float
    error: str | None
    added: float = 0.0  # when the alert was first queued (epoch seconds)
    queued: float = 0.0  # when it was queued or requeued: what notify.max_age counts from
    failing_since: float | None = None
    overtaken: float | None = None
    dead: float | None = None

    @property
    def state(self) -> str:
        """Return ``pending`` or ``dead``."""
        return "pending" if self.dead is None else "dead"


@dataclass(frozen=True, slots=True)
class SavedRuleState:
    """A rule's state as of the bar at ``at`` (epoch ms), written at ``saved`` (epoch s)."""

    rule: str
    at: int
    saved: float
    state: str


class Outbox:
    """Alerts and their pending deliveries in one SQLite file, deduplicated by ``alert.key``.

    WAL with ``synchronous=NORMAL``: a killed process loses nothing that was committed,
    but a power loss (or OS crash) may drop the last few commits. Use from one thread.
    """

    def __init__(self, path: Path, *, keep: float = KEEP_DELIVERED) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # Autocommit mode: every transaction is an explicit BEGIN ... COMMIT.
        self._db = sqlite3.connect(self.path, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        # NORMAL in WAL mode: commits survive a killed process, not necessarily a power loss.
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("PRAGMA busy_timeout=5000")
        # No checkpoint (an fsync of the WAL) inside add() on the engine's path: the
        # dispatcher calls checkpoint() from a worker thread instead.
        self._db.execute("PRAGMA wal_autocheckpoint=0")
        self._db.executescript(_SCHEMA)
        self._migrate()
        self._db.executescript(_RULE_STATES_SCHEMA)
        self._prune(time.time() - keep)

    def _migrate(self) -> None:
        """Add the columns an older file lacks (under a write lock: two may open it at once)."""
        self._db.execute("BEGIN IMMEDIATE")
        try:
            have = {row[1] for row in self._db.execute("PRAGMA table_info(deliveries)")}
            for name, kind in _ADDED_COLUMNS.items():
                if name not in have:
                    self._db.execute(f"ALTER TABLE deliveries ADD COLUMN {name} {kind}")
            self._db.execute(_ADDED_INDEXES)
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def _prune(self, cutoff: float) -> None:
        """Forget delivered rows older than ``cutoff`` and alerts with nothing left."""
        with self._transaction():
            self._db.execute(
                "DELETE FROM deliveries WHERE delivered IS NOT NULL AND delivered < ?", (cutoff,)
            )
            self._db.execute("DELETE FROM deliveries WHERE dead < ?", (cutoff,))
            self._db.execute(
                "DELETE FROM alerts WHERE added < ? "
                "AND id NOT IN (SELECT alert_id FROM deliveries)",
                (cutoff,),
            )

    def _transaction(self) -> AbstractContextManager[None]:
        """Return a context manager for one BEGIN ... COMMIT (ROLLBACK on error)."""
        return _transaction(self._db)

    def add(self, alert: Alert, targets: Sequence[str], rule_state: str | None = None) -> bool:
        """Store an alert and one delivery per target; False if its key was ever added.

        ``rule_state`` (the alert's rule's state after the change) is saved in the same
        transaction, unless a state of a later bar is saved already.
        """
        db = self._db
        now = time.time()
        with self._transaction():
            cursor = db.execute(_INSERT_ALERT, (alert.key, alert.to_json(), now))
            added = cursor.rowcount > 0
            if added:
                alert_id = cursor.lastrowid
                db.executemany(_INSERT_DELIVERY, [(alert_id, target) for target in targets])
            if rule_state is not None:
                db.execute(_SAVE_RULE_STATE, (alert.rule, alert.time, now, rule_state))
        return added

    def save_rule_state(self, rule: str, at: int, state: str) -> None:
        """Save a rule's state as of the bar at ``at`` without an alert (one not sent)."""
        with self._transaction():
            self._db.execute(_SAVE_RULE_STATE, (rule, at, time.time(), state))

    def rule_states(self) -> list[SavedRuleState]:
        """Return every rule's latest saved state."""
        rows = self._db.execute("SELECT rule, at, saved, state FROM rule_states ORDER BY rule")
        return [SavedRuleState(*row) for row in rows]

    def pending(self, target: str, limit: int | None = None) -> list[Delivery]:
        """Return a target's rows to deliver (not dead), in enqueue order, at most ``limit``."""
        return self._rows(_PENDING + "ORDER BY d.id LIMIT ?", target, _limit(limit))

    def blocking(self, target: str, limit: int | None = None) -> list[Delivery]:
        """Return a target's pending rows that later rows may not pass, in enqueue order."""
        sql = _PENDING + "AND d.overtaken IS NULL ORDER BY d.id LIMIT ?"
        return self._rows(sql, target, _limit(limit))

    def overtaken(self, target: str) -> list[Delivery]:
        """Return a target's pending rows that later rows may pass, in enqueue order."""
        return self._rows(_PENDING + "AND d.overtaken IS NOT NULL ORDER BY d.id", target)

    def expired(self, target: str, queued_before: float) -> list[Delivery]:
        """Return a target's pending rows (re)queued before ``queued_before``."""
        sql = _PENDING + "AND coalesce(d.requeued, a.added) < ? ORDER BY d.id"
        return self._rows(sql, target, queued_before)

    def undelivered(self) -> list[Delivery]:
        """Return every pending and dead row, in enqueue order."""
        return self._rows(_SELECT + "WHERE d.delivered IS NULL ORDER BY d.id")

    def get(self, delivery_id: int) -> Delivery | None:
        """Return an undelivered row (pending or dead) by id."""
        rows = self._rows(_SELECT + "WHERE d.id = ? AND d.delivered IS NULL", delivery_id)
        return rows[0] if rows else None

    def _rows(self, sql: str, *params: object) -> list[Delivery]:
        return [
            Delivery(row[0], row[1], Alert.from_json(row[2]), *row[3:])
            for row in self._db.execute(sql, params)
        ]

    def mark_delivered(self, delivery_id: int) -> None:
        """Record a successful delivery (kept for dedup, pruned after ``keep``)."""
        self._db.execute(
            "UPDATE deliveries SET delivered = ?, attempts = attempts + 1, error = NULL "
            "WHERE id = ?",
            (time.time(), delivery_id),
        )

    def mark_failed(
        self, delivery_id: int, error: str, next_try: float, at: float | None = None
    ) -> None:
        """Record a failed attempt at ``at`` and when (epoch seconds) to try again."""
        self._db.execute(
            "UPDATE deliveries SET attempts = attempts + 1, error = ?, next_try = ?, "
            "failing_since = coalesce(failing_since, ?) WHERE id = ?",
            (error, next_try, time.time() if at is None else at, delivery_id),
        )

    def mark_overtaken(self, delivery_id: int, at: float) -> None:
        """Let later rows of its target be sent before this one from ``at`` on."""
        self._db.execute("UPDATE deliveries SET overtaken = ? WHERE id = ?", (at, delivery_id))

    def mark_dead(self, delivery_id: int, reason: str, at: float, attempted: bool = False) -> bool:
        """Give a pending row up at ``at`` for ``reason`` (one more attempt if ``attempted``)."""
        cursor = self._db.execute(
            "UPDATE deliveries SET dead = ?, error = ?, attempts = attempts + ? "
            "WHERE id = ? AND delivered IS NULL AND dead IS NULL",
            (at, reason, int(attempted), delivery_id),
        )
        return cursor.rowcount > 0

    def requeue(self, delivery_id: int, at: float | None = None) -> bool:
        """Put an undelivered row (dead or pending) back as new; False if there is none."""
        now = time.time() if at is None else at
        return self._db.execute(_REQUEUE + " AND id = ?", (now, delivery_id)).rowcount > 0

    def requeue_dead(self, at: float | None = None) -> int:
        """Put every dead row back as new; return how many."""
        now = time.time() if at is None else at
        return self._db.execute(_REQUEUE + " AND dead IS NOT NULL", (now,)).rowcount

    def remove(self, delivery_id: int) -> bool:
        """Delete an undelivered row (it will never be sent); False if there is none."""
        cursor = self._db.execute(
            "DELETE FROM deliveries WHERE id = ? AND delivered IS NULL", (delivery_id,)
        )
        return cursor.rowcount > 0

    def checkpoint(self) -> None:
        """Fold the WAL into the database (own connection: safe from a worker thread)."""
        with closing(sqlite3.connect(self.path, isolation_level=None)) as db:
            db.execute("PRAGMA busy_timeout=5000")
            db.execute("PRAGMA wal_checkpoint(PASSIVE)")

    def depth(self) -> int:
        """Return how many deliveries are still to be made (dead ones not counted)."""
        row = self._db.execute(
            "SELECT count(*) FROM deliveries WHERE delivered IS NULL AND dead IS NULL"
        ).fetchone()
        return int(row[0])

    def dead_count(self) -> int:
        """Return how many deliveries were given up (and are kept)."""
        row = self._db.execute("SELECT count(*) FROM deliveries WHERE dead IS NOT NULL").fetchone()
        return int(row[0])

    def targets(self) -> list[str]:
        """Return the targets that have undelivered rows (pending or dead)."""
        rows = self._db.execute(
            "SELECT DISTINCT target FROM deliveries WHERE delivered IS NULL ORDER BY target"
        )
        return [row[0] for row in rows]

    def drop(self, target: str) -> int:
        """Delete a target's undelivered rows, dead ones too (it is gone from the config)."""
        cursor = self._db.execute(
            "DELETE FROM deliveries WHERE target = ? AND delivered IS NULL", (target,)
        )
        return cursor.rowcount

    def close(self) -> None:
        """Close the database."""
        self._db.close()

    def __enter__(self) -> Outbox:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def _limit(limit: int | None) -> int:
    """Return a LIMIT value: -1 is none."""
    return -1 if limit is None else limit


@contextmanager
def _transaction(db: sqlite3.Connection) -> Iterator[None]:
    """BEGIN; COMMIT on a clean exit, ROLLBACK on an exception."""
    db.execute("BEGIN")
    try:
        yield
    except BaseException:
        if db.in_transaction:  # SQLITE_FULL or an I/O error may have rolled it back already
            db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")
