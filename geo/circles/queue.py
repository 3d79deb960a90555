"""Long analyses run in the background, with ``analysis_run`` as their queue.

A request inserts a ``queued`` row and answers at once (202). A runner thread (one per engine
in each service process) claims the oldest waiting run under a session-level PostgreSQL
advisory lock, marks it ``running`` and computes it in a transaction of its own, reporting
``progress`` (0-1) and ``heartbeat_at`` through a second, autocommit connection (the run's row
is only written by the computing transaction when it finishes, so the two never wait on each
other). The result rows and ``done`` commit together; a domain error marks the run ``failed``
with the reason in ``summary.error``.

Why the table and not a job library: the run row already holds the parameters, the status and
the results' key, so the queue is that row; a restart loses nothing. If the process dies, its
transaction rolls back and its advisory lock is released with its session, so the next runner
finds the run ``running`` but unlocked and computes it again from the start.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from typing import Any

from sqlalchemy import Engine, text
from sqlalchemy.engine import Connection

from geo.circles.runs import CircleSettings
from geo.core.errors import WanggeError

log = logging.getLogger(__name__)

LOCK_KEY = 20_251_120  # advisory lock class of analysis runs (with the run id)
MAX_FAILURES = 30  # consecutive failed polls (~1 min) before a runner thread gives up


def enqueue(conn: Connection, kind: str, params: dict[str, Any],
            requested_by: str | None = None) -> int:
    """Insert a queued run of ``kind`` with the request's ``params``; its id."""
    return int(conn.execute(
        text("INSERT INTO analysis_run (kind, params, status, requested_by)"
             " VALUES (:k, CAST(:p AS jsonb), 'queued', :who) RETURNING id"),
        {"k": kind, "p": json.dumps(params), "who": requested_by},
    ).scalar_one())


def _compute(conn: Connection, settings: CircleSettings, kind: str, params: dict[str, Any],
             run_id: int, progress: Callable[[float], None]) -> None:
    from geo.circles.build import build_circles
    from geo.circles.coverage import run_coverage
    from geo.circles.siting import run_siting

    if kind == "circles":
        build_circles(conn, settings, tiers_m=params.get("tiers_m"), clip=params.get("clip"),
                      station_ids=params.get("station_ids"), run_id=run_id,
                      on_progress=progress)
    elif kind == "coverage":
        run_coverage(conn, settings, circles_run_id=params.get("circles_run_id"),
                     tier_m=params.get("tier_m"), method=params.get("method"), run_id=run_id,
                     on_progress=progress)
    elif kind == "siting":
        run_siting(conn, settings, k=int(params.get("k", 5)),
                   coverage_run_id=params.get("coverage_run_id"), tier_m=params.get("tier_m"),
                   kind=params.get("kind"), run_id=run_id, on_progress=progress)
    else:
        raise ValueError(f"unknown analysis kind {kind!r}")


def run_next(engine: Engine, settings: CircleSettings) -> int | None:
    """Claim and compute the oldest waiting run (queued, or running with no live runner);
    its id, or None when nothing waits."""
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as lock:
        waiting = lock.execute(text(
            "SELECT id, kind, params FROM analysis_run WHERE status IN ('queued', 'running')"
            " ORDER BY id LIMIT 50")).all()
        claimed = None
        for rid, kind, params in waiting:
            if lock.execute(text("SELECT pg_try_advisory_lock(:c, :id)"),
                            {"c": LOCK_KEY, "id": int(rid) % 2**31}).scalar():
                # another runner may have finished it between the read and the lock
                still = lock.execute(text(
                    "UPDATE analysis_run SET status = 'running', progress = 0,"
                    " started_at = clock_timestamp(), heartbeat_at = clock_timestamp()"
                    " WHERE id = :id AND status IN ('queued', 'running') RETURNING id"),
                    {"id": rid}).first()
                if still:
                    claimed = (int(rid), kind, params)
                    break
                lock.execute(text("SELECT pg_advisory_unlock(:c, :id)"),
                             {"c": LOCK_KEY, "id": int(rid) % 2**31})
        if claimed is None:
            return None
        rid, kind, params = claimed

        def progress(fraction: float) -> None:
            lock.execute(text(
                "UPDATE analysis_run SET progress = :f, heartbeat_at = clock_timestamp()"
                " WHERE id = :id AND status = 'running'"),
                {"f": round(min(max(float(fraction), 0.0), 0.99), 3), "id": rid})

        error: dict[str, Any] | None = None
        try:
            with engine.begin() as conn:
                _compute(conn, settings, kind, params or {}, rid, progress)
        except WanggeError as e:
            error = {"error": str(e), "problems": [
                {"field": getattr(p, "field", None), "reason": getattr(p, "reason", str(p))}
                for p in getattr(e, "problems", []) or []]}
        except Exception:
            log.exception("analysis run %s failed", rid)
            error = {"error": "internal error while computing the run (see the service log)"}
        if error is not None:
            lock.execute(text(
                "UPDATE analysis_run SET status = 'failed', finished_at = clock_timestamp(),"
                " summary = CAST(:s AS jsonb) WHERE id = :id"),
                {"s": json.dumps(error, ensure_ascii=False), "id": rid})
        lock.execute(text("SELECT pg_advisory_unlock(:c, :id)"),
                     {"c": LOCK_KEY, "id": rid % 2**31})
        return rid


