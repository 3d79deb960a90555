"""Monthly partitions of the cases: made ahead, listed, and old months detached for archive.

``incident`` is partitioned by ``reported_at``, ``incident_history`` and ``incident_photo`` by
their case's ``incident_reported_at``, into the same calendar months (UTC), named
``<table>_yYYYYmMM`` (migration 0016). ``incident_default`` and its siblings catch rows of a
month not made yet, so a report never fails for want of a partition.

- ``ensure_partitions``: the months from ``start`` (default: this one) to ``ahead`` months from
  now, for the three tables (``wangge incident partitions``);
- ``ensure_months_ahead``: the same, once, in the process that starts the service (``wangge
  serve``, the ``wangge proxy`` supervisor before its workers, ``wangge db migrate``,
  ``wangge demo-load``), never in an API worker: ``CREATE TABLE ... PARTITION OF`` locks
  ``incident`` and would queue every report of the other workers behind a restarting one. It
  first checks the months in the catalogue (``to_regclass``, no lock) and runs no DDL when they
  all exist;
- ``archive``: detach every month before ``before`` (history and photos first, then the cases),
  take its days out of the daily roll-up ``incident_grid_day`` (migration 0017; statistics
  then match the cases still attached), move the three tables into the schema
  ``wangge_archive`` and, with ``dump_dir``, write them with ``pg_dump`` (custom format) and
  drop them. A month that still holds open cases is refused unless ``include_open``.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import subprocess
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, text
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.exc import IntegrityError

from geo.core.errors import Conflict, DatabaseUnavailable, InvalidInput, Problem, WanggeError

log = logging.getLogger(__name__)

TABLES = ("incident_photo", "incident_history", "incident")  # detach order: children first
ARCHIVE_SCHEMA = "wangge_archive"
_MONTH = re.compile(r"^(\d{4})-(\d{2})$")
_NAME = re.compile(r"^incident_y(\d{4})m(\d{2})$")


@dataclass
class ArchivedMonth:
    month: str  # YYYY-MM
    incidents: int
    history: int
    photos: int
    tables: list[str] = field(default_factory=list)  # wangge_archive.<name>, or dropped
    dump: str | None = None


def parse_month(value: str, field_name: str = "before") -> date:
    """'YYYY-MM' as the first day of that month; InvalidInput naming ``field_name`` else."""
    m = _MONTH.match(value.strip()) if isinstance(value, str) else None
    if not m or not 1 <= int(m.group(2)) <= 12:
        raise InvalidInput("a month is written YYYY-MM",
                           [Problem(reason=f"'{value}' is not YYYY-MM", field=field_name)])
    return date(int(m.group(1)), int(m.group(2)), 1)


def _add_months(d: date, n: int) -> date:
    k = d.year * 12 + d.month - 1 + n
    return date(k // 12, k % 12 + 1, 1)


def ensure_partitions(conn: Connection, *, ahead: int = 12, start: date | None = None,
                      now: datetime | None = None) -> int:
    """Create the missing monthly partitions from ``start``'s month (default: the current
    one) to ``ahead`` months after now, for the three tables; how many tables were made.
    A month whose rows already sit in the default partition is refused (Conflict)."""
    if ahead < 0 or ahead > 120:
        raise InvalidInput("ahead is 0 to 120 months", [Problem(reason=str(ahead),
                                                                field="ahead")])
    today = (now or datetime.now(UTC)).date().replace(day=1)
    first = min(start or today, today)
    try:
        with conn.begin_nested():
            return int(conn.execute(text("SELECT wangge_incident_partitions(:a, :b)"),
                                    {"a": first, "b": _add_months(today, ahead)}).scalar_one())
    except IntegrityError as exc:
        raise Conflict("the default partition already holds cases of a month to be made: "
                       "move them out first (see docs/operations/scale.md)",
                       [Problem(reason=str(exc.orig).splitlines()[0], field="start")]) from exc


def missing_months(conn: Connection, *, ahead: int = 12,
                   now: datetime | None = None) -> list[str]:
    """The partitions (of the three tables) from this month to ``ahead`` months on that do not
    exist yet; a catalogue lookup (``to_regclass``) that takes no lock on ``incident``."""
    today = (now or datetime.now(UTC)).date().replace(day=1)
    names = [f"{t}_y{m.year:04d}m{m.month:02d}" for m in
             (_add_months(today, k) for k in range(ahead + 1))
             for t in ("incident", "incident_history", "incident_photo")]
    rows = conn.execute(text("SELECT n FROM unnest(CAST(:names AS text[])) AS n"
                             " WHERE to_regclass('public.' || n) IS NULL"), {"names": names})
    return [r[0] for r in rows]


def ensure_months_ahead(engine: Engine, *, ahead: int = 12) -> int:
    """Make the missing months up to ``ahead`` from now, skipping every DDL (and lock) when
    none is missing; tables made. For the process that starts the service, not its workers.
    A failure (an unmigrated or read-only database) is logged, not raised: reports then land
    in the default partition until the months are made."""
    try:
        with engine.connect() as conn:
            if not missing_months(conn, ahead=ahead):
                return 0
        with engine.begin() as conn:
            return ensure_partitions(conn, ahead=ahead)
    except Exception as exc:  # must never stop the service from starting
        log.warning("incident partitions not made: %s", exc)
        return 0


def monthly_partitions(conn: Connection) -> list[dict[str, Any]]:
    """Every month of ``incident``: month (YYYY-MM), table name, estimated rows."""
    rows = conn.execute(text(
        "SELECT c.relname, greatest(c.reltuples, 0)::bigint FROM pg_inherits h"
        " JOIN pg_class c ON c.oid = h.inhrelid WHERE h.inhparent = 'incident'::regclass"
        " ORDER BY c.relname")).all()
    out = []
    for name, est in rows:
        m = _NAME.match(name)
        if m:
            out.append({"month": f"{m.group(1)}-{m.group(2)}", "table": name,
                        "rows_estimate": int(est)})
    return out


def _detach(conn: Connection, parent: str, part: str) -> None:
    conn.execute(text(f'ALTER TABLE {parent} DETACH PARTITION "{part}"'))
    for (con,) in conn.execute(text(
            "SELECT conname FROM pg_constraint WHERE conrelid = CAST(:t AS regclass)"
            " AND contype = 'f' AND conparentid = 0"), {"t": part}).all():
        # the foreign keys it kept would stop the case partition from being detached (their
        # per-partition children, conparentid <> 0, go with them)
        conn.execute(text(f'ALTER TABLE "{part}" DROP CONSTRAINT IF EXISTS "{con}"'))
    conn.execute(text(f'ALTER TABLE "{part}" SET SCHEMA {ARCHIVE_SCHEMA}'))


def _pg_dump() -> str:
    """pg_dump of the server's own version (the embedded cluster's binaries), else PATH's."""
    from geo.core.embedded import _pg_bin
    from geo.core.settings import DatabaseSettings

    try:
        own = _pg_bin(DatabaseSettings()) / "pg_dump"
    except WanggeError:
        own = None
    if own is not None and own.exists():
        return str(own)
    return shutil.which("pg_dump") or "pg_dump"


