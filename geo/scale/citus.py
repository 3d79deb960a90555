"""The Citus plan for sharding wangge by district, as data, and its check against the schema.

Citus is not in Debian's repositories here, so the plan stays on paper (docs/operations/scale.md);
this module keeps it honest: ``check_plan`` reads the migrated schema (``information_schema``
and ``pg_constraint``) and lists what must change before ``create_distributed_table`` could
run: every table classified, the distribution column present and NOT NULL, every primary key
and unique constraint of a distributed table containing it, every foreign key between
distributed tables carrying it, and no foreign key from a reference table to a distributed one.
The monthly partitions of a partitioned table (``incident_y2026m12``...) are left out: Citus
distributes the partitioned parent and its partitions follow, so only parents are checked.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import text
from sqlalchemy.engine import Connection

DISTRIBUTION_COLUMN = "district_code"

# distributed by district_code, colocated with incident: a district's cases, their history
# and photos, their daily roll-up, its buildings and their coverage rows live in one shard group
DISTRIBUTED = ("incident", "incident_history", "incident_photo", "incident_grid_day",
               "building", "building_coverage")
# small, read everywhere, joined with the distributed tables: a copy on every node
REFERENCE = ("area", "generation", "lookup_change", "grid_team_member", "compound", "station",
             "station_kind", "incident_category", "department", "category_department",
             "analysis_run", "retired_code", "planning_change", "app_user", "api_key",
             "spatial_ref_sys")
# stay on the coordinator only (not joined with the distributed tables)
LOCAL = ("alembic_version", "service_circle", "site_suggestion", "building_move", "walk_node",
         "walk_edge", "barrier", "audit_log", "rate_counter")


@dataclass(frozen=True)
class Change:
    table: str
    kind: str  # unclassified | add_column | not_null | key | foreign_key | reference_fk
    detail: str

    def __str__(self) -> str:
        return f"{self.table}: {self.kind}: {self.detail}"


def _columns(conn: Connection) -> dict[str, dict[str, bool]]:
    rows = conn.execute(text(
        "SELECT c.table_name, c.column_name, c.is_nullable = 'YES' FROM "
        "information_schema.columns c JOIN information_schema.tables t USING "
        "(table_schema, table_name) WHERE c.table_schema = 'public' "
        "AND t.table_type = 'BASE TABLE' AND NOT (SELECT relispartition FROM pg_class "
        "WHERE oid = to_regclass(quote_ident(c.table_name)))")).all()
    out: dict[str, dict[str, bool]] = {}
    for table, column, nullable in rows:
        out.setdefault(table, {})[column] = bool(nullable)
    return out


def _constraints(conn: Connection) -> list[tuple[str, str, str, list[str], str | None]]:
    """(table, name, type p|u|f, columns, referenced table) of every public constraint."""
    rows = conn.execute(text(
        "SELECT cl.relname, co.conname, co.contype, "
        "array(SELECT a.attname FROM unnest(co.conkey) k JOIN pg_attribute a "
        "ON a.attrelid = co.conrelid AND a.attnum = k), rf.relname "
        "FROM pg_constraint co JOIN pg_class cl ON cl.oid = co.conrelid "
        "JOIN pg_namespace n ON n.oid = cl.relnamespace "
        "LEFT JOIN pg_class rf ON rf.oid = co.confrelid "
        "WHERE n.nspname = 'public' AND co.contype IN ('p', 'u', 'f') "
        "AND NOT cl.relispartition")).all()
    return [(t, name, kind, list(cols), ref) for t, name, kind, cols, ref in rows]


def check_plan(conn: Connection) -> list[Change]:
    """What the schema at ``conn`` needs before the plan can be applied on Citus."""
    columns = _columns(conn)
    planned = set(DISTRIBUTED) | set(REFERENCE) | set(LOCAL)
    changes = [Change(t, "unclassified", "not in DISTRIBUTED, REFERENCE or LOCAL")
               for t in sorted(set(columns) - planned)]
    changes += [Change(t, "missing", "planned but not in the schema")
                for t in sorted(planned - set(columns))]
    for t in DISTRIBUTED:
        cols = columns.get(t, {})
        if t in columns and DISTRIBUTION_COLUMN not in cols:
            changes.append(Change(t, "add_column", f"{DISTRIBUTION_COLUMN} varchar(6) NOT NULL "
                                  "(first 6 digits of its grid or community code)"))
        elif cols.get(DISTRIBUTION_COLUMN):
            changes.append(Change(t, "not_null", f"{DISTRIBUTION_COLUMN} is nullable"))
    for t, name, kind, key_cols, ref in sorted(_constraints(conn)):
        if t in DISTRIBUTED and kind in "pu" and DISTRIBUTION_COLUMN not in key_cols:
            changes.append(Change(t, "key", f"{name} ({', '.join(key_cols)}) must include "
                                  f"{DISTRIBUTION_COLUMN}"))
        if t in DISTRIBUTED and kind == "f" and ref in DISTRIBUTED \
                and DISTRIBUTION_COLUMN not in key_cols:
            changes.append(Change(t, "foreign_key", f"{name} ({', '.join(key_cols)}) -> {ref} "
                                  f"must carry {DISTRIBUTION_COLUMN}"))
        if t in DISTRIBUTED and kind == "f" and ref in LOCAL:
            changes.append(Change(t, "local_fk", f"{name} -> {ref}: a local table cannot be "
                                  "referenced from a distributed one"))
        if t in REFERENCE and kind == "f" and ref in DISTRIBUTED:
            changes.append(Change(t, "reference_fk", f"{name} -> {ref}: a reference table "
                                  "cannot reference a distributed one"))
    return changes
