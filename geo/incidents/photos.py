"""Photos of a case (bytes in the database), optionally tied to one history step."""

from __future__ import annotations

from sqlalchemy import text
from sqlalchemy.engine import Connection

from geo.auth.service import EVERYTHING, Scope
from geo.core.errors import (
    InvalidInput,
    NotFound,
    PayloadTooLarge,
    Problem,
)
from geo.incidents.cases import (
    in_scope,
    lock_case,
)
from geo.incidents.settings import IncidentSettings


def attach_photo(conn: Connection, incident_id: int, data: bytes, content_type: str, *,
                 settings: IncidentSettings, history_id: int | None = None,
                 scope: Scope = EVERYTHING) -> int:
    """Store a photo (bytes) for a case, optionally for one history step (e.g. 反馈)."""
    if len(data) > settings.photo_max_bytes:
        raise PayloadTooLarge(
            f"photo of {len(data)} bytes exceeds the limit of {settings.photo_max_bytes}",
            [Problem(reason="too large", field="photo",
                     detail={"limit": settings.photo_max_bytes})])
    if not data:
        raise InvalidInput("empty photo", [Problem(reason="no bytes", field="photo")])
    if not content_type.startswith("image/"):
        raise InvalidInput("a photo must be an image",
                           [Problem(reason=f"content type {content_type}", field="photo")])
    lock_case(conn, incident_id, scope)
    if history_id is not None:
        ok = conn.execute(text("SELECT 1 FROM incident_history WHERE id = :h AND"
                               " incident_id = :i"), {"h": history_id, "i": incident_id}).first()
        if not ok:
            raise NotFound(f"history entry {history_id} is not part of incident {incident_id}")
    return int(conn.execute(
        text("INSERT INTO incident_photo (incident_id, incident_reported_at, history_id,"
             " content_type, size_bytes, data) SELECT i.id, i.reported_at, :h, :ct, :s, :d"
             " FROM incident i WHERE i.id = :i RETURNING id"),
        {"i": incident_id, "h": history_id, "ct": content_type, "s": len(data), "d": data},
    ).scalar_one())


def get_photo(conn: Connection, incident_id: int, photo_id: int, *,
              scope: Scope = EVERYTHING) -> tuple[bytes, str]:
    """A photo's bytes and content type; refused for a case outside ``scope``."""
    in_scope(conn, incident_id, scope)
    row = conn.execute(text("SELECT data, content_type FROM incident_photo WHERE id = :p"
                            " AND incident_id = :i"), {"p": photo_id, "i": incident_id}).first()
    if row is None:
        raise NotFound(f"photo {photo_id} of incident {incident_id} does not exist")
    return bytes(row.data), row.content_type
