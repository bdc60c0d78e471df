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

_INSERT_ALERT = "INSERT OR IGNORE INTO alerts (key, body, added) VALUES (?, ?, ?)"
_INSERT_DELIVERY = "INSERT INTO deliveries (alert_id, target) VALUES (?, ?)"
# a replay of older bars after a restart must not overwrite a newer state
_SAVE_RULE_STATE = """
INSERT INTO rule_states (rule, at, saved, state) VALUES (?, ?, ?, ?)
ON CONFLICT (rule) DO UPDATE SET at = excluded.at, saved = excluded.saved, state = excluded.state
WHERE excluded.at >= rule_states.at
"""
_PENDING = """
SELECT d.id, d.target, a.body, d.attempts, d.next_try, d.error
FROM deliveries d JOIN alerts a ON a.id = d.alert_id
WHERE d.target = ? AND d.delivered IS NULL
ORDER BY d.id LIMIT ?
"""


@dataclass(frozen=True)
class Delivery:
    """One alert still to be delivered to one target."""

    id: int
    target: str
    alert: Alert
    attempts: int
    next_try: float
    error: str | None


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
        self._db.executescript(_RULE_STATES_SCHEMA)
        self._prune(time.time() - keep)

    def _prune(self, cutoff: float) -> None:
        """Forget delivered rows older than ``cutoff`` and alerts with nothing left."""
        with self._transaction():
            self._db.execute(
                "DELETE FROM deliveries WHERE delivered IS NOT NULL AND delivered < ?", (cutoff,)
            )
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
        """Return a target's undelivered rows in enqueue order (at most ``limit``)."""
        rows = self._db.execute(_PENDING, (target, -1 if limit is None else limit))
        return [
            Delivery(row[0], row[1], Alert.from_json(row[2]), row[3], row[4], row[5])
            for row in rows
        ]

    def mark_delivered(self, delivery_id: int) -> None:
        """Record a successful delivery (kept for dedup, pruned after ``keep``)."""
        self._db.execute(
            "UPDATE deliveries SET delivered = ?, attempts = attempts + 1, error = NULL "
            "WHERE id = ?",
            (time.time(), delivery_id),
        )

    def mark_failed(self, delivery_id: int, error: str, next_try: float) -> None:
        """Record a failed attempt and when (epoch seconds) to try again."""
        self._db.execute(
            "UPDATE deliveries SET attempts = attempts + 1, error = ?, next_try = ? WHERE id = ?",
            (error, next_try, delivery_id),
        )

    def checkpoint(self) -> None:
        """Fold the WAL into the database (own connection: safe from a worker thread)."""
        with closing(sqlite3.connect(self.path, isolation_level=None)) as db:
            db.execute("PRAGMA busy_timeout=5000")
            db.execute("PRAGMA wal_checkpoint(PASSIVE)")

    def depth(self) -> int:
        """Return how many deliveries are still undelivered."""
        row = self._db.execute("SELECT count(*) FROM deliveries WHERE delivered IS NULL").fetchone()
        return int(row[0])

    def targets(self) -> list[str]:
        """Return the targets that have undelivered rows."""
        rows = self._db.execute(
            "SELECT DISTINCT target FROM deliveries WHERE delivered IS NULL ORDER BY target"
        )
        return [row[0] for row in rows]

    def drop(self, target: str) -> int:
        """Delete a target's undelivered rows (it is gone from the config); return how many."""
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
