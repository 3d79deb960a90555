"""Accounts, roles, API keys and area scopes. Passwords hashed with argon2 (argon2-cffi).

API keys are random 32-byte tokens; only their SHA-256 is stored (they are high-entropy, so a
fast hash is enough and keeps per-request checks cheap). Tokens for users are JWTs (PyJWT).
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import jwt
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerifyMismatchError
from pydantic import Field
from sqlalchemy import text
from sqlalchemy.engine import Connection

from geo.errors import Conflict, InvalidInput, Problem, Unauthenticated
from geo.settings import WanggeSettings

ROLES = ("resident", "grid_worker", "department_staff", "planner", "commander", "admin")
_hasher = PasswordHasher()


class AuthSettings(WanggeSettings):
    """Tokens and limits."""

    jwt_secret: str = Field(
        default_factory=lambda: secrets.token_hex(32),
        description="HMAC secret for JWTs. Unset: random per process (tokens die on restart).",
    )
    jwt_ttl_minutes: int = Field(default=60, description="Lifetime of an access token (minutes).")
    min_password_length: int = Field(default=10, description="Shortest password accepted.")
    api_key_cache_seconds: float = Field(
        default=30.0,
        description="How long a verified API key is trusted without asking the database (s).",
    )
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

    def covers(self, code: str | None) -> bool:
        """True if the area ``code`` lies within this principal's scope (codes nest by prefix)."""
        if self.role == "admin" or (self.role and self.area_code is None):
            return True
        return bool(code) and bool(self.area_code) and code.startswith(self.area_code)


ANONYMOUS = Principal(kind="anonymous", name="anonymous")


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
) -> int:
    """Create a user; returns its id. Refuses unknown roles, short passwords, taken names."""
    problems = []
    if role not in ROLES:
        problems.append(Problem(field="role", reason=f"unknown role; one of {', '.join(ROLES)}"))
    if len(password) < settings.min_password_length:
        problems.append(Problem(
            field="password", reason=f"shorter than {settings.min_password_length} characters"))
    if problems:
        raise InvalidInput("cannot create user", problems)
    taken = conn.execute(text("SELECT 1 FROM app_user WHERE username = :u"), {"u": username})
    if taken.first():
        raise Conflict("cannot create user",
                       [Problem(field="username", reason=f"'{username}' is taken")])
    return conn.execute(
        text(
            "INSERT INTO app_user (username, password_hash, role, area_code, department_id)"
            " VALUES (:u, :h, :r, :a, :d) RETURNING id"
        ),
        {"u": username, "h": hash_password(password), "r": role, "a": area_code,
         "d": department_id},
    ).scalar_one()


def authenticate(conn: Connection, username: str, password: str) -> Principal:
    """Check a username and password; raise Unauthenticated if they do not match."""
    row = conn.execute(
        text("SELECT id, password_hash, role, area_code, department_id FROM app_user"
             " WHERE username = :u AND active"),
        {"u": username},
    ).first()
    try:
        if row is None or not _hasher.verify(row.password_hash, password):
            raise Unauthenticated("wrong username or password")
    except (VerifyMismatchError, InvalidHashError) as exc:
        raise Unauthenticated("wrong username or password") from exc
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
        "iat": now,
        "exp": now + timedelta(minutes=settings.jwt_ttl_minutes),
    }
    return jwt.encode(claims, settings.jwt_secret, algorithm="HS256")


def principal_from_token(token: str, settings: AuthSettings) -> Principal:
    try:
        claims = jwt.decode(token, settings.jwt_secret, algorithms=["HS256"])
    except jwt.PyJWTError as exc:
        raise Unauthenticated(f"invalid token: {exc}") from exc
    return Principal("user", claims["sub"], claims.get("role"), claims.get("area"),
                     claims.get("dep"), (), claims.get("uid"))


def _key_hash(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def create_api_key(
    conn: Connection, name: str, *, scopes: tuple[str, ...] = ("lookup", "open311"),
    rate_per_minute: int = 6000,
) -> str:
    """Create an API key for a system; returns the key itself (shown once, stored hashed)."""
    key = "wg_" + secrets.token_urlsafe(32)
    conn.execute(
        text("INSERT INTO api_key (name, key_prefix, key_hash, scopes, rate_per_minute)"
             " VALUES (:n, :p, :h, :s, :r)"),
        {"n": name, "p": key[:10], "h": _key_hash(key), "s": list(scopes), "r": rate_per_minute},
    )
    return key


def principal_from_api_key(conn: Connection, key: str) -> tuple[Principal, int]:
    """The system behind an API key and its rate limit (requests per minute)."""
    row = conn.execute(
        text("SELECT name, scopes, rate_per_minute FROM api_key"
             " WHERE key_hash = :h AND revoked_at IS NULL"),
        {"h": _key_hash(key)},
    ).first()
    if row is None:
        raise Unauthenticated("unknown or revoked API key")
    return Principal("api_key", row.name, scopes=tuple(row.scopes)), row.rate_per_minute