class Runner:
    """A daemon thread computing waiting runs one after another; ``wake()`` after enqueuing."""

    def __init__(self, engine: Engine, settings: CircleSettings, poll_s: float = 2.0) -> None:
        self.engine, self.settings, self.poll_s = engine, settings, poll_s
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="analysis-runner", daemon=True)
        self._thread.start()

    def wake(self) -> None:
        self._wake.set()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout=30)

    def _loop(self) -> None:
        failures = 0
        while not self._stop.is_set():
            try:
                rid = run_next(self.engine, self.settings)
                failures = 0
            except Exception:
                failures += 1
                log.warning("analysis runner: could not reach the database (%d)", failures,
                            exc_info=failures == 1)
                if failures >= MAX_FAILURES:  # gone for good (runner_for starts a new one)
                    return
                rid = None
            if rid is None:
                self._wake.wait(self.poll_s)
                self._wake.clear()


_runners: dict[int, Runner] = {}
_lock = threading.Lock()


def stop_runner(engine: Engine) -> None:
    """Stop ``engine``'s runner, if any (after the run it is computing)."""
    with _lock:
        r = _runners.pop(id(engine), None)
    if r is not None:
        r.stop()


def runner_for(engine: Engine, settings: CircleSettings) -> Runner:
    """The one runner of ``engine`` in this process (started on first use)."""
    with _lock:
        r = _runners.get(id(engine))
        if r is None or r.engine is not engine or not r._thread.is_alive():
            r = _runners[id(engine)] = Runner(engine, settings)
        return r


def check_request(conn: Connection, settings: CircleSettings, kind: str,
                  params: dict[str, Any]) -> dict[str, Any]:
    """Refuse (domain errors, before anything is queued) what a run would refuse at once, and
    resolve the defaults that depend on the data now (the latest circles / coverage run)."""
    from geo.circles.build import check_clip, check_tiers
    from geo.circles.runs import get_run, latest_run
    from geo.core.errors import InvalidInput, Problem

    p = dict(params)
    if kind == "circles":
        p["tiers_m"] = check_tiers(p.get("tiers_m") or settings.circle_tiers_m)
        p["clip"] = check_clip(p.get("clip") if p.get("clip") is not None
                               else settings.circle_clip)
    elif kind == "coverage":
        method = p.get("method") or ("circles" if p.get("circles_run_id")
                                     else settings.coverage_method)
        tier = float(p.get("tier_m") or settings.coverage_tier_m)
        p.update(method=method, tier_m=tier)
        if method == "circles":
            cr = p.get("circles_run_id") or latest_run(conn, "circles")
            run = get_run(conn, cr, "circles")
            if tier not in [float(t) for t in run["params"].get("tiers_m", [])]:
                raise InvalidInput(f"circles run {cr} has no {tier} m tier", [Problem(
                    f"choose one of {run['params'].get('tiers_m')}", field="tier_m")])
            p["circles_run_id"] = cr
    elif kind == "siting":
        cov = p.get("coverage_run_id") or latest_run(conn, "coverage")
        run = get_run(conn, cov, "coverage")
        p["coverage_run_id"] = cov
        kinds = run["params"].get("kinds")
        if p.get("kind") is not None and (kinds is None or p["kind"] not in kinds):
            raise InvalidInput("unknown kind", [Problem(
                f"one of {kinds}" if kinds else "a kind needs a distance coverage run",
                field="kind")])
    return p
