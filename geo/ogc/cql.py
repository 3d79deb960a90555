"""CQL2 (text and JSON) filters → SQL with bind parameters (OGC API Features Part 3).

Parsing is pygeofilter's; the translation to SQL is ours because the row sources are SQL text
with generations, runs and access scopes that an ORM-model backend does not know. Attributes
must be queryables (columns of the collection, quoted identifiers from the registry, never from
the request); every literal becomes a bind parameter; geometry literals are GeoJSON, read in the
filter's CRS (``filter-crs``) by ``ST_GeomFromGeoJSON``.

Spatial predicates: ``S_INTERSECTS``, ``S_DISJOINT``, ``S_CONTAINS``, ``S_WITHIN``,
``S_TOUCHES``, ``S_CROSSES``, ``S_OVERLAPS``, ``S_EQUALS`` (PostGIS, on the stored WGS 84
geometry), and the distance predicates ``S_DWITHIN`` / ``S_BEYOND`` (not in CQL2 1.0; the
form of the CQL2 drafts and ECQL, which pygeofilter's AST has):
``S_DWITHIN(geometry, POINT(119.3 26.08), 500)`` in text, ``{"op": "s_dwithin", "args":
[{"property": "geometry"}, {"type": "Point", ...}, 500]}`` in JSON, an optional fourth argument
naming the unit (``meters``, the default; ``kilometers``, ``feet``, ``statute miles``,
``nautical miles``). Distances are on the WGS 84 spheroid (PostGIS ``geography``), in metres.
pygeofilter 0.4's CQL2 parsers lack these two: the text grammar is pygeofilter's own with one
rule added, and the JSON walk hands every other node to pygeofilter.
"""

from __future__ import annotations

import json
import os
from datetime import date, datetime
from typing import Any

import pygeofilter.parsers
from lark import Lark, v_args
from pygeofilter import ast, values
from pygeofilter.parsers.cql2_json.parser import walk_cql_json
from pygeofilter.parsers.cql2_text.parser import CQLTransformer

from geo.core.errors import Problem
from geo.ogc.crs import BadParameter, Crs, geometry_in

_COMPARE = {ast.ComparisonOp.EQ: "=", ast.ComparisonOp.NE: "<>", ast.ComparisonOp.LT: "<",
            ast.ComparisonOp.LE: "<=", ast.ComparisonOp.GT: ">", ast.ComparisonOp.GE: ">="}
_SQL_TYPE = {"string": "text", "integer": "bigint", "number": "float", "boolean": "boolean",
             "date-time": "timestamptz"}
_SPATIAL = {"INTERSECTS": "ST_Intersects", "DISJOINT": "ST_Disjoint", "CONTAINS": "ST_Contains",
            "WITHIN": "ST_Within", "TOUCHES": "ST_Touches", "CROSSES": "ST_Crosses",
            "OVERLAPS": "ST_Overlaps", "EQUALS": "ST_Equals"}
# metres in one unit of an S_DWITHIN / S_BEYOND distance
UNITS_M = {"meters": 1.0, "metres": 1.0, "m": 1.0, "kilometers": 1000.0, "km": 1000.0,
           "feet": 0.3048, "statute miles": 1609.344, "nautical miles": 1852.0}
_DISTANCE_RULE = (
    '?spatial_predicate: _distance_spatial_predicate_func "(" expression "," expression ","'
    ' expression ["," expression] ")" -> distance_spatial_predicate\n'
    '                  | _binary_spatial_predicate_func')


@v_args(meta=False, inline=True)
class _Transformer(CQLTransformer):  # type: ignore[misc]
    """pygeofilter's CQL2 text transformer, with S_DWITHIN / S_BEYOND."""

    def distance_spatial_predicate(self, op: Any, lhs: Any, rhs: Any, distance: Any,
                                   units: Any = "meters") -> ast.Node:
        cls = ast.DistanceWithin if str(op).upper() == "S_DWITHIN" else ast.DistanceBeyond
        if isinstance(units, ast.Attribute):  # a bare word: meters, kilometers...
            units = units.name
        return cls(lhs, rhs, distance, units)


