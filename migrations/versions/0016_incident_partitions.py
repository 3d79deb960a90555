"""Incidents partitioned by month of reporting; history and photos partitioned alongside.

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-02

* ``incident`` becomes ``PARTITION BY RANGE (reported_at)``, one partition per calendar month
  (UTC) named ``incident_yYYYYmMM``, plus ``incident_default`` for rows outside every month
  made so far (a report never fails for want of a partition).
* ``incident_history`` and ``incident_photo`` get ``incident_reported_at`` (their case's
  ``reported_at``) and are partitioned by it into the same months: a month of cases, their
  history and their photos are detached together (``wangge incident archive``).
* Keys of a partitioned table must hold the partition key: ``incident`` (id, reported_at),
  history and photo (id, incident_reported_at); their foreign keys to the case are
  (incident_id, incident_reported_at) -> incident (id, reported_at), the photo's history link
  (history_id, incident_reported_at). ``id`` stays unique on its own (one sequence).
* ``incident.duplicate_of`` loses its foreign key (a self-reference across months would stop
  an old month from being detached); the intake sets it to a case it has just read, in the
  same transaction, and the CHECK linking status and duplicate_of stays.
* Every index of 0004/0007/0010 is re-created on the partitioned tables (so per partition).
* ``wangge_incident_partitions(first, last)`` creates the missing months in [first, last] for
  the three tables; the migration makes the months of the existing rows and 12 ahead, the API
  at start-up and the ``wangge incident partitions`` command keep 12 months ahead.
"""

from alembic import op

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None

TABLES = ("incident", "incident_history", "incident_photo")

PARTITION_FUNCTION = """
CREATE OR REPLACE FUNCTION wangge_incident_partitions(first date, last date)
RETURNS integer LANGUAGE plpgsql AS $$
DECLARE
    m date := date_trunc('month', first)::date;
    made integer := 0;
    t text;
    name text;
BEGIN
    WHILE m <= last LOOP
        FOREACH t IN ARRAY ARRAY['incident', 'incident_history', 'incident_photo'] LOOP
            name := t || to_char(m, '"_y"YYYY"m"MM');
            IF to_regclass('public.' || name) IS NULL THEN
                EXECUTE format('CREATE TABLE public.%I PARTITION OF public.%I FOR VALUES '
                               'FROM (%L) TO (%L)', name, t,
                               m::timestamp AT TIME ZONE 'UTC',
                               (m + interval '1 month')::timestamp AT TIME ZONE 'UTC');
                made := made + 1;
            END IF;
        END LOOP;
        m := (m + interval '1 month')::date;
    END LOOP;
    RETURN made;
END $$
"""

APPEND_ONLY_TRIGGERS = (
    "CREATE TRIGGER incident_history_no_change BEFORE UPDATE OR DELETE ON incident_history"
    " FOR EACH ROW EXECUTE FUNCTION incident_history_append_only()",
    "CREATE TRIGGER incident_history_no_truncate BEFORE TRUNCATE ON incident_history"
    " FOR EACH STATEMENT EXECUTE FUNCTION incident_history_append_only()",
)


def _index_defs(conn, table: str) -> list[str]:
    rows = conn.exec_driver_sql(
        "SELECT indexdef FROM pg_indexes WHERE schemaname = 'public' AND tablename = %s"
        " AND indexname NOT LIKE '%%\\_pkey' ORDER BY indexname", (table,)).all()
    return [r[0] for r in rows]


def _columns(conn, table: str) -> str:
    rows = conn.exec_driver_sql(
        "SELECT attname FROM pg_attribute WHERE attrelid = %s::regclass AND attnum > 0"
        " AND NOT attisdropped AND attgenerated = '' ORDER BY attnum", (table,)).all()
    return ", ".join(f'"{r[0]}"' for r in rows)


