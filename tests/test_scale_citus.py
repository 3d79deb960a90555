"""The Citus plan (geo/scale/citus.py, docs/operations/scale.md) against the migrated schema."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import text

from geo.scale import citus

README = Path(__file__).resolve().parent.parent / "docs" / "operations" / "scale.md"


def test_every_table_is_placed_and_every_change_is_written_down(conn):
    changes = citus.check_plan(conn)
    assert not [c for c in changes if c.kind in ("unclassified", "missing")], changes
    assert not [c for c in changes if c.kind in ("reference_fk", "local_fk")], changes
    written = README.read_text()
    missing = [str(c) for c in changes if str(c) not in written]
    assert not missing, "docs/operations/scale.md lacks: " + "; ".join(missing)


def test_check_sees_a_key_without_the_distribution_column(conn):
    # an independent probe: a key that lacks district_code is reported, one that has it not
    keys = {c.detail.split(" ")[0] for c in citus.check_plan(conn) if c.kind == "key"}
    pk = conn.execute(text(
        "SELECT conname FROM pg_constraint WHERE conrelid = 'incident'::regclass "
        "AND contype = 'p'")).scalar()
    assert pk in keys
    conn.execute(text("ALTER TABLE incident_history ADD COLUMN district_code varchar(6) "
                      "NOT NULL DEFAULT '350104'"))
    conn.execute(text("ALTER TABLE incident_history DROP CONSTRAINT incident_history_pkey CASCADE, "
                      "ADD PRIMARY KEY (district_code, id, incident_reported_at)"))
    after = {str(c) for c in citus.check_plan(conn) if c.table == "incident_history"}
    assert not any("pkey" in c or "add_column" in c for c in after), after
