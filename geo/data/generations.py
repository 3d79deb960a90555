"""Generations: how a boundary change is serialised, dated and listed.

Every writer of a generation (``geo.data.store.write_layers``, ``geo.planning.apply_change``)
goes through ``new_generation``:

* **Serialised per district.** ``lock_districts`` takes a transaction-scoped advisory lock keyed
  by each district code touched (sorted, so two writers never deadlock); a writer takes it
  before it reads the state it checks, so the checks run against the other writer's committed
  result. Locks are released at commit or rollback.
* **Ids and dates in commit order.** ``new_generation`` takes one more advisory lock (the
  generation lock) before it allocates the id and holds it to commit, and dates an undated
  change with ``clock_timestamp()`` (not the transaction's start), so a later generation never
  has a smaller id or an earlier date than one committed before it.
* **Scheduled changes.** A generation whose ``effective_from`` is in the future is *scheduled*:
  the view ``area_current`` (migration 0014) and the lookup answer from
  ``generation_at(clock_timestamp())`` until that instant. A new change may not be dated before
  the latest generation, whether it names a date or not (undated = now, refused while a change
  is scheduled).

Times are ``timestamptz``; a naive ``effective_from`` is read in the session's time zone.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from sqlalchemy import text
from sqlalchemy.engine import Connection

from geo.core.audit import default_actor
from geo.core.codes import district_of
from geo.core.errors import Conflict, Problem

# Advisory lock keys: (namespace, key) pairs of int4, so they never collide with other users.
LOCK_NAMESPACE = 0x57474744  # "WGGD"
GENERATION_LOCK = -1  # key of the generation lock; district locks use a crc32 of the code


# The areas in force now, as a WHERE clause on ``area`` (the view ``area_current`` is the same).
IN_FORCE_SQL = ("generation_low <= (SELECT generation_at(clock_timestamp())) AND "
                "coalesce(generation_high, 2147483647) >= "
                "(SELECT generation_at(clock_timestamp()))")


def _key(district: str) -> int:
    """A district code as a signed int4 lock key (crc32, never GENERATION_LOCK)."""
    k = zlib.crc32(district.encode()) & 0x7FFFFFFF
    return k


def lock_districts(conn: Connection, codes: Iterable[str | None]) -> list[str]:
    """Take the advisory transaction lock of the district of each code (waits for a writer that
    holds one); return the districts locked. Codes above district level are ignored."""
    districts = sorted({d for c in codes if c for d in [district_of(str(c))] if d})
    for d in districts:
        conn.execute(text("SELECT pg_advisory_xact_lock(:ns, :k)"),
                     {"ns": LOCK_NAMESPACE, "k": _key(d)})
    return districts


def new_generation(conn: Connection, *, kind: str, note: str | None,
                   effective_from: datetime | None, author: str | None,
                   districts: list[str] | None = None) -> int:
    """Insert the next generation (after the generation lock) and return its id.

    ``districts``: the districts it changes (recorded on the generation).
    ``effective_from`` None means now (``clock_timestamp()``). Refused (Conflict naming
    ``effective_from``) when it would be dated before the latest generation, e.g. an undated
    change while a change is scheduled for a later date.
    """
    conn.execute(text("SELECT pg_advisory_xact_lock(:ns, :k)"),
                 {"ns": LOCK_NAMESPACE, "k": GENERATION_LOCK})
    row = conn.execute(text(
        "SELECT coalesce(CAST(:ef AS timestamptz), clock_timestamp()) AS eff, "
        "(SELECT max(effective_from) FROM generation) AS latest, "
        "(SELECT id FROM generation ORDER BY effective_from DESC, id DESC LIMIT 1) AS latest_id"),
        {"ef": effective_from}).one()
    if row.latest is not None and row.eff < row.latest:
        scheduled = row.latest > conn.execute(text("SELECT clock_timestamp()")).scalar_one()
        what = "a change is scheduled" if scheduled else "the latest change takes effect"
        raise Conflict(
            f"{what} on {row.latest.isoformat()} (generation {row.latest_id}); "
            "a later change may not be dated before it",
            [Problem(reason=f"must be on or after {row.latest.isoformat()}"
                     + ("" if effective_from is not None else
                        " (no date given means now)"), field="effective_from")])
    return int(conn.execute(text(
        "INSERT INTO generation (kind, note, effective_from, author, districts) "
        "VALUES (:k, :n, :ef, :a, :d) RETURNING id"),
        {"k": kind, "n": note, "ef": row.eff, "a": default_actor(author),
         "d": districts}).scalar_one())


def list_generations(conn: Connection, *, limit: int = 200) -> list[dict[str, Any]]:
    """Committed generations, newest first: id, kind, effective_from, created_at, author, note,
    whether scheduled (not yet in force), the districts it changed and the planning change's
    summary (if any)."""
    rows = conn.execute(text(
        "SELECT g.id, g.kind, g.effective_from, g.created_at, g.author, g.note, g.districts, "
        "g.effective_from > clock_timestamp() AS scheduled, "
        "g.id = generation_at(clock_timestamp()) AS in_force, "
        "p.operation, p.summary FROM generation g "
        "LEFT JOIN planning_change p ON p.generation_id = g.id "
        "ORDER BY g.id DESC LIMIT :n"), {"n": limit}).mappings().all()
    return [dict(r) for r in rows]