def upgrade() -> None:
    conn = op.get_bind()
    indexes = {t: _index_defs(conn, t) for t in TABLES}
    cols = {t: _columns(conn, t) for t in TABLES}
    for t in TABLES:
        op.execute(f"ALTER SEQUENCE {t}_id_seq OWNED BY NONE")
        op.execute(f"ALTER TABLE {t} RENAME TO {t}_old")
    like = "INCLUDING DEFAULTS INCLUDING GENERATED INCLUDING CONSTRAINTS"
    op.execute(f"CREATE TABLE incident (LIKE incident_old {like})"
               " PARTITION BY RANGE (reported_at)")
    for t in ("incident_history", "incident_photo"):
        op.execute(f"CREATE TABLE {t} (LIKE {t}_old {like},"
                   " incident_reported_at timestamptz NOT NULL)"
                   " PARTITION BY RANGE (incident_reported_at)")
    for t in TABLES:
        op.execute(f"CREATE TABLE {t}_default PARTITION OF {t} DEFAULT")
    op.execute(PARTITION_FUNCTION)
    op.execute("SELECT wangge_incident_partitions(least(date_trunc('month', now()),"
               " (SELECT min(reported_at) FROM incident_old))::date,"
               " (now() + interval '12 months')::date)")
    op.execute(f"INSERT INTO incident ({cols['incident']}) SELECT {cols['incident']}"
               " FROM incident_old")
    for t in ("incident_history", "incident_photo"):
        sel = ", ".join(f"x.{c}" for c in cols[t].split(", "))
        op.execute(f"INSERT INTO {t} ({cols[t]}, incident_reported_at) SELECT {sel},"
                   f" i.reported_at FROM {t}_old x JOIN incident i ON i.id = x.incident_id")
    op.execute("DROP TABLE incident_photo_old, incident_history_old, incident_old")
    for t in TABLES:
        op.execute(f"ALTER SEQUENCE {t}_id_seq OWNED BY {t}.id")
        for d in indexes[t]:
            op.execute(d)
    op.execute("ALTER TABLE incident ADD PRIMARY KEY (id, reported_at)")
    op.execute("ALTER TABLE incident_history ADD PRIMARY KEY (id, incident_reported_at)")
    op.execute("ALTER TABLE incident_photo ADD PRIMARY KEY (id, incident_reported_at)")
    op.execute("ALTER TABLE incident ADD CONSTRAINT incident_category_code_fkey FOREIGN KEY"
               " (category_code) REFERENCES incident_category(code)")
    op.execute("ALTER TABLE incident ADD CONSTRAINT incident_reporter_user_id_fkey FOREIGN KEY"
               " (reporter_user_id) REFERENCES app_user(id)")
    for t in ("incident_history", "incident_photo"):
        op.execute(f"ALTER TABLE {t} ADD CONSTRAINT {t}_incident_fkey FOREIGN KEY"
                   " (incident_id, incident_reported_at) REFERENCES incident (id, reported_at)")
    op.execute("ALTER TABLE incident_photo ADD CONSTRAINT incident_photo_history_fkey FOREIGN"
               " KEY (history_id, incident_reported_at) REFERENCES incident_history"
               " (id, incident_reported_at)")
    for sql in APPEND_ONLY_TRIGGERS:
        op.execute(sql)
    op.execute("ANALYZE incident, incident_history, incident_photo")


def downgrade() -> None:
    conn = op.get_bind()
    indexes = {t: [d for d in _index_defs(conn, t)] for t in TABLES}
    cols = {t: _columns(conn, t) for t in TABLES}
    for t in TABLES:
        op.execute(f"ALTER SEQUENCE {t}_id_seq OWNED BY NONE")
        op.execute(f"ALTER TABLE {t} RENAME TO {t}_part")
    like = "INCLUDING DEFAULTS INCLUDING GENERATED INCLUDING CONSTRAINTS"
    for t in TABLES:
        op.execute(f"CREATE TABLE {t} (LIKE {t}_part {like})")
    op.execute("ALTER TABLE incident_history DROP COLUMN incident_reported_at")
    op.execute("ALTER TABLE incident_photo DROP COLUMN incident_reported_at")
    for t in TABLES:
        keep = ", ".join(c for c in cols[t].split(", ") if c != '"incident_reported_at"')
        op.execute(f"INSERT INTO {t} ({keep}) SELECT {keep} FROM {t}_part")
    op.execute("DROP TABLE incident_photo_part, incident_history_part, incident_part")
    op.execute("DROP FUNCTION wangge_incident_partitions(date, date)")
    for t in TABLES:
        op.execute(f"ALTER SEQUENCE {t}_id_seq OWNED BY {t}.id")
        op.execute(f"ALTER TABLE {t} ADD PRIMARY KEY (id)")
        for d in indexes[t]:
            op.execute(d.replace(" ONLY ", " "))
    op.execute("ALTER TABLE incident ADD CONSTRAINT incident_category_code_fkey FOREIGN KEY"
               " (category_code) REFERENCES incident_category(code)")
    op.execute("ALTER TABLE incident ADD CONSTRAINT incident_reporter_user_id_fkey FOREIGN KEY"
               " (reporter_user_id) REFERENCES app_user(id)")
    op.execute("ALTER TABLE incident ADD CONSTRAINT incident_duplicate_of_fkey FOREIGN KEY"
               " (duplicate_of) REFERENCES incident(id)")
    for t in ("incident_history", "incident_photo"):
        op.execute(f"ALTER TABLE {t} ADD CONSTRAINT {t}_incident_id_fkey FOREIGN KEY"
                   " (incident_id) REFERENCES incident(id)")
    op.execute("ALTER TABLE incident_photo ADD CONSTRAINT incident_photo_history_id_fkey"
               " FOREIGN KEY (history_id) REFERENCES incident_history(id)")
    for sql in APPEND_ONLY_TRIGGERS:
        op.execute(sql)