def archive(engine: Engine, before: str, *, dump_dir: Path | None = None,
            include_open: bool = False, now: datetime | None = None) -> list[ArchivedMonth]:
    """Detach every monthly partition (cases, history, photos) of a month before ``before``
    (YYYY-MM, not later than the current month) into schema ``wangge_archive``; with
    ``dump_dir``, ``pg_dump`` them there (<table>.dump, custom format) and drop them.
    One transaction per month: a month is archived whole or not at all."""
    limit = parse_month(before)
    today = (now or datetime.now(UTC)).date().replace(day=1)
    if limit > today:
        raise InvalidInput("only past months can be archived",
                           [Problem(reason=f"{before} is after the current month",
                                    field="before")])
    if dump_dir is not None:
        dump_dir.mkdir(parents=True, exist_ok=True)
    with engine.connect() as conn:
        months = [m for m in monthly_partitions(conn) if parse_month(m["month"]) < limit]
        if not include_open:  # refuse before detaching anything
            _refuse_open(conn, months)
    done: list[ArchivedMonth] = []
    for m in months:
        suffix = m["table"].removeprefix("incident")
        names = [t + suffix for t in TABLES]
        with engine.begin() as conn:
            conn.execute(text("SET LOCAL lock_timeout = '10s'"))
            conn.execute(text(f"LOCK TABLE {', '.join(TABLES)} IN ACCESS EXCLUSIVE MODE"))
            if not include_open:  # again, under the lock: a case may have been reopened
                _refuse_open(conn, [m])
            counts = [conn.execute(text(f'SELECT count(*) FROM "{n}"')).scalar_one()
                      for n in names]
            conn.execute(text(f"CREATE SCHEMA IF NOT EXISTS {ARCHIVE_SCHEMA}"))
            for parent, part in zip(TABLES, names, strict=True):
                _detach(conn, parent, part)
            first = parse_month(m["month"], "before")  # the month's days leave the roll-up
            conn.execute(text("DELETE FROM incident_grid_day WHERE day >= :a AND day < :b"),
                         {"a": first, "b": _add_months(first, 1)})
        item = ArchivedMonth(m["month"], incidents=counts[2], history=counts[1],
                             photos=counts[0], tables=[f"{ARCHIVE_SCHEMA}.{n}" for n in names])
        if dump_dir is not None:
            item.dump = str(_dump(engine, names, dump_dir / f"incident{suffix}.dump"))
            with engine.begin() as conn:
                conn.execute(text(", ".join(f"{ARCHIVE_SCHEMA}.{n}" for n in names).join(
                    ("DROP TABLE ", ""))))
            item.tables = []
        done.append(item)
    return done


def _refuse_open(conn: Connection, months: list[dict[str, Any]]) -> None:
    problems = []
    for m in months:
        n = conn.execute(text(f'SELECT count(*) FROM "{m["table"]}" WHERE is_open')).scalar_one()
        if n:
            problems.append(Problem(reason=f"{m['month']} holds {n} open cases: close them or "
                                    "pass --include-open", field="before"))
    if problems:
        raise Conflict("months with open cases are not archived", problems)


def _dump(engine: Engine, names: list[str], path: Path) -> Path:
    url = make_url(engine.url).set(drivername="postgresql")
    env = {**os.environ, "PGPASSWORD": url.password or ""}  # not on the command line
    cmd = [_pg_dump(), "--format=custom", f"--file={path}",
           f"--dbname={url.set(password=None).render_as_string(hide_password=False)}"]
    cmd += [f"--table={ARCHIVE_SCHEMA}.{n}" for n in names]
    res = subprocess.run(cmd, capture_output=True, text=True, check=False, env=env)
    if res.returncode != 0:
        raise DatabaseUnavailable("pg_dump failed: the month stays detached in "
                                  f"{ARCHIVE_SCHEMA}", [Problem(reason=res.stderr.strip()[:500],
                                                                field="dump")])
    return path
