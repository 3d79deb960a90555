"""The per-grid daily roll-up (migration 0017, geo.incidents.rollup) gives the statistics the
raw query over ``incident`` gives: after reports over several days, every step of the loop, a
reopening, duplicates, a deletion and concurrent batches of reports from several threads."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from factories import GRID_E, GRID_W, offset, two_grid_engine
from sqlalchemy import Engine, text

from geo import incidents as inc
from geo.auth.service import Scope

SETTINGS = inc.IncidentSettings(duplicate_window_hours=2)
T0 = datetime(2026, 11, 20, 22, 30, tzinfo=UTC)  # late in a UTC day: reports straddle days
WEST, EAST = (119.305, 26.05), (119.315, 26.045)
LOOP = ("checked_in", "consulting", "in_progress", "feedback")


@pytest.fixture
def db(fresh_database: Any) -> Iterator[Engine]:
    with two_grid_engine(fresh_database(), pool_size=8) as eng:
        yield eng


def _both(c: Any, **kw: Any) -> tuple[list[dict], list[dict]]:
    return (inc.stats(c, rollup=True, **kw), inc.stats(c, rollup=False, **kw))


def _windows(now: datetime) -> list[dict[str, Any]]:
    """Whole days, parts of days at either end, a window inside one day, open windows."""
    return [{}, {"start": T0 - timedelta(days=1)}, {"end": now},
            {"start": T0 + timedelta(hours=1, minutes=17), "end": now - timedelta(hours=5)},
            {"start": T0 + timedelta(hours=2), "end": T0 + timedelta(hours=9)},
            {"start": datetime(2026, 11, 21, tzinfo=UTC), "end": datetime(2026, 11, 23,
                                                                          tzinfo=UTC)}]


def _assert_same(c: Any, now: datetime) -> int:
    """stats from the roll-up == stats from incident, for every level, window and a scope;
    how many comparisons had rows."""
    seen = 0
    for by in ("grid", "community", "street", "district", "city"):
        for w in _windows(now):
            for scope in (Scope(), Scope(area=GRID_E)):
                got, want = _both(c, by=by, now=now, scope=scope, **w)
                assert got == want, (by, w, scope)
                seen += bool(want)
    got, want = _both(c, by="grid", street="350104001", now=now)
    assert got == want
    return seen


def _rollup(c: Any) -> list[tuple]:
    return [tuple(sorted(v) if isinstance(v, list) else v for v in r) for r in c.execute(text(
        "SELECT * FROM incident_grid_day WHERE incidents > 0 ORDER BY 1, 2, 3, 4, 5")).all()]


def test_rollup_equals_raw_statistics_through_the_loop(db: Engine) -> None:
    ids = []
    with db.begin() as c:
        for k in range(14):  # 14 reports every 2 h 15 min from 22:30: three UTC days
            at = T0 + timedelta(hours=2.25 * k)
            lon, lat = offset(*(WEST if k % 3 else EAST), 100 * k % 400, 0)
            r = inc.report(c, category=("rubbish", "noise")[k % 2], lon=lon, lat=lat,
                           settings=SETTINGS, now=at)
            ids.append((r.id, at))
        twin = inc.report(c, category="rubbish", lon=WEST[0], lat=WEST[1], settings=SETTINGS,
                          now=T0 + timedelta(hours=3))
        again = inc.report(c, category="rubbish", lon=WEST[0], lat=WEST[1], settings=SETTINGS,
                           now=T0 + timedelta(hours=3, minutes=5))
        assert again.status == "duplicate" and twin.id
    now = T0 + timedelta(days=4)
    with db.begin() as c:
        for n, (i, at) in enumerate(ids):  # each case a different way along the loop
            t = at
            for s in LOOP[:n % 5]:
                t += timedelta(hours=1 + n % 4, minutes=7 * n)
                inc.transition(c, i, s, actor="d", settings=SETTINGS, now=t)
            if n % 5 == 4:
                inc.transition(c, i, "rated", actor="r", rating=(1, 4)[n // 5 % 2],
                               settings=SETTINGS, now=t + timedelta(hours=2))
                if n % 2:
                    inc.transition(c, i, "closed", actor="c", settings=SETTINGS,
                                   now=t + timedelta(hours=3))
        first = ids[4][0]  # rated 1: reopened, then rated again and closed
        inc.transition(c, first, "in_progress", actor="c", settings=SETTINGS,
                       now=T0 + timedelta(days=2))
        for s, r in (("feedback", None), ("rated", 5), ("closed", None)):
            inc.transition(c, first, s, actor="d", rating=r, settings=SETTINGS,
                           now=T0 + timedelta(days=2, hours=3))
    with db.connect() as c:
        assert _assert_same(c, now) >= 20
        raw = inc.stats(c, by="grid", now=now, rollup=False)
        assert sum(r["closed"] for r in raw) == 2 and sum(r["duplicates"] for r in raw) >= 1
        assert any(r["median_total_h"] is not None for r in raw)
    with db.begin() as c:  # a case moved to the other grid moves in the roll-up too
        c.execute(text("UPDATE incident SET grid_code = CASE grid_code WHEN :w THEN :e ELSE :w"
                       " END WHERE id = ANY(:ids)"),
                  {"w": GRID_W, "e": GRID_E, "ids": [ids[1][0], ids[3][0], ids[4][0]]})
    with db.connect() as c:
        _assert_same(c, now)
        kept = _rollup(c)
        c.execute(text("SELECT wangge_incident_rollup_rebuild()"))
        assert _rollup(c) == kept  # the trigger's table == one made from scratch
        c.rollback()


def test_concurrent_batches_keep_the_rollup_exact(db: Engine, caplog: Any) -> None:
    """Four threads file batches of reports into the same grids at once (plus transitions of
    the cases their twins link to): no batch falls back for a deadlock, no report is lost, and
    the roll-up still equals the raw statistics."""
    errors: list[BaseException] = []

    def work(seed: int) -> None:
        try:
            for b in range(6):
                batch = [dict(category=("rubbish", "noise")[(seed + j) % 2],
                              lon=p[0], lat=p[1], description=f"t{seed} b{b} r{j}")
                         for j in range(5)
                         for p in [offset(*(WEST if (seed + j + b) % 2 else EAST),
                                          20 * (seed * 4 + j * 3 + b), 0)]]
                out = inc.file_reports(db, batch, settings=SETTINGS)
                assert all(isinstance(o, inc.ReportResult) for o in out), out
                for o in out[:2]:  # a twin of a case being moved: the deadlock case
                    if o.status == "reported":
                        with db.begin() as c:
                            inc.transition(c, o.id, "checked_in", actor="d", settings=SETTINGS)
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(s,)) for s in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors[0]
    assert "deadlock" not in caplog.text
    with db.connect() as c:
        n = c.execute(text("SELECT count(*) FROM incident")).scalar_one()
        assert n == 4 * 6 * 5
        assert c.execute(text("SELECT sum(incidents) FROM incident_grid_day")).scalar_one() == n
        _assert_same(c, datetime.now(UTC) + timedelta(days=5))
        kept = _rollup(c)
        c.execute(text("SELECT wangge_incident_rollup_rebuild()"))
        assert _rollup(c) == kept
        c.rollback()
    with db.connect() as c:
        assert {r["code"] for r in inc.stats(c, by="grid")} == {GRID_W, GRID_E}
