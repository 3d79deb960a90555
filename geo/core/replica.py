"""A streaming hot standby of the embedded primary, and its promotion.

The standby lives in ``<state_dir>/standby/`` with the same layout as the primary (``pgdata/``,
``run/``, ``port``, ``postgres.log``), so ``geo.core.embedded`` starts, stops and queries it
given ``standby_settings(settings)``. It is made by ``pg_basebackup`` from the running primary
through a physical replication slot (WAL is kept until the standby has it), starts with
``standby.signal`` and ``hot_standby = on`` and answers read-only queries.

Synchronous replication: the primary's ``synchronous_standby_names`` names the standby's
``application_name`` (:data:`STANDBY_NAME`), so a commit (an acknowledged report) returns only
once the standby has flushed its WAL (``synchronous_commit = on``), or, with ``apply``, once it
has applied it (``remote_apply``: then reads on the standby see every acknowledged write).

Promotion (``promote``) makes the standby the primary *in place of the old one*: the old
primary is stopped (if it still runs), the standby is promoted (``pg_ctl promote``), stopped,
and its data directory moved to ``<state_dir>/pgdata`` (the old one is kept as
``pgdata.failed-<time>``), then started on the primary's port. The service's URL therefore does
not change and its connections (``pool_pre_ping``) follow.
"""

from __future__ import annotations

import logging
import shutil
import subprocess
import time
from datetime import datetime
from pathlib import Path

from sqlalchemy import Engine, text
from sqlalchemy.engine import Connection

from geo.core import embedded
from geo.core.errors import DatabaseUnavailable, InvalidInput, Problem
from geo.core.settings import DatabaseSettings

log = logging.getLogger(__name__)

STANDBY_NAME = "wangge_standby"
SLOT = "wangge_standby"


def standby_settings(settings: DatabaseSettings) -> DatabaseSettings:
    """Settings whose state directory is the standby's (``<state_dir>/standby``)."""
    return settings.model_copy(update={"state_dir": settings.state_dir.resolve() / "standby",
                                       "db_port": 0})


def _sql(settings: DatabaseSettings, sql: str) -> str:
    return embedded.psql(settings, sql).strip()


def set_synchronous(settings: DatabaseSettings, on: bool, *, apply: bool = False) -> None:
    """Make the primary's commits wait for the standby (``on``) or not; reloads the primary.
    ``apply`` (with ``on``): wait until the standby has *applied* the commit
    (``synchronous_commit = remote_apply``), not only flushed it, so that whatever a client was
    told is committed is visible to reads on the standby at once, from any worker."""
    value = f"'{STANDBY_NAME}'" if on else "''"
    _sql(settings, f"ALTER SYSTEM SET synchronous_standby_names = {value}")
    _sql(settings, "ALTER SYSTEM SET synchronous_commit = 'remote_apply'" if on and apply
         else "ALTER SYSTEM RESET synchronous_commit")
    _sql(settings, "SELECT pg_reload_conf()")


def create_standby(settings: DatabaseSettings, *, synchronous: bool = False,
                   timeout: float = 120.0) -> embedded.ClusterStatus:
    """Create (once) and start the standby of the running embedded primary. Idempotent."""
    if settings.database_url:
        raise InvalidInput("a standby is made of the embedded cluster only",
                           [Problem(reason="unset WANGGE_DATABASE_URL", field="database_url")])
    primary = embedded.start(settings)
    sb = standby_settings(settings)
    state, pgdata, rundir, _ = embedded._paths(sb)
    if not (pgdata / "PG_VERSION").exists():
        for d in (state, rundir):
            d.mkdir(parents=True, exist_ok=True)
            embedded._chown_to_runner(d)
        if pgdata.exists():
            shutil.rmtree(pgdata)
        _sql(settings, f"SELECT pg_create_physical_replication_slot('{SLOT}') WHERE NOT EXISTS "
             f"(SELECT 1 FROM pg_replication_slots WHERE slot_name = '{SLOT}')")
        log.info("pg_basebackup from 127.0.0.1:%d into %s", primary.port, pgdata)
        result = subprocess.run(embedded._as_postgres([
            str(embedded._pg_bin(settings) / "pg_basebackup"),
            "-D", str(pgdata), "-h", "127.0.0.1", "-p", str(primary.port), "-U", "postgres",
            "-X", "stream", "-S", SLOT, "-R", "-c", "fast",
            "-d", f"application_name={STANDBY_NAME}",
        ]), capture_output=True, text=True, timeout=timeout)
        if result.returncode != 0:
            shutil.rmtree(pgdata, ignore_errors=True)
            raise DatabaseUnavailable(f"pg_basebackup failed: {result.stderr.strip()[:500]}")
        # the copy carries the primary's own settings: a standby waits for nobody
        with open(pgdata / "postgresql.auto.conf", "a") as f:
            f.write("synchronous_standby_names = ''\nhot_standby = on\n"
                    "hot_standby_feedback = on\n")
    st = embedded.start(sb)
    if synchronous:
        set_synchronous(settings, True)
    return st


