"""Monthly partitions of cases, history and photos (migration 0016, geo.incidents.partitions):
rows land in their month, months are made ahead, old months are detached (and dumped)."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
from factories import tiny_png, two_grid_engine
from sqlalchemy import Engine, text
from typer.testing import CliRunner

from cli.main import app
from geo import incidents as inc
from geo.core.errors import Conflict, InvalidInput
from geo.incidents import partitions as parts

SETTINGS = inc.IncidentSettings(duplicate_window_hours=2)


@pytest.fixture
def db(fresh_database: Any) -> Iterator[Engine]:
    with two_grid_engine(fresh_database(), pool_size=10) as eng:
        yield eng


def _months(first: date, last: date) -> list[str]:
    """Every YYYY-MM from first to last (plain Python, for comparison)."""
    out, y, m = [], first.year, first.month
    while (y, m) <= (last.year, last.month):
        out.append(f"{y:04d}-{m:02d}")
        y, m = (y + 1, 1) if m == 12 else (y, m + 1)
    return out


def _where(c: Any, table: str, **cond: Any) -> set[str]:
    sql = " AND ".join(f"{k} = :{k}" for k in cond)
    return set(c.execute(text(f"SELECT tableoid::regclass::text FROM {table} WHERE {sql}"),
                         cond).scalars())


def _report(c: Any, at: datetime, lon: float = 119.305, lat: float = 26.05) -> Any:
    return inc.report(c, category="rubbish", lon=lon, lat=lat, settings=SETTINGS, now=at)


def test_rows_of_a_case_land_in_its_month(db: Engine) -> None:
    now = datetime.now(UTC)
    with db.connect() as c, c.begin() as tx:
        parts.ensure_partitions(c, start=date(2025, 1, 1), ahead=12)
        last = (now.date().replace(day=1) + timedelta(days=32 * 12)).replace(day=1)
        assert [m["month"] for m in parts.monthly_partitions(c)] == \
            _months(date(2025, 1, 1), last)
        at = datetime(2025, 3, 31, 23, 30, tzinfo=UTC)  # 07:30 on 1 April in Beijing: March
        first = _report(c, at)
        twin = _report(c, at + timedelta(minutes=5))  # a duplicate: history on the first
        assert twin.duplicate_of == first.id
        photo = inc.attach_photo(c, first.id, tiny_png(), "image/png", settings=SETTINGS)
        assert _where(c, "incident", id=first.id) == {"incident_y2025m03"}
        assert _where(c, "incident_history", incident_id=first.id) == \
            {"incident_history_y2025m03"}
        assert c.execute(text("SELECT count(*) FROM incident_history WHERE incident_id = :i"),
                         {"i": first.id}).scalar() == 2  # report + duplicate_linked
        assert _where(c, "incident_photo", id=photo) == {"incident_photo_y2025m03"}
        old = _report(c, datetime(2024, 6, 1, tzinfo=UTC), lon=119.315)  # no such month made
        assert _where(c, "incident", id=old.id) == {"incident_default"}
        with pytest.raises(Conflict):  # that month can no longer be made over its rows
            parts.ensure_partitions(c, start=date(2024, 6, 1))
        assert _where(c, "incident", id=old.id) == {"incident_default"}
        # id alone still finds a case, with its history, from any month
        assert inc.get(c, first.id)["history"][0]["action"] == "report"
        tx.rollback()


def _close(c: Any, ids: list[int]) -> None:
    c.execute(text("UPDATE incident SET status = 'closed', closed_at = reported_at"
                   " WHERE id = ANY(:i)"), {"i": ids})


def test_archive_detaches_old_months_whole(db: Engine, tmp_path: Any) -> None:
    with db.begin() as c:
        parts.ensure_partitions(c, start=date(2025, 1, 1))
        feb = [_report(c, datetime(2025, 2, d, tzinfo=UTC), lon=119.301 + d * 0.0005).id
               for d in (3, 10, 20)]
        mar = [_report(c, datetime(2025, 3, d, tzinfo=UTC), lon=119.301 + d * 0.0005).id
               for d in (3, 10)]
        inc.attach_photo(c, mar[0], tiny_png(), "image/png", settings=SETTINGS)
        apr = _report(c, datetime(2025, 4, 2, tzinfo=UTC)).id
        _close(c, feb + mar)
    with pytest.raises(InvalidInput) as e:
        parts.archive(db, "2025-13")
    assert e.value.problems[0].field == "before"
    with pytest.raises(InvalidInput):
        parts.archive(db, "2999-01")
    with pytest.raises(Conflict):  # April still holds an open case: nothing detached
        parts.archive(db, "2025-05")
    with db.connect() as c:
        assert c.execute(text("SELECT count(*) FROM incident")).scalar() == 6

    done = parts.archive(db, "2025-04")
    assert [(m.month, m.incidents, m.photos) for m in done] == \
        [("2025-01", 0, 0), ("2025-02", 3, 0), ("2025-03", 2, 1)]
    with db.connect() as c:
        assert c.execute(text("SELECT count(*) FROM incident WHERE reported_at"
                              " < '2025-04-01T00:00Z'")).scalar() == 0
        assert c.execute(text("SELECT count(*) FROM incident_history WHERE incident_id"
                              " = ANY(:i)"), {"i": feb + mar}).scalar() == 0
        assert set(c.execute(text("SELECT id FROM wangge_archive.incident_y2025m02"))
                   .scalars()) == set(feb)
        assert c.execute(text("SELECT count(*) FROM wangge_archive.incident_history_y2025m03"
                              )).scalar() == 2
        assert [m["month"] for m in parts.monthly_partitions(c)][0] == "2025-04"
        for by in ("grid", "street"):  # the archived days left the daily roll-up too
            assert inc.stats(c, by=by) == inc.stats(c, by=by, rollup=False)
        assert c.execute(text("SELECT coalesce(sum(incidents), 0) FROM incident_grid_day"
                              " WHERE day < '2025-04-01'")).scalar() == 0
    with db.begin() as c:  # the service goes on: a new report, and April closed
        assert _report(c, datetime.now(UTC), lon=119.318).status == "reported"
        _close(c, [apr])

    env = {"WANGGE_DATABASE_URL": db.url.render_as_string(hide_password=False)}
    r = CliRunner().invoke(app, ["incident", "archive", "--before", "2025-05", "--dump",
                                 str(tmp_path)], env=env)
    assert r.exit_code == 0, r.output
    dump = tmp_path / "incident_y2025m04.dump"
    listing = subprocess.run([parts._pg_dump().replace("pg_dump", "pg_restore"), "--list",
                              str(dump)], capture_output=True, text=True, check=True).stdout
    for t in ("incident_y2025m04", "incident_history_y2025m04", "incident_photo_y2025m04"):
        assert f"TABLE DATA wangge_archive {t} " in listing
    with db.connect() as c:
        assert c.execute(text("SELECT to_regclass('wangge_archive.incident_y2025m04')"
                              )).scalar() is None
        assert c.execute(text("SELECT count(*) FROM incident WHERE id = :i"),
                         {"i": apr}).scalar() == 0
    r = CliRunner().invoke(app, ["incident", "archive", "--before", "25-4"], env=env)
    assert r.exit_code == 1 and "before" in r.output


def test_months_ahead_take_no_lock_when_they_exist(db: Engine) -> None:
    """The start-up step runs no DDL when the months exist: it finishes while another session
    holds ACCESS EXCLUSIVE on ``incident`` (a CREATE ... PARTITION OF would wait); a missing
    month is made by it once the lock is gone."""
    import threading

    assert parts.ensure_months_ahead(db) == 0
    holder = db.connect()
    tx = holder.begin()
    holder.execute(text("LOCK TABLE incident IN ACCESS EXCLUSIVE MODE"))
    made: list[int] = []
    t = threading.Thread(target=lambda: made.append(parts.ensure_months_ahead(db)),
                         daemon=True)
    t.start()
    t.join(10)
    finished = not t.is_alive()
    tx.rollback()
    holder.close()
    t.join(30)
    assert finished and made == [0]
    last = datetime.now(UTC).date().replace(day=1)
    for _ in range(13):  # the month after the 12 the migration made
        last = (last + timedelta(days=32)).replace(day=1)
    suffix = f"_y{last.year:04d}m{last.month:02d}"
    with db.connect() as c:
        assert parts.missing_months(c, ahead=13) == [f"incident{suffix}",
                                                     f"incident_history{suffix}",
                                                     f"incident_photo{suffix}"]
    assert parts.ensure_months_ahead(db, ahead=13) == 3
    with db.connect() as c:
        assert parts.missing_months(c, ahead=13) == []
