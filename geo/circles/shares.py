"""Station-kind shares: for each kind, the share of communities and of streets holding one,
against the targets of the settings, for the whole dataset or per city / district (issue 16)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import text
from sqlalchemy.engine import Connection

from geo.circles.runs import CircleSettings
from geo.core.codes import LEVEL_LENGTHS

# Communities and streets of the current generation, each with the kinds its communities hold.
# A station belongs to its ``community_code``, or, lacking one, to the community it lies in.
# ``:n`` is the length of the area code rows are grouped by (0: one group for everything).
SHARES_SQL = text(
    """
    WITH comm AS (
        SELECT code FROM area_current WHERE level = 'community'
    ), street AS (
        SELECT code FROM area_current WHERE level = 'street'
    ), have AS (
        SELECT DISTINCT s.kind, coalesce(s.community_code, a.code) AS community
        FROM station s LEFT JOIN area_current a
          ON s.community_code IS NULL AND a.level = 'community'
         AND ST_Intersects(a.geom, s.location)
    ), c AS (
        SELECT left(comm.code, :n) AS area, k.code AS kind,
               count(*) FILTER (WHERE h.community IS NOT NULL) AS with_kind, count(*) AS total
        FROM comm CROSS JOIN station_kind k
        LEFT JOIN have h ON h.kind = k.code AND h.community = comm.code
        GROUP BY 1, 2
    ), st AS (
        SELECT left(street.code, :n) AS area, k.code AS kind,
               count(*) FILTER (WHERE EXISTS (
                   SELECT 1 FROM have h WHERE h.kind = k.code
                      AND left(h.community, length(street.code)) = street.code)) AS with_kind,
               count(*) AS total
        FROM street CROSS JOIN station_kind k
        GROUP BY 1, 2
    )
    SELECT coalesce(c.area, st.area) AS area, coalesce(c.kind, st.kind) AS kind,
           coalesce(c.with_kind, 0) AS communities_with, coalesce(c.total, 0) AS communities,
           coalesce(st.with_kind, 0) AS streets_with, coalesce(st.total, 0) AS streets
    FROM c FULL JOIN st ON st.area = c.area AND st.kind = c.kind
    ORDER BY 1, 2
    """
)


def _share(part: int, whole: int) -> float | None:
    return round(part / whole, 4) if whole else None


def kind_shares(conn: Connection, settings: CircleSettings,
                per: str | None = None) -> list[dict[str, Any]]:
    """Per station kind (and per ``area`` code when ``per`` is ``"city"`` or ``"district"``):
    communities and streets holding one, their shares, and whether the targets are met."""
    n = 0 if per is None else LEVEL_LENGTHS[per]
    out = []
    for r in conn.execute(SHARES_SQL, {"n": n}).mappings():
        c, s = int(r["communities"]), int(r["streets"])
        cs, ss = _share(int(r["communities_with"]), c), _share(int(r["streets_with"]), s)
        item: dict[str, Any] = {} if per is None else {"area": r["area"]}
        item.update({
            "kind": r["kind"], "communities_with": int(r["communities_with"]), "communities": c,
            "community_share": cs, "streets_with": int(r["streets_with"]), "streets": s,
            "street_share": ss,
        })
        target = settings.kind_targets.get(r["kind"], {})
        if target:
            item["community_target"] = target.get("community")
            item["street_target"] = target.get("street")
            item["meets_targets"] = bool(
                (cs or 0) >= target.get("community", 0) and (ss or 0) >= target.get("street", 0)
            )
        out.append(item)
    return out


def kind_shares_summary(conn: Connection, settings: CircleSettings) -> dict[str, Any]:
    """The shares for a coverage run's summary: overall, per city and per district."""
    return {
        "kind_shares": kind_shares(conn, settings),
        "kind_shares_by_city": kind_shares(conn, settings, per="city"),
        "kind_shares_by_district": kind_shares(conn, settings, per="district"),
    }
