"""The Shopify intake store of `catalog shopify serve`: one SQLite file, safe to share between the server's threads."""

import sqlite3
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

DEAD_CLAIM_SECONDS = 60  # as on AWS (adapters/aws/shopify_store.py): an unconfirmed claim this old is a dead one


def _utc_text(moment: datetime) -> str:
    """A fixed-width UTC form, so that text order is time order."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class SQLiteShopifyStore:
    """Events claimed, each product's latest event time, and the image versions already taken."""

    def __init__(self, path: Path, clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self.clock = clock
        path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS events (event_id TEXT PRIMARY KEY, claimed_at TEXT NOT NULL, confirmed INTEGER)"
        )
        self._db.execute("CREATE TABLE IF NOT EXISTS products (product_key TEXT PRIMARY KEY, triggered_at TEXT)")
        self._db.execute("CREATE TABLE IF NOT EXISTS seen (key TEXT PRIMARY KEY)")

    def claim_event(self, event_id: str) -> bool:
        now = self.clock()
        with self._lock:
            cursor = self._db.execute(
                "INSERT INTO events (event_id, claimed_at, confirmed) VALUES (?, ?, 0) "
                "ON CONFLICT(event_id) DO UPDATE SET claimed_at = excluded.claimed_at "
                "WHERE events.confirmed = 0 AND events.claimed_at < ?",
                (event_id, _utc_text(now), _utc_text(now - timedelta(seconds=DEAD_CLAIM_SECONDS))),
            )
            return cursor.rowcount == 1

    def confirm_event(self, event_id: str) -> None:
        with self._lock:
            self._db.execute("UPDATE events SET confirmed = 1 WHERE event_id = ?", (event_id,))

    def release_event(self, event_id: str) -> None:
        with self._lock:
            self._db.execute("DELETE FROM events WHERE event_id = ?", (event_id,))

    def advance_product(self, product_key: str, triggered_at: datetime) -> bool:
        moment = _utc_text(triggered_at)
        with self._lock:
            # Equal passes: a retry of the same event must not look stale to itself.
            cursor = self._db.execute(
                "INSERT INTO products (product_key, triggered_at) VALUES (?, ?) "
                "ON CONFLICT(product_key) DO UPDATE SET triggered_at = excluded.triggered_at "
                "WHERE products.triggered_at <= excluded.triggered_at",
                (product_key, moment),
            )
            return cursor.rowcount == 1

    def seen(self, key: str) -> bool:
        with self._lock:
            return self._db.execute("SELECT 1 FROM seen WHERE key = ?", (key,)).fetchone() is not None

    def mark(self, key: str) -> None:
        with self._lock:
            self._db.execute("INSERT OR IGNORE INTO seen (key) VALUES (?)", (key,))

    def close(self) -> None:
        with self._lock:
            self._db.close()
