"""Per-grid daily roll-up of the cases: ``incident_grid_day``, kept by a trigger on ``incident``.

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-02

One row per (street, UTC day of ``reported_at``, grid, community, district) with what the
statistics read (geo.incidents.rollup): counts (cases, open, closed, duplicates), the ratings
(sum, how many, how many >= 4) and, for the exact medians, the hours of each step of every
case of that day as arrays (``checkin_h`` = checked_in_at - reported_at, ... ``total_h`` =
closed_at - reported_at of the closed ones; NULL steps left out), computed with the same
expressions as the raw query, so the roll-up gives the same numbers.

* ``wangge_incident_rollup()``: an AFTER INSERT/UPDATE/DELETE row trigger on the partitioned
  ``incident`` (cloned onto every partition, also those made later): the old row's share is
  taken away and the new row's added, in the case's own transaction (an UPDATE that changes
  none of the columns read does nothing). A code absent is stored as '' (a key column).
* ``wangge_incident_rollup_rebuild()``: the table made again from ``incident`` (after a bulk
  load that attached filled partitions: ATTACH fires no trigger); the migration runs it.
* ``wangge_array_cat(float8[])``: an aggregate concatenating arrays (a grid's step hours over
  the days asked for, whose median is then one sort of that grid's values).
* Rows whose cases all went (archive) keep ``incidents = 0`` until a rebuild: readers skip them.
"""

from alembic import op

revision = "0017"
down_revision = "0016"
branch_labels = None
depends_on = None

STEPS = {  # array column -> the raw query's expression (geo.incidents.queries._STEP_MEDIANS)
    "checkin_h": "date_part('epoch', {r}.checked_in_at - {r}.reported_at) / 3600",
    "consult_h": "date_part('epoch', {r}.consulting_at - {r}.checked_in_at) / 3600",
    "carry_out_h": "date_part('epoch', {r}.in_progress_at - {r}.consulting_at) / 3600",
    "feedback_h": "date_part('epoch', {r}.feedback_at - {r}.in_progress_at) / 3600",
    "rating_h": "date_part('epoch', {r}.rated_at - {r}.feedback_at) / 3600",
    "total_h": "CASE WHEN {r}.status = 'closed' THEN date_part('epoch', {r}.closed_at"
               " - {r}.reported_at) / 3600 END",
}
KEYS = ("street_code", "day", "grid_code", "community_code", "district_code")
READ = ("status", "rating", "reported_at", "checked_in_at", "consulting_at", "in_progress_at",
        "feedback_at", "rated_at", "closed_at", "grid_code", "community_code", "street_code",
        "district_code")


def _key_values(r: str) -> str:
    return (f"coalesce({r}.street_code, ''), ({r}.reported_at AT TIME ZONE 'UTC')::date,"
            f" coalesce({r}.grid_code, ''), coalesce({r}.community_code, ''),"
            f" coalesce({r}.district_code, '')")


def _key_match(r: str) -> str:
    return (f"t.street_code = coalesce({r}.street_code, '')"
            f" AND t.day = ({r}.reported_at AT TIME ZONE 'UTC')::date"
            f" AND t.grid_code = coalesce({r}.grid_code, '')"
            f" AND t.community_code = coalesce({r}.community_code, '')"
            f" AND t.district_code = coalesce({r}.district_code, '')")


def _counts(r: str) -> str:
    return (f"1, ({r}.status NOT IN ('closed', 'duplicate'))::int, ({r}.status = 'closed')::int,"
            f" ({r}.status = 'duplicate')::int, coalesce({r}.rating, 0),"
            f" ({r}.rating IS NOT NULL)::int, coalesce({r}.rating >= 4, false)::int")


COUNTS = ("incidents", "open", "closed", "duplicates", "rating_sum", "rating_n", "satisfied_n")

