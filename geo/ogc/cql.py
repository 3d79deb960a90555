"""CQL2 (text and JSON) filters → SQL with bind parameters (OGC API Features Part 3).

Parsing is pygeofilter's; the translation to SQL is ours because the row sources are SQL text
with generations, runs and access scopes that an ORM-model backend does not know. Attributes
must be queryables (columns of the collection, quoted identifiers from the registry, never from
the request); every literal becomes a bind parameter; geometry literals are GeoJSON, read in the
filter's CRS (``filter-crs``) by ``ST_GeomFromGeoJSON``.
"""

from __future__ import annotations

import json
from datetime import date, datetime
from typing import Any

from pygeofilter import ast, values
from pygeofilter.parsers.cql2_json import parse as parse_json
from pygeofilter.parsers.cql2_text import parse as parse_text

from geo.core.errors import Problem
from geo.ogc.crs import BadParameter, Crs, geometry_in

_COMPARE = {ast.ComparisonOp.EQ: "=", ast.ComparisonOp.NE: "<>", ast.ComparisonOp.LT: "<",
            ast.ComparisonOp.LE: "<=", ast.ComparisonOp.GT: ">", ast.ComparisonOp.GE: ">="}
_SQL_TYPE = {"string": "text", "integer": "bigint", "number": "float", "boolean": "boolean",
             "date-time": "timestamptz"}
_SPATIAL = {"INTERSECTS": "ST_Intersects", "DISJOINT": "ST_Disjoint", "CONTAINS": "ST_Contains",
            "WITHIN": "ST_Within", "TOUCHES": "ST_Touches", "CROSSES": "ST_Crosses",
            "OVERLAPS": "ST_Overlaps", "EQUALS": "ST_Equals"}


def parse_filter(value: str | dict[str, Any], lang: str | None) -> ast.Node:
    """Parse a filter in ``cql2-text`` (default for strings) or ``cql2-json``; 400 if bad."""
    lang = "cql2-text" if lang == "cql-text" else lang  # the draft's name (GDAL 3.6 sends it)
    lang = lang or ("cql2-json" if isinstance(value, dict) or str(value).lstrip()
                    .startswith("{") else "cql2-text")
    if lang not in ("cql2-text", "cql2-json"):
        raise BadParameter("unsupported filter-lang", [Problem(
            reason="expected cql2-text or cql2-json", field="filter-lang")])
    try:
        if lang == "cql2-json":
            return parse_json(value if isinstance(value, dict) else json.loads(value))
        return parse_text(str(value))
    except Exception as exc:  # lark and json errors: the caller's filter, not a server fault
        reason = str(exc).splitlines()[0][:300] or type(exc).__name__
        raise BadParameter("filter does not parse", [Problem(reason=reason, field="filter")]) \
            from exc


