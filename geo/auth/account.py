"""A user's own account: change the password, and residents registering themselves."""

from __future__ import annotations

from sqlalchemy import text
from sqlalchemy.engine import Connection

from geo.auth.service import AuthSettings, authenticate, create_user, hash_password
from geo.core.errors import InvalidInput, Problem, Unauthenticated


def change_password(conn: Connection, username: str, old: str, new: str, *,
                    settings: AuthSettings) -> None:
    """Replace ``username``'s password after checking the old one (401 if wrong); the new one
    must be long enough and differ from the old (422 naming the field). Tokens already issued
    stay valid until they expire (``jwt_ttl_minutes``)."""
    try:
        authenticate(conn, username, old)
    except Unauthenticated as exc:
        raise InvalidInput("the current password is wrong",
                           [Problem(field="old_password", reason="不正确")]) from exc
    problems = []
    if len(new) < settings.min_password_length:
        problems.append(Problem(field="new_password",
                                reason=f"shorter than {settings.min_password_length} characters"))
    if new == old:
        problems.append(Problem(field="new_password", reason="same as the current password"))
    if problems:
        raise InvalidInput("cannot change the password", problems)
    conn.execute(text("UPDATE app_user SET password_hash = :h WHERE username = :u"),
                 {"h": hash_password(new), "u": username})


def register_resident(conn: Connection, username: str, password: str, *,
                      settings: AuthSettings) -> int:
    """A resident's own account (role resident, no area): the new user's id. 409 if taken."""
    return create_user(conn, username, password, "resident", settings=settings)