def standby_url(settings: DatabaseSettings, dbname: str | None = None) -> str | None:
    """The standby's SQLAlchemy URL when it runs, else None."""
    sb = standby_settings(settings)
    return embedded.url(sb, dbname) if embedded.status(sb).running else None


def replication_state(settings: DatabaseSettings) -> list[dict[str, str]]:
    """``pg_stat_replication`` on the primary: one dict per connected standby."""
    out = _sql(settings, "SELECT application_name, state, sync_state, "
               "coalesce(replay_lag::text, '0') FROM pg_stat_replication")
    return [dict(zip(("name", "state", "sync_state", "replay_lag"), line.split("|"),
                     strict=True)) for line in out.splitlines() if line]


def wait_caught_up(settings: DatabaseSettings, timeout: float = 30.0) -> float:
    """Wait until the standby has replayed the primary's current WAL position; seconds."""
    target = _sql(settings, "SELECT pg_current_wal_lsn()")
    sb = standby_settings(settings)
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        done = _sql(sb, f"SELECT pg_last_wal_replay_lsn() >= '{target}'::pg_lsn")
        if done == "t":
            return time.monotonic() - t0
        time.sleep(0.01)
    raise DatabaseUnavailable(f"the standby did not reach {target} within {timeout} s")


def wait_replayed(primary: Engine, standby: Engine, *, timeout: float = 10.0) -> bool:
    """Wait until ``standby`` has replayed everything ``primary`` has written so far (its WAL
    position now): then a read there sees every commit made before the call. True once it has
    (at once when ``standby`` is no standby: the same server, or a promoted one); False after
    ``timeout`` seconds."""
    if standby is primary:
        return True
    with primary.connect() as c:
        target = c.execute(text("SELECT pg_current_wal_lsn()::text")).scalar()
    deadline = time.monotonic() + timeout
    with standby.connect() as c:
        while True:
            done = c.execute(text(
                "SELECT NOT pg_is_in_recovery() OR pg_last_wal_replay_lsn() >= "
                "CAST(:lsn AS pg_lsn)"), {"lsn": target}).scalar()
            c.rollback()  # a fresh snapshot on the next turn
            if done:
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.01)


def replay_horizon(conn: Connection) -> tuple[bool, datetime | None]:
    """(is ``conn`` a standby, the commit time of the last transaction it replayed, or, before
    it has replayed any, the time of the checkpoint its replay started from): every transaction
    the primary committed up to that instant is visible on it. (False, None) on a primary."""
    row = conn.execute(text(
        "SELECT pg_is_in_recovery(), CASE WHEN pg_is_in_recovery() THEN coalesce("
        "pg_last_xact_replay_timestamp(), (pg_control_checkpoint()).checkpoint_time) END")).one()
    return bool(row[0]), row[1]


def promote(settings: DatabaseSettings, *, timeout: float = 60.0) -> embedded.ClusterStatus:
    """Turn the standby into the primary on the primary's port (see the module docstring)."""
    sb = standby_settings(settings)
    if not embedded.status(sb).running:
        raise DatabaseUnavailable("no standby runs: start one with `wangge db start --standby`")
    state, pgdata, _, _ = embedded._paths(settings)
    sb_state, sb_pgdata, _, sb_port = embedded._paths(sb)
    if embedded.status(settings).running:
        embedded.stop(settings, mode="immediate")
    subprocess.run(embedded._as_postgres([
        str(embedded._pg_bin(settings) / "pg_ctl"), "-D", str(sb_pgdata), "-w", "-t",
        str(int(timeout)), "promote"]), check=True, capture_output=True)
    # the promoted server must not wait for a standby it no longer has
    _sql(sb, "ALTER SYSTEM SET synchronous_standby_names = ''")
    embedded.stop(sb, mode="fast")
    failed = state / f"pgdata.failed-{time.strftime('%Y%m%d%H%M%S')}"
    pgdata.rename(failed)
    Path(sb_pgdata).rename(pgdata)
    sb_port.unlink(missing_ok=True)
    shutil.rmtree(sb_state, ignore_errors=True)
    log.info("standby promoted; the old primary's data is kept in %s", failed)
    return embedded.start(settings)