class SqlFilter:
    """Translate a parsed CQL2 filter on ``columns`` ({queryable: SQL column}) to SQL."""

    def __init__(self, columns: dict[str, str], types: dict[str, str], crs: Crs,
                 params: dict[str, Any], geometry: str = "t.geom") -> None:
        self.columns = columns
        self.types = types
        self.crs = crs
        self.params = params
        self.geometry = geometry

    def bind(self, value: Any) -> str:
        key = f"f{len(self.params)}"
        while key in self.params:
            key += "_"
        self.params[key] = value
        return f":{key}"

    def sql(self, node: Any) -> str:  # noqa: C901 - one branch per node type
        if isinstance(node, ast.Not):
            return f"(NOT {self.sql(node.sub_node)})"
        if isinstance(node, ast.Combination):
            op = "AND" if node.op == ast.CombinationOp.AND else "OR"
            return f"({self.sql(node.lhs)} {op} {self.sql(node.rhs)})"
        if isinstance(node, ast.Comparison):
            t = self.type_of(node.lhs) or self.type_of(node.rhs)
            return f"({self.value(node.lhs, t)} {_COMPARE[node.op]} {self.value(node.rhs, t)})"
        if isinstance(node, ast.Between):
            neg = "NOT " if node.not_ else ""
            t = self.type_of(node.lhs)
            return (f"({self.value(node.lhs, t)} {neg}BETWEEN {self.value(node.low, t)} "
                    f"AND {self.value(node.high, t)})")
        if isinstance(node, ast.Like):
            op = "ILIKE" if node.nocase else "LIKE"
            neg = "NOT " if node.not_ else ""
            pattern = str(node.pattern)
            if node.wildcard != "%":
                pattern = pattern.replace(node.wildcard, "%")
            if node.singlechar != "_":
                pattern = pattern.replace(node.singlechar, "_")
            return f"(CAST({self.value(node.lhs)} AS text) {neg}{op} {self.bind(pattern)})"
        if isinstance(node, ast.In):
            neg = "NOT " if node.not_ else ""
            t = self.type_of(node.lhs)
            items = ", ".join(self.value(v, t) for v in node.sub_nodes)
            return f"({self.value(node.lhs, t)} {neg}IN ({items}))"
        if isinstance(node, ast.IsNull):
            neg = " NOT" if node.not_ else ""
            return f"({self.value(node.lhs)} IS{neg} NULL)"
        if isinstance(node, ast.SpatialComparisonPredicate):
            fn = _SPATIAL.get(node.op.name)
            if fn is None:
                raise self.unsupported(node.op.name)
            return f"{fn}({self.geom(node.lhs)}, {self.geom(node.rhs)})"
        if isinstance(node, ast.BBox):
            env = (f"ST_MakeEnvelope({self.bind(float(node.minx))}, {self.bind(float(node.miny))}"
                   f", {self.bind(float(node.maxx))}, {self.bind(float(node.maxy))})")
            return f"ST_Intersects({self.geom(node.lhs)}, {geometry_in(env, self.crs)})"
        if isinstance(node, ast.TemporalPredicate):
            ops = {"TimeAfter": ">", "TimeBefore": "<", "TimeEquals": "="}
            comparison = ops.get(type(node).__name__)
            if comparison is None:
                raise self.unsupported(type(node).__name__)
            t = self.type_of(node.lhs)
            return f"({self.value(node.lhs, t)} {comparison} {self.value(node.rhs, t)})"
        if isinstance(node, bool | ast.Attribute):
            return self.value(node)
        raise self.unsupported(type(node).__name__)

    def type_of(self, node: Any) -> str | None:
        """SQL type of an attribute operand (literals compared with it are cast to it)."""
        if isinstance(node, ast.Attribute) and node.name in self.types:
            return _SQL_TYPE[self.types[node.name]]
        return None

    def value(self, node: Any, as_type: str | None = None) -> str:
        if as_type is not None and isinstance(node, str | int | float | datetime | date) \
                and not isinstance(node, bool):
            text_value = node.isoformat() if isinstance(node, date) else node
            return f"CAST({self.bind(text_value)} AS {as_type})"
        if isinstance(node, ast.Attribute):
            if node.name not in self.columns:
                raise BadParameter("unknown queryable", [Problem(
                    reason=f"'{node.name}' is not a queryable; use one of "
                    f"{', '.join(sorted(self.columns))}", field="filter")])
            return self.columns[node.name]
        if isinstance(node, ast.Arithmetic):
            op = {"ADD": "+", "SUB": "-", "MUL": "*", "DIV": "/"}[node.op.name]
            return f"({self.value(node.lhs)} {op} {self.value(node.rhs)})"
        if isinstance(node, bool):
            return f"CAST({self.bind(node)} AS boolean)"
        if isinstance(node, int | float):
            return f"CAST({self.bind(node)} AS {'bigint' if isinstance(node, int) else 'float'})"
        if isinstance(node, str):
            return f"CAST({self.bind(node)} AS text)"
        if isinstance(node, datetime):
            return f"CAST({self.bind(node.isoformat())} AS timestamptz)"
        if isinstance(node, date):
            return f"CAST({self.bind(node.isoformat())} AS date)"
        raise self.unsupported(type(node).__name__)

    def geom(self, node: Any) -> str:
        if isinstance(node, ast.Attribute):
            if node.name not in ("geometry", "geom"):
                raise BadParameter("spatial operand is not the geometry", [Problem(
                    reason=f"'{node.name}' is not a geometry; use 'geometry'", field="filter")])
            return self.geometry
        if isinstance(node, values.Geometry):
            literal = f"ST_GeomFromGeoJSON({self.bind(json.dumps(node.geometry))})"
            return geometry_in(literal, self.crs)
        if isinstance(node, ast.Function) and node.name.lower() == "bbox" \
                and len(node.arguments) in (4, 6) \
                and all(isinstance(a, int | float) for a in node.arguments):
            a = [float(v) for v in node.arguments]
            x0, y0, x1, y1 = (a[0], a[1], a[2], a[3]) if len(a) == 4 else (a[0], a[1], a[3], a[4])
            env = (f"ST_MakeEnvelope({self.bind(x0)}, {self.bind(y0)}, {self.bind(x1)}, "
                   f"{self.bind(y1)})")
            return geometry_in(env, self.crs)
        if isinstance(node, values.Envelope):
            env = (f"ST_MakeEnvelope({self.bind(float(node.x1))}, {self.bind(float(node.y1))}, "
                   f"{self.bind(float(node.x2))}, {self.bind(float(node.y2))})")
            return geometry_in(env, self.crs)
        raise self.unsupported(type(node).__name__)

    @staticmethod
    def unsupported(what: str) -> BadParameter:
        return BadParameter("unsupported filter expression", [Problem(
            reason=f"{what} is not supported", field="filter")])
