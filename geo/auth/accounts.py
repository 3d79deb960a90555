"""Managing accounts and keys: password policy, list, disable, revoke, rotate; the JWT secret.

Disabling an account or revoking its tokens sets ``tokens_valid_after``: every token issued
before that instant is refused (``token_still_valid``). A revoked key stops at once in this
process and, in other workers, when their key cache expires (``api_key_cache_seconds``).
"""

from __future__ import annotations

import os
import secrets
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import text
from sqlalchemy.engine import Connection

from geo.core.errors import InvalidInput, NotFound, Problem

MAX_PASSWORD_LENGTH = 256
MIN_DISTINCT_CHARACTERS = 4


def password_problems(password: str, username: str, min_length: int) -> list[Problem]:
    """What is wrong with ``password`` under the policy: at least ``min_length`` and at most
    ``MAX_PASSWORD_LENGTH`` characters, at least ``MIN_DISTINCT_CHARACTERS`` different ones
    (not 'aaaaaaaaaa'), and not the username."""
    problems = []
    if len(password) < min_length:
        problems.append(Problem(field="password", reason=f"shorter than {min_length} characters"))
    if len(password) > MAX_PASSWORD_LENGTH:
        problems.append(Problem(field="password",
                                reason=f"longer than {MAX_PASSWORD_LENGTH} characters"))
    if len(set(password)) < MIN_DISTINCT_CHARACTERS:
        problems.append(Problem(field="password", reason="fewer than "
                                f"{MIN_DISTINCT_CHARACTERS} different characters"))
    if username and username.lower() == password.lower():
        problems.append(Problem(field="password", reason="is the username"))
    return problems


def list_users(conn: Connection) -> list[dict[str, Any]]:
    """Every account (never its password hash), by username."""
    rows = conn.execute(text(
        "SELECT id, username, role, area_code, department_id, active, created_at, disabled_at,"
        " tokens_valid_after FROM app_user ORDER BY username")).mappings().all()
    return [dict(r) for r in rows]


def set_active(conn: Connection, username: str, active: bool) -> dict[str, Any]:
    """Disable (and revoke every token of) or re-enable an account; 404 if unknown."""
    row = conn.execute(text(
        "UPDATE app_user SET active = :a,"
        " disabled_at = CASE WHEN :a THEN NULL ELSE clock_timestamp() END,"
        " tokens_valid_after = CASE WHEN :a THEN tokens_valid_after ELSE clock_timestamp() END"
        " WHERE username = :u RETURNING id, username, active"),
        {"a": active, "u": username}).mappings().first()
    if row is None:
        raise NotFound(f"no user '{username}'")
    return dict(row)


def revoke_tokens(conn: Connection, username: str) -> dict[str, Any]:
    """Refuse every token issued to ``username`` so far (they sign in again)."""
    row = conn.execute(text(
        "UPDATE app_user SET tokens_valid_after = clock_timestamp() WHERE username = :u"
        " RETURNING id, username, tokens_valid_after"), {"u": username}).mappings().first()
    if row is None:
        raise NotFound(f"no user '{username}'")
    return dict(row)


def user_state(conn: Connection, user_id: int) -> tuple[bool, float | None]:
    """(active, tokens_valid_after as a POSIX time) of an account; (False, None) if gone."""
    row = conn.execute(text("SELECT active, tokens_valid_after FROM app_user WHERE id = :i"),
                       {"i": user_id}).first()
    if row is None:
        return False, None
    after: datetime | None = row.tokens_valid_after
    return bool(row.active), after.timestamp() if after else None


def token_still_valid(issued_at: float | None, active: bool, valid_after: float | None) -> bool:
    if not active:
        return False
    return valid_after is None or (issued_at is not None and issued_at > valid_after)


def list_api_keys(conn: Connection) -> list[dict[str, Any]]:
    """Every key: name, prefix (the key's first characters), scopes, role, state."""
    rows = conn.execute(text(
        "SELECT name, key_prefix, scopes, role, area_code, rate_per_minute, created_at,"
        " rotated_at, revoked_at FROM api_key ORDER BY name")).mappings().all()
    return [{**dict(r), "scopes": list(r["scopes"])} for r in rows]


def revoke_api_key(conn: Connection, name: str) -> dict[str, Any]:
    row = conn.execute(text(
        "UPDATE api_key SET revoked_at = coalesce(revoked_at, clock_timestamp())"
        " WHERE name = :n RETURNING name, revoked_at"), {"n": name}).mappings().first()
    if row is None:
        raise NotFound(f"no API key '{name}'")
    return dict(row)


def rotate_api_key(conn: Connection, name: str, new_key: str, new_hash: str) -> dict[str, Any]:
    """Give key ``name`` a new value (the old one stops); refused for a revoked key."""
    row = conn.execute(text(
        "UPDATE api_key SET key_prefix = :p, key_hash = :h, rotated_at = clock_timestamp()"
        " WHERE name = :n AND revoked_at IS NULL RETURNING name, scopes, role"),
        {"n": name, "p": new_key[:10], "h": new_hash}).mappings().first()
    if row is None:
        raise NotFound(f"no active API key '{name}'")
    return {"name": row["name"], "api_key": new_key, "scopes": list(row["scopes"]),
            "role": row["role"]}


def state_dir_secret(state_dir: Path) -> str:
    """The JWT signing secret kept in ``state_dir/jwt_secret`` (mode 0600), made once: every
    worker (and every restart) on this state directory signs with the same secret."""
    path = state_dir / "jwt_secret"
    try:
        state_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        pass
    except OSError as exc:
        raise InvalidInput(f"cannot keep the JWT secret in {state_dir}: {exc.strerror}; set "
                           "WANGGE_JWT_SECRET", [Problem(field="WANGGE_STATE_DIR",
                                                         reason=str(exc.strerror))]) from None
    else:
        with os.fdopen(fd, "w") as fh:
            fh.write(secrets.token_hex(32) + "\n")
    for _ in range(50):  # another worker may be writing it this instant
        value = path.read_text().strip()
        if value:
            return value
        time.sleep(0.02)
    raise InvalidInput(f"{path} is empty; delete it or set WANGGE_JWT_SECRET")
