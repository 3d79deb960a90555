"""Accounts, roles, API keys and area scopes. Passwords hashed with argon2 (argon2-cffi).

API keys are random 32-byte tokens; only their SHA-256 is stored (they are high-entropy, so a
fast hash is enough and keeps per-request checks cheap). Tokens for users are JWTs (PyJWT).
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import geopandas as gpd
import jwt
import pandas as pd
import shapely
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerifyMismatchError
from pydantic import Field
from sqlalchemy import text
from sqlalchemy.engine import Connection

from geo.auth.accounts import password_problems
from geo.core import audit
from geo.core.errors import Conflict, Forbidden, InvalidInput, Problem, Unauthenticated
from geo.core.settings import WanggeSettings
from geo.data.crs import to_wgs84
from geo.data.validate import AREA_LEVELS, LAYERS

ROLES = ("resident", "grid_worker", "department_staff", "planner", "commander", "admin")
KEY_ROLES = ("grid_worker", "planner", "commander")
_hasher = PasswordHasher()
# Verified when the username is unknown or disabled, so that the answer takes as long as for a
# known user with a wrong password (the time no longer tells which usernames exist).
_DUMMY_HASH = _hasher.hash(secrets.token_hex(16))


class AuthSettings(WanggeSettings):
    """Tokens and limits."""

    jwt_secret: str | None = Field(
        default=None,
        description="HMAC secret for JWTs. Unset: made once into the state directory "
        "(WANGGE_STATE_DIR/jwt_secret), so every worker and restart shares it.",
    )
    jwt_ttl_minutes: int = Field(default=60, description="Lifetime of an access token (minutes).")
    min_password_length: int = Field(default=10, description="Shortest password accepted.")
    api_key_cache_seconds: float = Field(
        default=30.0,
        description="How long a verified API key is trusted without asking the database (s).",
    )
    login_window_seconds: int = Field(
        default=900, description="Window in which failed sign-ins are counted (s).")
    login_failures_per_account: int = Field(
        default=5, description="Failed sign-ins to one account per window before 429.")
    login_failures_per_address: int = Field(
        default=50, description="Failed sign-ins from one client address per window before "
        "429.")
    user_rate_per_minute: int = Field(
        default=1200, description="Requests per minute of one signed-in user (bearer token).")
    resident_rate_per_minute: int = Field(
        default=120, description="Requests per minute of one resident account.")
    user_cache_seconds: float = Field(
        default=5.0, description="How long a token's account state (active, revoked) is "
        "trusted without asking the database (s); a disable in this worker acts at once.")
    enforce_access: bool = Field(
        default=True,
        description="Enforce the access policy (api/policy.py). Only tests of other concerns "
        "switch it off.",
    )


@dataclass(frozen=True)
class Principal:
    """Who is calling: a user (with role and scope) or a system with an API key."""

    kind: str  # "user" | "api_key" | "anonymous"
    name: str
    role: str | None = None
    area_code: str | None = None
    department_id: int | None = None
    scopes: tuple[str, ...] = ()
    user_id: int | None = None
    issued_at: float | None = None  # a token's iat (POSIX seconds)

    def covers(self, code: str | None) -> bool:
        """True if the area ``code`` lies within this principal's scope (codes nest by prefix)."""
        if self.role == "admin" or (self.role and self.area_code is None):
            return True
        return bool(code and self.area_code and code.startswith(self.area_code))


ANONYMOUS = Principal(kind="anonymous", name="anonymous")


@dataclass(frozen=True)
class Scope:
    """The rows a caller may reach, applied in SQL by the ``geo`` read and write functions.

    Each set field narrows (they combine with AND); ``Scope()`` reaches everything.
    ``area``: an area code; rows whose grid code starts with it. ``department_id``: rows routed
    to that department. ``reporter_user_id``: rows that user reported; such a caller is told a
    row outside the scope does not exist (404), so that the existence of others' reports does
    not leak, where other callers get 403.
    """

    area: str | None = None
    department_id: int | None = None
    reporter_user_id: int | None = None

    @property
    def everything(self) -> bool:
        return self.area is None and self.department_id is None and self.reporter_user_id is None

    @property
    def hides(self) -> bool:
        """Rows outside this scope are answered as missing (404), not forbidden (403)."""
        return self.reporter_user_id is not None


