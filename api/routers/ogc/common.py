"""Shared plumbing of the OGC routes: links, the caller's reach, parameters, GeoJSON answers."""

from __future__ import annotations

import math
import time
from typing import Any

from fastapi import Request
from fastapi.responses import Response
from pygeofilter import ast
from sqlalchemy.engine import Connection

from api.policy import READERS, area_within, caller, scope_of
from geo.auth.service import EVERYTHING
from geo.core.errors import Forbidden, NotFound, Problem
from geo.ogc.collections import COLLECTIONS, Collection
from geo.ogc.cql import parse_filter
from geo.ogc.crs import BadParameter, Crs, district_utm, parse_crs
from geo.ogc.items import ItemQuery, extent, parse_bbox

PREFIX = "/ogc"
GEOJSON = "application/geo+json"
OPENAPI_30 = "application/vnd.oai.openapi+json;version=3.0"
MVT = "application/vnd.mapbox-vector-tile"
# parameters of the items request itself; any other parameter naming a queryable filters on it
RESERVED = {"f", "limit", "offset", "bbox", "bbox-crs", "crs", "datetime", "filter",
            "filter-lang", "filter-crs", "generation", "run", "tier", "api_key"}


def url(request: Request, path: str) -> str:
    """Absolute URL of ``path`` under the OGC prefix, on the host the client used."""
    return str(request.base_url).rstrip("/") + PREFIX + path


def link(href: str, rel: str, type_: str, title: str | None = None) -> dict[str, str]:
    out = {"href": href, "rel": rel, "type": type_}
    if title:
        out["title"] = title
    return out


def collection_for(request: Request, collection_id: str) -> Collection:
    """The collection, if it exists and the caller may read it (404 / 403 otherwise)."""
    c = COLLECTIONS.get(collection_id)
    if c is None:
        raise NotFound(f"no collection '{collection_id}'", [Problem(
            reason=f"expected one of {', '.join(COLLECTIONS)}", field="collectionId")])
    p = caller(request)
    if c.readers == "staff" and p is not None and p.kind == "user" and p.role != "admin" \
            and p.role not in READERS.roles:
        raise Forbidden(f"role '{p.role}' may not read collection '{c.id}'")
    return c


def utm_of(request: Request, conn: Connection) -> int:
    """The district's UTM EPSG code, asked once a minute per process."""
    cached = getattr(request.app.state, "ogc_utm", None)
    if cached is None or cached[1] < time.monotonic():
        cached = (district_utm(conn), time.monotonic() + 60)
        request.app.state.ogc_utm = cached
    return int(cached[0])


def _int(request: Request, name: str, default: int | None) -> int | None:
    raw = request.query_params.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError as exc:
        raise BadParameter(f"bad {name}", [Problem(reason="not an integer", field=name)]) \
            from exc
    if not -(2**31) < value < 2**31:
        raise BadParameter(f"{name} out of range", [Problem(reason="too large", field=name)])
    return value


def item_query(request: Request, conn: Connection, c: Collection,
               *, paged: bool = True) -> ItemQuery:
    """Parse and check an items (or tile) request's parameters for collection ``c``."""
    qp = request.query_params
    utm = utm_of(request, conn)
    crs = parse_crs(qp.get("crs"), utm)
    q = ItemQuery(crs=crs, within=area_within(request, None), scope=scope_of(request))
    if paged:
        q.limit = _int(request, "limit", 10) or 0
        q.offset = _int(request, "offset", 0) or 0
    if qp.get("bbox"):
        q.bbox = parse_bbox(qp["bbox"])
        q.bbox_crs = parse_crs(qp.get("bbox-crs"), utm, field="bbox-crs")
    elif qp.get("bbox-crs"):
        parse_crs(qp.get("bbox-crs"), utm, field="bbox-crs")
    q.datetime = qp.get("datetime")
    q.generation = _int(request, "generation", None)
    q.run = _int(request, "run", None)
    if qp.get("tier") is not None:
        try:
            q.tier = float(qp["tier"])
            if not math.isfinite(q.tier):
                raise ValueError(qp["tier"])
        except ValueError as exc:
            raise BadParameter("bad tier", [Problem(reason="not a number (metres)",
                                                    field="tier")]) from exc
    text_filter = qp.get("filter")
    equal = {k: v for k, v in qp.items() if k in c.properties and k not in RESERVED}
    if text_filter or equal:
        q.filter_crs = parse_crs(qp.get("filter-crs"), utm, field="filter-crs")
        node = parse_filter(text_filter, qp.get("filter-lang")) if text_filter else None
        for name, value in equal.items():  # queryables as query parameters: equality
            eq = ast.Equal(ast.Attribute(name), value)
            node = eq if node is None else ast.And(node, eq)
        q.filter = node
    return q


def geojson(body: bytes | str, crs: Crs, status: int = 200,
            headers: dict[str, str] | None = None) -> Response:
    data = body.encode() if isinstance(body, str) else body
    return Response(data, status_code=status, media_type=GEOJSON,
                    headers={"Content-Crs": f"<{crs.uri}>", **(headers or {})})


def to_openapi_30(schema: dict[str, Any]) -> dict[str, Any]:
    """An OpenAPI 3.1 document (FastAPI's) restated as 3.0: ``nullable`` instead of a null
    type, one ``example`` instead of ``examples`` in schemas."""

    def fix(node: Any) -> Any:
        if isinstance(node, list):
            return [fix(v) for v in node]
        if not isinstance(node, dict):
            return node
        out = {k: fix(v) for k, v in node.items()}
        for key in ("anyOf", "oneOf"):
            options = out.get(key)
            if isinstance(options, list) and {"type": "null"} in options:
                rest = [o for o in options if o != {"type": "null"}]
                out.pop(key)
                out["nullable"] = True
                if len(rest) == 1 and isinstance(rest[0], dict):
                    out = {**rest[0], **out} if "$ref" not in rest[0] else {
                        **out, "allOf": rest}
                else:
                    out[key] = rest
        if isinstance(out.get("examples"), list) and "schema" not in node:
            examples = out.pop("examples")
            if examples:
                out["example"] = examples[0]
        if "const" in out:
            out["enum"] = [out.pop("const")]
        if isinstance(out.get("type"), list):
            types = [t for t in out["type"] if t != "null"]
            out["type"] = types[0] if types else "string"
            out["nullable"] = True
        return out

    doc = fix(schema)
    doc["openapi"] = "3.0.3"
    doc.get("info", {}).pop("summary", None)  # 3.1 only
    return doc


def extent_of(request: Request, conn: Connection, c: Collection) -> list[float] | None:
    if c.run_kind or c.readers != "staff":
        return None  # depends on the run / the caller
    """Bounding box (CRS84) of a collection, computed once per process."""
    key = ("ogc_extent", c.id)
    cache = request.app.state.__dict__.setdefault("ogc_extents", {})
    if key not in cache:
        cache[key] = extent(conn, c, EVERYTHING)
    return cache[key]
