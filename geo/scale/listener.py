"""Keep each worker's lookup index fresh with LISTEN/NOTIFY instead of polling.

Every committed write to ``area``, ``generation`` or ``grid_team_member`` sends
``NOTIFY wangge_lookup`` (statement trigger of migration 0002, delivered at commit). One daemon
thread per process holds a dedicated psycopg2 connection (not from the pool) that LISTENs on the
channel; on a notification it calls the lookup's own entry points: ``invalidate_index()`` (the
current index keeps answering and becomes the base of the rebuild) and then ``get_index(...,
background=True)``, which rebuilds in the lookup's refresh thread. The next request therefore
finds the new index without having waited for it, and workers can poll rarely
(``WANGGE_CHECK_INTERVAL_MS``) as a fallback only.

A lost connection (database restart, failover) is retried every ``retry_s`` seconds; after a
reconnect the index is invalidated once, since notifications sent meanwhile were lost.
NOTIFY is not delivered to hot standbys: the listener always connects to the primary. When the
index is built from a standby (``read_engine``), a notification first waits until the standby
has replayed the primary's WAL as of that moment (``geo.core.replica.wait_replayed``), so that
the rebuild sees the change that was notified, not the version before it.
"""

from __future__ import annotations

import logging
import select
import threading
import time
from collections.abc import Callable

import psycopg2
import psycopg2.extensions
from sqlalchemy import Engine

log = logging.getLogger(__name__)

CHANNEL = "wangge_lookup"


def _default_refresh(engine: Engine, read_engine: Engine | None = None) -> Callable[[], None]:
    """Invalidate the index and rebuild it in the background from ``read_engine`` (default
    ``engine``), once that has replayed the primary's WAL as of the notification."""
    source = read_engine or engine

    def refresh() -> None:
        from geo import lookup
        from geo.core.replica import wait_replayed

        if not wait_replayed(engine, source):
            log.warning("the standby lags more than 10 s: the lookup index is rebuilt from it "
                        "anyway (the next check of its version catches up)")
        lookup.invalidate_index()
        lookup.get_index(source, background=True)

    return refresh


class LookupListener:
    """A thread that LISTENs on ``wangge_lookup`` and refreshes the lookup index.

    ``on_change`` (default: invalidate + background rebuild on ``engine``) is called once per
    burst of notifications (those arriving together are coalesced). ``changes`` counts calls.
    """

    def __init__(self, engine: Engine, *, on_change: Callable[[], None] | None = None,
                 retry_s: float = 1.0, read_engine: Engine | None = None) -> None:
        self.dsn = engine.url.set(drivername="postgresql").render_as_string(
            hide_password=False)
        self.on_change = on_change or _default_refresh(engine, read_engine)
        self.retry_s = retry_s
        self.changes = 0
        self.listening = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="lookup-listener", daemon=True)

    def start(self) -> LookupListener:
        self._thread.start()
        return self

    def stop(self, timeout: float = 2.0) -> None:
        self._stop.set()
        self._thread.join(timeout)

    def _connect(self) -> psycopg2.extensions.connection:
        conn = psycopg2.connect(self.dsn, application_name="wangge-lookup-listener",
                                connect_timeout=5)
        conn.set_isolation_level(psycopg2.extensions.ISOLATION_LEVEL_AUTOCOMMIT)
        with conn.cursor() as cur:
            cur.execute(f"LISTEN {CHANNEL}")
        return conn

    def _fire(self) -> None:
        self.changes += 1
        try:
            self.on_change()
        except Exception as exc:
            log.warning("lookup refresh after NOTIFY failed: %s", str(exc).splitlines()[0])

    def _run(self) -> None:
        first = True
        while not self._stop.is_set():
            try:
                conn = self._connect()
            except psycopg2.Error as exc:
                log.warning("lookup listener cannot connect: %s", str(exc).strip()[:200])
                self._stop.wait(self.retry_s)
                continue
            if not first:
                self._fire()  # notifications sent while we were away are lost
            first = False
            self.listening.set()
            try:
                self._listen(conn)
            except (psycopg2.Error, OSError) as exc:
                log.warning("lookup listener lost its connection: %s", str(exc).strip()[:200])
            finally:
                self.listening.clear()
                conn.close()

    def _listen(self, conn: psycopg2.extensions.connection) -> None:
        while not self._stop.is_set():
            if select.select([conn], [], [], 0.5) == ([], [], []):
                continue
            conn.poll()
            if not conn.notifies:
                continue
            time.sleep(0.02)  # a burst of statements in one commit arrives together
            conn.poll()
            conn.notifies.clear()
            self._fire()


def start_lookup_listener(engine: Engine, read_engine: Engine | None = None
                          ) -> LookupListener | None:
    """Start the listener for ``engine``'s database (the primary); the index it refreshes is
    the one built from ``read_engine`` (a standby; default ``engine``). None when it is not
    PostgreSQL."""
    if engine.url.get_backend_name() != "postgresql":
        return None
    return LookupListener(engine, read_engine=read_engine).start()