EVERYTHING = Scope()


def code_range(prefix: str) -> tuple[str, str | None]:
    """``[low, high)`` bounds of the codes starting with the digit string ``prefix``.

    ``code >= low AND code < high`` selects exactly those codes in byte (and digit) order and,
    unlike ``LIKE prefix || '%'``, is served by a plain btree index under any collation.
    ``high`` is None for an all-nines prefix (no upper bound needed beyond the prefix test).
    """
    if not prefix.isdigit():
        raise InvalidInput("an area code is digits",
                           [Problem(reason=f"'{prefix}' is not a digit string", field="area")])
    if set(prefix) == {"9"}:
        return prefix, None
    return prefix, str(int(prefix) + 1).zfill(len(prefix))


def code_prefix_sql(column: str, prefix: str, params: dict[str, Any], key: str = "prefix") -> str:
    """SQL condition "``column`` starts with ``prefix``" as an index-friendly range; binds
    ``key_lo``/``key_hi`` into ``params``. ``column`` is a fixed identifier, never input."""
    low, high = code_range(prefix)
    params[f"{key}_lo"] = low
    if high is None:
        return f"{column} >= :{key}_lo"
    params[f"{key}_hi"] = high
    return f"{column} >= :{key}_lo AND {column} < :{key}_hi"


# Roles that work in an area: the schema requires their area_code (app_user_scoped_roles_have_area).
AREA_ROLES = ("grid_worker", "planner", "commander")


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def create_user(
    conn: Connection,
    username: str,
    password: str,
    role: str,
    *,
    area_code: str | None = None,
    department_id: int | None = None,
    settings: AuthSettings,
    actor: str | None = None,
) -> int:
    """Create a user; returns its id. Refuses (422) unknown roles, short passwords, a scoped
    role (grid worker, planner, commander) without an area, department staff without a
    department, unknown departments; taken names (409). Audited (``actor``: who created it;
    never the password)."""
    problems = []
    if role not in ROLES:
        problems.append(Problem(field="role", reason=f"unknown role; one of {', '.join(ROLES)}"))
    problems += password_problems(password, username, settings.min_password_length)
    if role in AREA_ROLES and area_code is None:
        problems.append(Problem(field="area_code", reason=f"a {role} works in an area: give one"))
    if role == "department_staff" and department_id is None:
        problems.append(Problem(field="department_id", reason="department staff need one"))
    if department_id is not None and conn.execute(
            text("SELECT 1 FROM department WHERE id = :d"), {"d": department_id}).first() is None:
        problems.append(Problem(field="department_id", reason=f"no department {department_id}"))
    if problems:
        raise InvalidInput("cannot create user", problems)
    taken = conn.execute(text("SELECT 1 FROM app_user WHERE username = :u"), {"u": username})
    if taken.first():
        raise Conflict("cannot create user",
                       [Problem(field="username", reason=f"'{username}' is taken")])
    uid = int(conn.execute(
        text(
            "INSERT INTO app_user (username, password_hash, role, area_code, department_id)"
            " VALUES (:u, :h, :r, :a, :d) RETURNING id"
        ),
        {"u": username, "h": hash_password(password), "r": role, "a": area_code,
         "d": department_id},
    ).scalar_one())
    audit.record(conn, actor, "user.create", target=username,
                 detail={"id": uid, "role": role, "area_code": area_code,
                         "department_id": department_id})
    return uid


def authenticate(conn: Connection, username: str, password: str) -> Principal:
    """Check a username and password; raise Unauthenticated if they do not match."""
    row = conn.execute(
        text("SELECT id, password_hash, role, area_code, department_id FROM app_user"
             " WHERE username = :u AND active"),
        {"u": username},
    ).first()
    try:
        ok: bool = _hasher.verify(row.password_hash if row is not None else _DUMMY_HASH, password)
    except (VerifyMismatchError, InvalidHashError):
        ok = False
    if row is None or not ok:
        raise Unauthenticated("wrong username or password")
    return Principal("user", username, row.role, row.area_code, row.department_id, (), row.id)


