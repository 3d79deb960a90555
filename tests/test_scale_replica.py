"""A real streaming hot standby of a real embedded primary (geo/core/replica.py), in a state
directory of its own: the standby follows the primary and refuses writes; with synchronous
replication the primary is stopped mid-burst, the standby promoted, and every acknowledged
report is there exactly once."""

from __future__ import annotations

import threading
import time
import uuid

import pytest
from factories import seeded_cluster
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from geo import incidents as inc
from geo.core import embedded, replica
from geo.core.db import make_engine, resolve_read_url


@pytest.fixture(scope="module")
def cluster():
    with seeded_cluster("replica") as settings:
        yield settings


def _report(eng, token: str) -> int:
    with eng.begin() as c:  # the commit is the acknowledgement
        return inc.report(c, category="rubbish", lon=119.33, lat=26.02, description=token,
                          settings=inc.IncidentSettings(), actor="burst").id


def test_standby_follows_and_refuses_writes(cluster):
    sb = replica.create_standby(cluster, synchronous=False)
    assert sb.running and sb.port != embedded.status(cluster).port
    assert resolve_read_url(cluster) == replica.standby_url(cluster)
    [state] = replica.replication_state(cluster)
    assert state["name"] == replica.STANDBY_NAME and state["state"] == "streaming"
    primary = make_engine(embedded.url(cluster))
    standby = make_engine(replica.standby_url(cluster))
    try:
        token = uuid.uuid4().hex
        rid = _report(primary, token)
        replica.wait_caught_up(cluster, timeout=10)
        with standby.connect() as c:
            assert c.execute(text("SELECT pg_is_in_recovery()")).scalar() is True
            row = c.execute(text("SELECT description, grid_code FROM incident WHERE id = :i"),
                            {"i": rid}).one()
            assert row.description == token
            with pytest.raises(DBAPIError, match="read-only"):
                c.execute(text("DELETE FROM incident"))
    finally:
        primary.dispose()
        standby.dispose()


def test_synchronous_failover_keeps_every_acknowledged_report(cluster):
    replica.create_standby(cluster)
    replica.set_synchronous(cluster, True)
    assert replica.replication_state(cluster)[0]["sync_state"] == "sync"
    eng = make_engine(embedded.url(cluster), pool_size=4)
    acked: list[str] = []
    sent: list[str] = []
    lock = threading.Lock()
    stop = threading.Event()

    def burst() -> None:
        while not stop.is_set():
            token = f"burst-{uuid.uuid4().hex}"
            with lock:
                sent.append(token)
            try:
                _report(eng, token)
            except DBAPIError:
                time.sleep(0.05)  # the primary is gone: no acknowledgement
                continue
            with lock:
                acked.append(token)

    threads = [threading.Thread(target=burst) for _ in range(4)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 30
    while len(acked) < 30 and time.monotonic() < deadline:
        time.sleep(0.05)
    embedded.stop(cluster, mode="immediate")  # the primary's loss, mid-burst
    stop.set()
    for t in threads:
        t.join(30)
    eng.dispose()
    assert len(acked) >= 30, len(acked)
    t0 = time.monotonic()
    st = replica.promote(cluster)
    failover_s = time.monotonic() - t0
    assert st.running and failover_s < 60
    new = make_engine(embedded.url(cluster))  # the same URL: the service follows
    try:
        with new.connect() as c:
            assert c.execute(text("SELECT pg_is_in_recovery()")).scalar() is False
            counts = dict(c.execute(text(
                "SELECT description, count(*) FROM incident WHERE description LIKE 'burst-%' "
                "GROUP BY description")).all())
        with new.begin() as c:  # the promoted primary takes writes (waits for no standby)
            c.execute(text("SELECT 1"))
        assert _report(new, "after-failover") > 0
    finally:
        new.dispose()
    assert all(counts.get(t) == 1 for t in acked), [t for t in acked if counts.get(t) != 1]
    assert set(counts) <= set(sent) and all(v == 1 for v in counts.values())