def _text_parser() -> Lark:
    """pygeofilter's CQL2 text grammar plus the distance predicates (one added rule)."""
    folder = os.path.dirname(pygeofilter.parsers.__file__)
    with open(os.path.join(folder, "cql2_text", "grammar.lark"), encoding="utf-8") as f:
        grammar = f.read()
    anchor = "?spatial_predicate: _binary_spatial_predicate_func"
    assert anchor in grammar, "pygeofilter's CQL2 grammar changed"
    grammar = grammar.replace(anchor, _DISTANCE_RULE, 1) + (
        '\n!_distance_spatial_predicate_func: "S_DWITHIN"i | "S_BEYOND"i\n')
    return Lark(grammar, parser="lalr", maybe_placeholders=False, transformer=_Transformer(),
                import_paths=[folder])


_TEXT = _text_parser()


def parse_text(value: str) -> ast.Node:
    """A CQL2 text filter (with S_DWITHIN / S_BEYOND) as pygeofilter's AST."""
    return _TEXT.parse(value)


def parse_json(node: Any) -> Any:
    """A CQL2 JSON filter (with ``s_dwithin`` / ``s_beyond``) as pygeofilter's AST: logic
    and distance nodes here, every other node by pygeofilter's own walk."""
    if isinstance(node, dict) and node.get("op") in ("and", "or", "not", "s_dwithin",
                                                     "s_beyond"):
        op, args = node["op"], node.get("args")
        if not isinstance(args, list) or not args:
            raise ValueError(f"'{op}' needs a list of arguments")
        if op == "not":
            return ast.Not(parse_json(args[0]))
        if op in ("and", "or"):
            return (ast.And if op == "and" else ast.Or).from_items(
                *[parse_json(a) for a in args])
        if len(args) not in (3, 4):
            raise ValueError(f"'{op}' takes a geometry, a geometry, a distance and an "
                             "optional unit")
        cls = ast.DistanceWithin if op == "s_dwithin" else ast.DistanceBeyond
        return cls(parse_json(args[0]), parse_json(args[1]), args[2],
                   args[3] if len(args) == 4 else "meters")
    return walk_cql_json(node)


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
        if isinstance(node, ast.SpatialDistancePredicate):
            return self.distance(node)
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

    def distance(self, node: ast.SpatialDistancePredicate) -> str:
        """S_DWITHIN / S_BEYOND: ``ST_DWithin`` on geography (WGS 84 spheroid, metres). Against
        a literal, S_DWITHIN first keeps the rows in the literal's box grown by the distance
        (degrees of latitude at least 110,574 m, of longitude 111,319 m x cos(latitude)), so
        that the geometry index serves."""
        m = self.bind(self.metres(node.distance, node.units))
        lhs, rhs = self.geom(node.lhs), self.geom(node.rhs)
        within = f"ST_DWithin(geography({lhs}), geography({rhs}), {m})"
        if not isinstance(node, ast.DistanceWithin):
            return f"(NOT {within})"
        columns = (isinstance(node.lhs, ast.Attribute), isinstance(node.rhs, ast.Attribute))
        if columns not in ((True, False), (False, True)):
            return within
        column, literal = (lhs, rhs) if columns[0] else (rhs, lhs)
        lat = (f"LEAST(89.0, GREATEST(abs(ST_YMin({literal})), abs(ST_YMax({literal}))) + "
               f"{m} / 110574.0)")
        grown = (f"ST_Expand({literal}, {m} / (111319.0 * cos(radians({lat}))) * 1.01, "
                 f"{m} / 110574.0 * 1.01)")
        return f"({column} && {grown} AND {within})"

    @staticmethod
    def metres(distance: Any, units: Any) -> float:
        """An S_DWITHIN distance in metres; 400 unless a finite number >= 0 in a known unit."""
        unit = str(units).strip().lower()
        if unit not in UNITS_M:
            raise BadParameter("unknown distance unit", [Problem(
                reason=f"'{units}': use one of {', '.join(UNITS_M)}", field="filter")])
        if isinstance(distance, bool) or not isinstance(distance, int | float) \
                or not 0 <= distance < float("inf"):
            raise BadParameter("bad distance", [Problem(
                reason="the distance of S_DWITHIN / S_BEYOND is a number >= 0",
                field="filter")])
        return float(distance) * UNITS_M[unit]

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