TRIGGER_FUNCTION = f"""
CREATE FUNCTION wangge_incident_rollup() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'UPDATE' AND ({', '.join('OLD.' + c for c in READ)})
            IS NOT DISTINCT FROM ({', '.join('NEW.' + c for c in READ)}) THEN
        RETURN NULL;
    END IF;
    IF TG_OP IN ('UPDATE', 'DELETE') THEN
        UPDATE incident_grid_day t SET
            {', '.join(f'{c} = t.{c} - x.{c}' for c in COUNTS)},
            {', '.join(f'{a} = wangge_array_less(t.{a}, {e.format(r="OLD")})'
                       for a, e in STEPS.items())}
        FROM (SELECT {_counts('OLD')}) AS x({', '.join(COUNTS)})
        WHERE {_key_match('OLD')};
    END IF;
    IF TG_OP IN ('INSERT', 'UPDATE') THEN
        INSERT INTO incident_grid_day AS t ({', '.join(KEYS)}, {', '.join(COUNTS)},
                                            {', '.join(STEPS)})
        VALUES ({_key_values('NEW')}, {_counts('NEW')},
                {', '.join(f"array_remove(ARRAY[{e.format(r='NEW')}], NULL)"
                           for e in STEPS.values())})
        ON CONFLICT ({', '.join(KEYS)}) DO UPDATE SET
            {', '.join(f'{c} = t.{c} + excluded.{c}' for c in COUNTS)},
            {', '.join(f'{a} = t.{a} || excluded.{a}' for a in STEPS)};
    END IF;
    RETURN NULL;
END $$
"""

REBUILD_FUNCTION = f"""
CREATE FUNCTION wangge_incident_rollup_rebuild() RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
    made bigint;
BEGIN
    LOCK TABLE incident_grid_day IN ACCESS EXCLUSIVE MODE;
    DELETE FROM incident_grid_day;
    INSERT INTO incident_grid_day ({', '.join(KEYS)}, {', '.join(COUNTS)}, {', '.join(STEPS)})
    SELECT k.street_code, k.day, k.grid_code, k.community_code, k.district_code,
           {', '.join(f'sum(x.{c})' for c in COUNTS)},
           {', '.join(f"coalesce(array_agg(s.{a}) FILTER (WHERE s.{a} IS NOT NULL), '{{}}')"
                      for a in STEPS)}
    FROM incident i
    CROSS JOIN LATERAL (SELECT {_key_values('i')}) AS k({', '.join(KEYS)})
    CROSS JOIN LATERAL (SELECT {_counts('i')}) AS x({', '.join(COUNTS)})
    CROSS JOIN LATERAL (SELECT {', '.join(e.format(r='i') for e in STEPS.values())})
        AS s({', '.join(STEPS)})
    GROUP BY 1, 2, 3, 4, 5;
    GET DIAGNOSTICS made = ROW_COUNT;
    RETURN made;
END $$
"""

ARRAY_LESS = """
CREATE FUNCTION wangge_array_less(a float8[], v float8) RETURNS float8[]
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE WHEN v IS NULL OR array_position(a, v) IS NULL THEN a
                ELSE a[1:array_position(a, v) - 1] || a[array_position(a, v) + 1:] END
$$
"""


ARRAY_CAT = ("CREATE AGGREGATE wangge_array_cat(float8[]) (sfunc = array_cat,"
             " stype = float8[], initcond = '{}')")


def upgrade() -> None:
    op.execute(f"""
        CREATE TABLE incident_grid_day (
            street_code text NOT NULL,
            day date NOT NULL,
            grid_code text NOT NULL,
            community_code text NOT NULL,
            district_code text NOT NULL,
            {', '.join(f'{c} bigint NOT NULL DEFAULT 0' for c in COUNTS)},
            {', '.join(f"{a} float8[] NOT NULL DEFAULT '{{}}'" for a in STEPS)},
            PRIMARY KEY ({', '.join(KEYS)})
        )""")
    op.execute("COMMENT ON TABLE incident_grid_day IS 'per-grid daily roll-up of incident "
               "(UTC day of reported_at), kept by the trigger incident_rollup (migration 0017)'")
    op.execute("CREATE INDEX ix_incident_grid_day_day ON incident_grid_day (day)")
    op.execute(ARRAY_LESS)
    op.execute(ARRAY_CAT)
    op.execute(TRIGGER_FUNCTION)
    op.execute(REBUILD_FUNCTION)
    op.execute(f"CREATE TRIGGER incident_rollup AFTER INSERT OR DELETE OR UPDATE OF"
               f" {', '.join(READ)} ON incident FOR EACH ROW EXECUTE FUNCTION"
               f" wangge_incident_rollup()")
    op.execute("SELECT wangge_incident_rollup_rebuild()")


def downgrade() -> None:
    op.execute("DROP TRIGGER incident_rollup ON incident")
    op.execute("DROP FUNCTION wangge_incident_rollup_rebuild()")
    op.execute("DROP FUNCTION wangge_incident_rollup()")
    op.execute("DROP AGGREGATE wangge_array_cat(float8[])")
    op.execute("DROP FUNCTION wangge_array_less(float8[], float8)")
    op.execute("DROP TABLE incident_grid_day")