def issue_token(principal: Principal, settings: AuthSettings) -> str:
    """A signed JWT (HS256) carrying the user's role and scope."""
    now = datetime.now(UTC)
    claims = {
        "sub": principal.name,
        "uid": principal.user_id,
        "role": principal.role,
        "area": principal.area_code,
        "dep": principal.department_id,
        "iat": now.timestamp(),  # sub-second: a token made after a revocation is valid
        "exp": now + timedelta(minutes=settings.jwt_ttl_minutes),
    }
    return jwt.encode(claims, _secret(settings), algorithm="HS256")


def _secret(settings: AuthSettings) -> str:
    if not settings.jwt_secret:
        raise Unauthenticated("no JWT secret configured (WANGGE_JWT_SECRET)")
    return settings.jwt_secret


def principal_from_token(token: str, settings: AuthSettings) -> Principal:
    try:
        claims = jwt.decode(token, _secret(settings), algorithms=["HS256"])
    except jwt.PyJWTError as exc:
        raise Unauthenticated(f"invalid token: {exc}") from exc
    return Principal("user", claims["sub"], claims.get("role"), claims.get("area"),
                     claims.get("dep"), (), claims.get("uid"), claims.get("iat"))


def _key_hash(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def new_api_key() -> tuple[str, str]:
    """A new key and the hash that is stored of it."""
    key = "wg_" + secrets.token_urlsafe(32)
    return key, _key_hash(key)


def create_api_key(
    conn: Connection, name: str, *, scopes: tuple[str, ...] = ("lookup", "open311"),
    rate_per_minute: int = 6000, role: str | None = None, area_code: str | None = None,
    actor: str | None = None,
) -> str:
    """Create an API key for a system; returns the key itself (shown once, stored hashed).
    Audited (``actor``; the key itself never).

    With ``role`` (grid_worker, planner, commander; ``area_code`` required) the key acts as a
    user of that role scoped to that area, e.g. an analyst's GIS client reading layers.
    Refuses (409) a name that another key already has."""
    if role is not None and role not in KEY_ROLES:
        raise InvalidInput("cannot create API key", [Problem(
            field="role", reason=f"a key may carry one of {', '.join(KEY_ROLES)}")])
    if role is not None and not area_code:
        raise InvalidInput("cannot create API key", [Problem(
            field="area_code", reason="a key with a role needs an area code")])
    key, hashed = new_api_key()
    made = conn.execute(
        text("INSERT INTO api_key (name, key_prefix, key_hash, scopes, rate_per_minute, role,"
             " area_code) VALUES (:n, :p, :h, :s, :r, :role, :area)"
             " ON CONFLICT (name) DO NOTHING RETURNING id"),
        {"n": name, "p": key[:10], "h": hashed, "s": list(scopes), "r": rate_per_minute,
         "role": role, "area": area_code if role else None},
    ).first()
    if made is None:
        raise Conflict("cannot create API key",
                       [Problem(field="name", reason=f"a key named '{name}' exists")])
    audit.record(conn, actor, "api_key.create", target=name,
                 detail={"scopes": list(scopes), "rate_per_minute": rate_per_minute,
                         "key_prefix": key[:10]})
    return key


def principal_from_api_key(conn: Connection, key: str) -> tuple[Principal, int]:
    """The system behind an API key and its rate limit (requests per minute). A key with a
    role is a user of that role (kind ``user``, named ``key:NAME``) in its area."""
    row = conn.execute(
        text("SELECT name, scopes, rate_per_minute, role, area_code FROM api_key"
             " WHERE key_hash = :h AND revoked_at IS NULL"),
        {"h": _key_hash(key)},
    ).first()
    if row is None:
        raise Unauthenticated("unknown or revoked API key")
    if row.role:
        return (Principal("user", f"key:{row.name}", row.role, row.area_code,
                          scopes=tuple(row.scopes)), row.rate_per_minute)
    return Principal("api_key", row.name, scopes=tuple(row.scopes)), row.rate_per_minute


# ---------------------------------------------------------------- layers scoped by area

# The area-code column that places each layer's features in an area; the others (walk_edge,
# barrier) are placed by geometry.
LAYER_AREA_COLUMN = {**{level: "code" for level in AREA_LEVELS}, "grid_team": "grid_code",
                     "building": "grid_code", "station": "community_code",
                     "compound": "community_code"}
_LAYER_TABLE = {"grid_team": "grid_team_member"}
_SHOWN_PER_LAYER = 20


def refuse_import_outside(conn: Connection, layers: dict[str, gpd.GeoDataFrame],
                          area: str) -> None:
    """Refuse (403) an import, by a caller scoped to ``area``, that reaches beyond the area.

    Every feature must lie in the area: its area code (``LAYER_AREA_COLUMN``) starts with
    ``area`` or, without one, its geometry meets the current area. And since an import
    replaces a whole layer (``geo.data.store.write_layers``), the layer must not now hold features
    outside the area. Collects every problem (at most 20 features named per layer), raises once.
    """
    row = conn.execute(text("SELECT ST_AsBinary(ST_Union(geom)) AS g FROM area_current"
                            " WHERE code = :a"), {"a": area}).first()
    region = shapely.from_wkb(bytes(row.g)) if row and row.g is not None else None
    problems: list[Problem] = []
    for name, gdf in layers.items():
        if name not in LAYERS:
            continue  # not a layer of the contract: the import refuses it by name
        column = LAYER_AREA_COLUMN.get(name)
        codes = (gdf[column].astype("string") if column in gdf.columns
                 else pd.Series(pd.NA, index=gdf.index, dtype="string"))
        inside = codes.str.startswith(area).fillna(False).astype(bool)
        uncoded = (codes.isna() | (codes.str.len() == 0)).fillna(True).astype(bool)
        if uncoded.any() and isinstance(gdf, gpd.GeoDataFrame) and region is not None:
            geoms = to_wgs84(name, gdf).geometry[uncoded].to_numpy()
            inside[uncoded] = shapely.intersects(region, geoms)
        outside = list(gdf.index[~inside.to_numpy()])
        for idx in outside[:_SHOWN_PER_LAYER]:
            problems.append(Problem(reason=f"outside your area {area}",
                                    field=column if column and not uncoded[idx] else "geometry",
                                    feature=f"{name}[{idx}]"))
        if len(outside) > _SHOWN_PER_LAYER:
            problems.append(Problem(reason=f"{len(outside)} features outside your area {area}",
                                    field="layer", feature=name))
        if _holds_outside(conn, name, area):
            problems.append(Problem(
                reason=f"an import replaces the whole '{name}' layer, which holds features "
                "outside your area; an admin imports it, or use the planning operations",
                field="layer", feature=name))
    if problems:
        raise Forbidden(f"the import reaches outside your area {area}; nothing was written",
                        problems)


def _holds_outside(conn: Connection, layer: str, area: str) -> bool:
    """True if the stored ``layer`` has a feature outside ``area`` (what an import replaces)."""
    params: dict[str, Any] = {"a": area, "level": layer}
    column = LAYER_AREA_COLUMN.get(layer)
    if layer in AREA_LEVELS:
        source = "area_current t"
        where = f"level = :level AND NOT ({code_prefix_sql('code', area, params)})"
    elif column:
        source = f"{_LAYER_TABLE.get(layer, layer)} t"
        where = f"{column} IS NULL OR NOT ({code_prefix_sql(column, area, params)})"
    else:
        source = f"{layer} t"
        where = ("NOT EXISTS (SELECT 1 FROM area_current w WHERE w.code = :a"
                 " AND ST_Intersects(w.geom, t.geom))")
    return bool(conn.execute(text(f"SELECT EXISTS (SELECT 1 FROM {source} WHERE {where})"),
                             params).scalar())
