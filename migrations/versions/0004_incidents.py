"""Incident workflow: the six-step loop, append-only history, photos, SLAs, routing table.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-23

Replaces 0001's bare ``incident`` table (no production data existed) with the case table of
the six-step loop (吹哨 → 报到 → 会商 → 落实 → 反馈 → 评价 → closed). Seeds the 12 categories
with SLAs in working days, the default departments and the category → department routing.

Indexes chosen for millions of rows (measured in bench/incidents.py):
- BRIN on ``reported_at`` (rows arrive in time order; a few kB for millions of rows);
- partial btree on open cases by (street, resolve due) (covering: index-only overdue lists)
  and (grid, resolve due);
- partial GiST on ``location::geography`` of open cases: the 50 m duplicate check;
- btree (grid_code, reported_at) / (street_code, reported_at) for statistics over a period.
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

# code, 中文, English, check-in workdays, resolve workdays
CATEGORIES = [
    ("snow_ice", "冰雪清除", "Snow and ice", 0.5, 1),
    ("sewer_blocked", "下水道堵塞", "Blocked sewer", 0.5, 2),
    ("road_damage", "道路破损", "Damaged road", 1, 5),
    ("facade_falling", "外墙脱落", "Falling wall cladding", 0.5, 3),
    ("rubbish", "垃圾堆放", "Piled-up rubbish", 1, 2),
    ("manhole_missing", "井盖缺失", "Missing manhole cover", 0.5, 1),
    ("noise", "噪音扰民", "Noise", 1, 3),
    ("parking", "违规停车", "Illegal parking", 1, 2),
    ("pipe_burst", "水管爆裂", "Burst pipe", 0.5, 1),
    ("street_stall", "占道经营", "Street stalls blocking public space", 1, 3),
    ("illegal_building", "违法建设", "Illegal building", 2, 20),
    ("neighbour_dispute", "邻里纠纷", "Neighbour dispute", 1, 10),
]

# code, 中文, English
DEPARTMENTS = [
    ("urban_management", "城市管理局", "Urban management bureau"),
    ("housing", "住房和城乡建设局", "Housing and construction bureau"),
    ("water", "水务局", "Water authority"),
    ("sanitation", "环境卫生中心", "Sanitation centre"),
    ("traffic_police", "交警大队", "Traffic police"),
    ("police", "公安分局", "Police"),
    ("ecology", "生态环境局", "Ecology and environment bureau"),
    ("market", "市场监督管理局", "Market supervision bureau"),
    ("natural_resources", "自然资源和规划局", "Natural resources and planning bureau"),
    ("judicial", "司法局", "Justice bureau (mediation)"),
    ("transport", "交通运输局", "Transport bureau"),
]

ROUTING = {
    "snow_ice": ["urban_management", "sanitation"],
    "sewer_blocked": ["water"],
    "road_damage": ["transport", "urban_management"],
    "facade_falling": ["housing", "urban_management"],
    "rubbish": ["sanitation"],
    "manhole_missing": ["urban_management", "water"],
    "noise": ["ecology", "police"],
    "parking": ["traffic_police"],
    "pipe_burst": ["water"],
    "street_stall": ["urban_management", "market"],
    "illegal_building": ["natural_resources", "urban_management"],
    "neighbour_dispute": ["judicial", "police"],
}

STATUSES = ["reported", "checked_in", "consulting", "in_progress", "feedback", "rated",
            "closed", "duplicate"]
LEVELS = ["grid", "street", "district"]


OPEN_STREET_DUE_INDEX = (
    "CREATE INDEX ix_incident_open_street_due ON incident (street_code, resolve_due)"
    " INCLUDE (amber_at, id, category_code, status, grid_code, reported_at, escalation_level,"
    " urge_count, department_ids, location) WHERE is_open"
)


def _in(column: str, values: list[str]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


def upgrade() -> None:
    cat = sa.table("incident_category", sa.column("code"), sa.column("name_zh"),
                   sa.column("name_en"), sa.column("checkin_workdays"),
                   sa.column("resolve_workdays"))
    op.bulk_insert(cat, [
        {"code": c, "name_zh": zh, "name_en": en, "checkin_workdays": ci,
         "resolve_workdays": rs} for c, zh, en, ci, rs in CATEGORIES
    ])
    dep = sa.table("department", sa.column("code"), sa.column("name"), sa.column("name_en"),
                   sa.column("level"))
    op.bulk_insert(dep, [{"code": c, "name": zh, "name_en": en, "level": "district"}
                         for c, zh, en in DEPARTMENTS])
    for category, deps in ROUTING.items():
        for d in deps:
            op.execute(
                sa.text("INSERT INTO category_department (category_code, department_id) "
                        "SELECT :c, id FROM department WHERE code = :d").bindparams(c=category, d=d)
            )

    op.drop_table("incident")
    op.execute(f"""
        CREATE TABLE incident (
            id bigserial PRIMARY KEY,
            category_code text NOT NULL REFERENCES incident_category(code),
            description text,
            address text,
            location geometry(Point, 4326) NOT NULL,
            input_crs text NOT NULL DEFAULT 'wgs84',
            district_code varchar(6),
            street_code varchar(9),
            community_code varchar(12),
            grid_code varchar(15),
            boundary_distance_m double precision,
            near_boundary boolean NOT NULL DEFAULT false,
            status text NOT NULL DEFAULT 'reported',
            is_open boolean GENERATED ALWAYS AS
                (status NOT IN ('closed', 'duplicate')) STORED,
            duplicate_of bigint REFERENCES incident(id),
            department_ids integer[] NOT NULL DEFAULT '{{}}',
            escalation_level text NOT NULL DEFAULT 'grid',
            source text NOT NULL DEFAULT 'api',
            reporter_name text,
            reporter_contact text,
            reporter_device text,
            rating smallint,
            reopen_count integer NOT NULL DEFAULT 0,
            urge_count integer NOT NULL DEFAULT 0,
            reported_at timestamptz NOT NULL DEFAULT now(),
            updated_at timestamptz NOT NULL DEFAULT now(),
            checkin_due timestamptz NOT NULL,
            amber_at timestamptz NOT NULL,
            resolve_due timestamptz NOT NULL,
            checked_in_at timestamptz,
            consulting_at timestamptz,
            in_progress_at timestamptz,
            feedback_at timestamptz,
            rated_at timestamptz,
            closed_at timestamptz,
            CONSTRAINT incident_status_known CHECK ({_in('status', STATUSES)}),
            CONSTRAINT incident_level_known CHECK ({_in('escalation_level', LEVELS)}),
            CONSTRAINT incident_rating_range CHECK (rating IS NULL OR rating BETWEEN 1 AND 5),
            CONSTRAINT incident_duplicate_link CHECK
                ((status = 'duplicate') = (duplicate_of IS NOT NULL))
        )
    """)
    op.execute("CREATE INDEX ix_incident_reported_brin ON incident USING brin (reported_at)")
    # covering: the overdue list of a street is answered by an index-only scan
    op.execute(OPEN_STREET_DUE_INDEX)
    op.execute("CREATE INDEX ix_incident_open_grid_due ON incident (grid_code, resolve_due)"
               " WHERE is_open")
    op.execute("CREATE INDEX ix_incident_open_checkin ON incident (checkin_due)"
               " WHERE status = 'reported'")
    op.execute("CREATE INDEX ix_incident_open_geog ON incident USING gist"
               " ((location::geography)) WHERE is_open")
    op.execute("CREATE INDEX ix_incident_grid_time ON incident (grid_code, reported_at)")
    op.execute("CREATE INDEX ix_incident_street_time ON incident (street_code, reported_at)")
    op.execute("CREATE INDEX ix_incident_duplicate_of ON incident (duplicate_of)"
               " WHERE duplicate_of IS NOT NULL")
    op.execute("CREATE INDEX ix_incident_departments ON incident USING gin (department_ids)"
               " WHERE is_open")

    op.execute("""
        CREATE TABLE incident_history (
            id bigserial PRIMARY KEY,
            incident_id bigint NOT NULL REFERENCES incident(id),
            action text NOT NULL,
            from_status text,
            to_status text,
            actor text NOT NULL,
            note text,
            detail jsonb NOT NULL DEFAULT '{}',
            at timestamptz NOT NULL DEFAULT clock_timestamp()
        )
    """)
    op.execute("CREATE INDEX ix_incident_history_incident ON incident_history (incident_id, id)")
    op.execute("""
        CREATE FUNCTION incident_history_append_only() RETURNS trigger
        LANGUAGE plpgsql AS $$
        BEGIN
            RAISE EXCEPTION 'incident_history is append-only: % refused', TG_OP
                USING ERRCODE = 'insufficient_privilege';
        END $$
    """)
    op.execute("""
        CREATE TRIGGER incident_history_no_change BEFORE UPDATE OR DELETE ON incident_history
        FOR EACH ROW EXECUTE FUNCTION incident_history_append_only()
    """)
    op.execute("""
        CREATE TRIGGER incident_history_no_truncate BEFORE TRUNCATE ON incident_history
        FOR EACH STATEMENT EXECUTE FUNCTION incident_history_append_only()
    """)

    op.execute("""
        CREATE TABLE incident_photo (
            id bigserial PRIMARY KEY,
            incident_id bigint NOT NULL REFERENCES incident(id),
            history_id bigint REFERENCES incident_history(id),
            content_type text NOT NULL,
            size_bytes integer NOT NULL,
            data bytea NOT NULL,
            created_at timestamptz NOT NULL DEFAULT now()
        )
    """)
    op.execute("CREATE INDEX ix_incident_photo_incident ON incident_photo (incident_id)")


def downgrade() -> None:
    op.execute("DROP TABLE incident_photo")
    op.execute("DROP TABLE incident_history")
    op.execute("DROP FUNCTION incident_history_append_only()")
    op.execute("DROP TABLE incident")
    op.execute("DELETE FROM category_department")
    op.execute("DELETE FROM department")
    op.execute("DELETE FROM incident_category")
    op.execute(
        "CREATE TABLE incident (id bigserial PRIMARY KEY, category_code text NOT NULL"
        " REFERENCES incident_category(code), description text,"
        " location geometry(Point, 4326) NOT NULL, grid_code varchar(15),"
        " community_code varchar(12), street_code varchar(9),"
        " status text NOT NULL DEFAULT 'reported', reported_at timestamptz NOT NULL DEFAULT now())"
    )
