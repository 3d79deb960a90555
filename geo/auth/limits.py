"""Rate limits shared by every worker, and the failed sign-in throttle (PostgreSQL-backed).

``SharedRateLimiter`` decides in process memory, so the request path makes no database round
trip: each worker counts its requests per key and minute, and a background thread adds those
counts to ``rate_counter`` every ``flush_seconds`` in one statement, reading back the totals of
all workers. A key is refused when (total as last read + counted here since) exceeds its
limit, so N workers together admit at most about the limit plus what they admit during one
flush interval; one worker alone is exact. Without an engine (tests of other concerns) the
limiter counts in this process only.

Failed sign-ins are rare and already on a database path: they are counted in the same table,
directly, per account and per client address.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import defaultdict

from sqlalchemy import Engine, text
from sqlalchemy.engine import Connection

log = logging.getLogger(__name__)

_UPSERT = text(
    "INSERT INTO rate_counter (bucket, window_start, count)"
    " SELECT b, :w, c FROM unnest(CAST(:buckets AS text[]), CAST(:counts AS bigint[])) AS t(b, c)"
    " ON CONFLICT (bucket, window_start)"
    " DO UPDATE SET count = rate_counter.count + EXCLUDED.count"
    " RETURNING bucket, count")


class SharedRateLimiter:
    """Fixed one-minute windows per key, shared between workers through ``rate_counter``."""

    def __init__(self, flush_seconds: float = 0.5) -> None:
        self.flush_seconds = flush_seconds
        self._lock = threading.Lock()
        self._minute = 0
        self._pending: dict[str, int] = defaultdict(int)  # counted here, not yet flushed
        self._known: dict[str, int] = {}  # totals of every worker at the last flush
        self._sending: dict[str, int] = {}  # being added to the table right now
        self._engine: Engine | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def hit(self, key: str, per_minute: int) -> int | None:
        """Count a request; return seconds to wait if over the limit, else None."""
        now = time.time()
        minute = int(now // 60)
        with self._lock:
            if minute != self._minute:
                self._roll(minute)
            self._pending[key] += 1
            count = self._known.get(key, 0) + self._sending.get(key, 0) + self._pending[key]
        if count > per_minute:
            return max(1, 60 - int(now % 60))
        return None

    def _roll(self, minute: int) -> None:
        """A new minute: unflushed counts of the old one are dropped with it."""
        self._pending.clear()
        self._known.clear()
        self._sending = {}
        self._minute = minute

    def start(self, engine: Engine) -> None:
        """Share counts through ``engine``'s database from now on (a background thread)."""
        self._engine = engine
        self._thread = threading.Thread(target=self._run, name="rate-limit-flush", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
            self.flush()

    def _run(self) -> None:
        while not self._stop.wait(self.flush_seconds):
            try:
                self.flush()
            except Exception as exc:
                log.warning("rate counters not shared this time: %s",
                            str(exc).splitlines()[0][:200])

    def flush(self) -> None:
        """Add this worker's counts to the shared table and read back every worker's total."""
        if self._engine is None:
            return
        with self._lock:
            minute, pending = self._minute, dict(self._pending)
            self._pending.clear()
            self._sending = pending
            # keys counted earlier this minute are read back too (others' counts grow)
            sent = {**dict.fromkeys(self._known, 0), **pending}
        try:
            with self._engine.begin() as conn:
                totals: dict[str, int] = dict(conn.execute(_UPSERT, {
                    "w": minute, "buckets": list(sent), "counts": list(sent.values()),
                }).all()) if sent else {}
                if minute % 10 == 0:
                    conn.execute(text("DELETE FROM rate_counter WHERE window_start > 0"
                                      " AND window_start < :w"), {"w": minute - 2})
        except Exception:
            with self._lock:  # not shared: count them again next time
                if self._minute == minute:
                    self._sending = {}
                    for k, v in pending.items():
                        self._pending[k] += v
            raise
        with self._lock:
            if self._minute == minute:  # the totals include what was being sent
                self._sending = {}
                for k, total in totals.items():
                    self._known[k] = int(total)


# ---------------------------------------------------------------- failed sign-ins

def _window(seconds: int) -> int:
    """Windows of failed sign-ins are numbered negatively so that they never meet the
    per-minute request windows of ``rate_counter`` (which are positive minute numbers)."""
    return -int(time.time() // seconds)


def failed_logins(conn: Connection, username: str, address: str,
                  window_seconds: int) -> tuple[int, int]:
    """Failed sign-ins in the current window: (for this account, from this address)."""
    rows: dict[str, int] = dict(conn.execute(
        text("SELECT bucket, count FROM rate_counter WHERE window_start = :w"
             " AND bucket IN (:u, :a)"),
        {"w": _window(window_seconds), "u": f"login-user:{username.lower()}",
         "a": f"login-addr:{address}"}).all())
    return (int(rows.get(f"login-user:{username.lower()}", 0)),
            int(rows.get(f"login-addr:{address}", 0)))


def record_failed_login(conn: Connection, username: str, address: str,
                        window_seconds: int) -> None:
    conn.execute(
        text("INSERT INTO rate_counter (bucket, window_start, count)"
             " VALUES (:u, :w, 1), (:a, :w, 1) ON CONFLICT (bucket, window_start)"
             " DO UPDATE SET count = rate_counter.count + 1"),
        {"w": _window(window_seconds), "u": f"login-user:{username.lower()}",
         "a": f"login-addr:{address}"})


def seconds_left(window_seconds: int) -> int:
    return max(1, window_seconds - int(time.time() % window_seconds))
