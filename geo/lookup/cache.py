"""Loading lookup indexes from PostGIS and caching them per database and generation.

**Freshness**: every write to ``area``, ``generation`` or ``grid_team_member`` appends to
``lookup_change`` (migration 0002). The index for the current generation is rebuilt when that
log's ``(count, max id)`` differs from the one it was built at. ``locate_point`` checks on every
call (one tiny query); the HTTP layer checks at most every ``LookupSettings.check_interval_ms``.
``at=`` dates resolve with the SQL function ``generation_at`` (end of that day, China Standard
Time) and get their own cached index. Teams are the current ``grid_team_member`` rows (teams are
not versioned by generation).
"""

from __future__ import annotations

import logging
import threading
import time
import weakref
from collections import OrderedDict
from collections.abc import Callable
from datetime import date
from typing import Any, TypeVar

import orjson
from sqlalchemy import Engine, text
from sqlalchemy.engine import Connection

from geo.core.errors import InvalidInput, NotFound, Problem
from geo.lookup.city import make_index
from geo.lookup.index import LookupIndex
from geo.lookup.settings import LookupSettings

log = logging.getLogger(__name__)
T = TypeVar("T")

_AREA_SQL = (
    "SELECT level, code, parent_code, name, responsible_body, metric_srid, "
    "ST_AsBinary(geom) AS wkb FROM area "
)


def _version(conn: Connection) -> tuple[int, int, int]:
    """(count, max id) of ``lookup_change`` and the generation in force now: a scheduled
    generation coming into force changes the version, so the index rebuilds at its instant."""
    row = conn.execute(text(
        "SELECT count(*), coalesce(max(id), 0), "
        "coalesce((SELECT generation_at(clock_timestamp())), 0) FROM lookup_change")).one()
    return int(row[0]), int(row[1]), int(row[2])


def _team(conn: Connection) -> dict[str, list[dict[str, Any]]]:
    """Each grid's team (role, name, phone), aggregated in SQL: one row per grid."""
    rows = conn.execute(text(
        "SELECT grid_code, json_agg(json_build_object('role', role, 'name', name, "
        "'phone', phone) ORDER BY role, id)::text FROM grid_team_member GROUP BY grid_code"
    )).all()
    return {code: orjson.loads(members) for code, members in rows}


def build_index(conn: Connection, *, generation: int | None = None,
                settings: LookupSettings | None = None,
                previous: LookupIndex | None = None) -> LookupIndex:
    """Build the index of the generation in force now (``generation=None``) or of ``generation``;
    ``previous`` (the index it replaces) lets a small change patch its lattice."""
    settings = settings or LookupSettings()
    version = _version(conn)
    if generation is None:  # the generation in force now (a scheduled one is not yet)
        generation = version[2] or None
    rows: list[Any] = []
    gen: int | None = None
    if generation is not None:
        rows = list(conn.execute(text(
            _AREA_SQL + "WHERE generation_low <= :g "
            "AND (generation_high IS NULL OR generation_high >= :g)"), {"g": generation}).all())
        gen = generation
    return make_index(rows, _team(conn), generation=gen, version=version, settings=settings,
                      previous=previous)


class _DbCache:
    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.current: LookupIndex | None = None
        self.checked_at = 0.0
        self.dated: OrderedDict[int, LookupIndex] = OrderedDict()
        self.dates: dict[str, int] = {}
        self.dates_version: Any = None
        self.building = False
        self.forced = False
        self.invalidations = 0


_CACHES: dict[str, _DbCache] = {}
_CACHES_LOCK = threading.Lock()


def invalidate_index(*, keep_previous: bool = True) -> None:
    """Make the next lookup rebuild. With ``keep_previous`` the current index stays the base
    of that rebuild (a small change patches it) and answers until then; else it is dropped."""
    with _CACHES_LOCK:
        if not keep_previous:
            _CACHES.clear()
            return
        for cache in _CACHES.values():
            with cache.lock:
                cache.forced = True
                cache.invalidations += 1
                cache.checked_at = float("-inf")
                cache.dates.clear()
                cache.dated.clear()


_ENGINE_KEYS: weakref.WeakKeyDictionary[Engine, str] = weakref.WeakKeyDictionary()


def _cache_for(bind: Connection | Engine) -> _DbCache:
    eng = bind.engine
    key = _ENGINE_KEYS.get(eng)
    if key is None:  # rendering the URL costs ~10 us: once per engine
        key = _ENGINE_KEYS[eng] = eng.url.render_as_string(hide_password=True)
    cache = _CACHES.get(key)
    if cache is None:
        with _CACHES_LOCK:
            cache = _CACHES.setdefault(key, _DbCache())
    return cache


def _with_conn(bind: Connection | Engine, fn: Callable[[Connection], T]) -> T:
    if isinstance(bind, Connection):
        return fn(bind)
    with bind.connect() as conn:
        return fn(conn)


def _refresh_in_background(engine: Engine, cache: _DbCache,
                           settings: LookupSettings | None) -> None:
    """Check the version, and rebuild if it changed (or the index was invalidated), in a
    thread; the current index keeps answering. Call with ``cache.lock`` held."""
    def run() -> None:
        try:
            with cache.lock:
                seen = cache.invalidations
                base, forced = cache.current, cache.forced
            with engine.connect() as conn:
                version = _version(conn)
                fresh = base is not None and not forced and base.version == version
                index = base if fresh else build_index(conn, settings=settings, previous=base)
            with cache.lock:
                if cache.current is base:  # else a synchronous refresh installed a newer one
                    cache.current = index
                if cache.invalidations == seen:  # else invalidated meanwhile: check again
                    cache.forced = False
                    cache.checked_at = time.monotonic()
        except Exception as exc:  # the old index answers meanwhile
            log.warning("lookup index refresh failed: %s", str(exc).splitlines()[0][:200])
            with cache.lock:  # retried after the next interval, not on the next request
                cache.checked_at = time.monotonic()
        finally:
            cache.building = False

    cache.building = True
    threading.Thread(target=run, name="lookup-index-refresh", daemon=True).start()


def get_index(bind: Connection | Engine, *, at: date | str | None = None,
              max_staleness_ms: float = 0.0, background: bool = False,
              settings: LookupSettings | None = None) -> LookupIndex:
    """The cached index of the current generation, or of the one valid on date ``at``.

    The version is re-read when the last check is older than ``max_staleness_ms`` (0: always);
    a changed version rebuilds. ``bind`` is a Connection (used as is) or an Engine (a connection
    is opened only when the database must be read). With ``background`` (and an Engine), the
    version check and any rebuild run in a thread while the previous index keeps answering
    (the HTTP service does this: its event loop never waits on the database, and a new
    generation never stalls it).
    """
    cache = _cache_for(bind)  # settings stay None unless a build needs them (they cost ~2 ms)
    now = time.monotonic()
    idx = cache.current
    if at is None and idx is not None and (now - cache.checked_at) * 1000 < max_staleness_ms:
        return idx
    if at is None and idx is not None and background and isinstance(bind, Engine):
        # even the version check runs in a thread: the caller (an HTTP worker's event loop)
        # never waits on the database
        with cache.lock:
            if not cache.building:
                _refresh_in_background(bind, cache, settings)
        return idx

    def refresh(conn: Connection) -> LookupIndex:
        with cache.lock:
            version = _version(conn)
            if at is None:
                current = cache.current
                if current is None or cache.forced or current.version != version:
                    current = cache.current = build_index(conn, settings=settings,
                                                          previous=current)
                    cache.forced = False
                cache.checked_at = time.monotonic()
                return current
            day = parse_date(at)
            if cache.dates_version != version:
                cache.dates.clear()
                cache.dated.clear()
                cache.dates_version = version
            gen = cache.dates.get(day)
            if gen is None:
                gen = conn.execute(text(
                    "SELECT generation_at(((CAST(:d AS date) + 1)::timestamp "
                    "AT TIME ZONE 'Asia/Shanghai') - interval '1 microsecond')"), {"d": day}
                ).scalar()
                if gen is None:
                    raise NotFound(f"no boundary generation was in force on {day}",
                                   [Problem(reason=f"no generation valid on {day}", field="at")])
                cache.dates[day] = int(gen)
            index = cache.dated.get(gen)
            if index is None:
                index = build_index(conn, generation=gen, settings=settings)
                cache.dated[gen] = index
                while len(cache.dated) > index.settings.cached_generations:
                    cache.dated.popitem(last=False)
            cache.dated.move_to_end(gen)
            return index

    return _with_conn(bind, refresh)


def parse_date(at: date | str) -> str:
    """``at`` as YYYY-MM-DD, else InvalidInput naming the field ``at``."""
    if isinstance(at, date):
        return at.isoformat()
    try:
        return date.fromisoformat(str(at).strip()).isoformat()
    except ValueError as exc:
        raise InvalidInput(f"bad date {at!r}",
                           [Problem(reason="not a date in YYYY-MM-DD form", field="at")]) from exc

