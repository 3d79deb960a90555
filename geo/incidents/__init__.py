"""Incidents: intake and routing, the six-step loop (六步接办), SLAs, queries and statistics.

吹哨 reported → 报到 checked_in → 会商 consulting → 落实 in_progress → 反馈 feedback
→ 评价 rated → closed. Every change is one transaction: the case row and its append-only history
row are written together or not at all, and callers acknowledge only after commit.

Times are timestamptz (UTC in Python). SLAs count working days (weekends and the holidays in
``IncidentSettings.holidays`` are off) in the local time zone ``IncidentSettings.timezone``.
Locations are stored in EPSG:4326; distances (duplicates) are measured on the spheroid
(geography), in metres. The rooms:

- ``settings``: ``IncidentSettings``; ``calendar``: ``WorkCalendar`` (working days, SLAs);
- ``intake``: ``report``, ``file_reports`` (locate, route, duplicates); ``writer``:
  ``ReportWriter`` (shared transactions for many reports);
- ``workflow``: the state machine (``TRANSITIONS``), ``transition``, ``reroute``, ``urge``,
  ``escalate_overdue``; ``photos``: ``attach_photo``, ``get_photo``;
- ``queries``: ``get``, ``list_incidents``, ``overdue``, ``stats``, ``stats_geojson``;
- ``routing``: categories, departments and the routing table;
- ``cases``: row helpers shared by the above (scope, locks, history);
- ``command``: the city level: ``supervise`` (市委督单), ``supervise_overdue``, ``rollup``.
"""

from geo.incidents.addresses import locate_address
from geo.incidents.calendar import WorkCalendar
from geo.incidents.command import command_level, rollup, supervise, supervise_overdue
from geo.incidents.intake import ReportResult, file_reports, report
from geo.incidents.photos import attach_photo, get_photo
from geo.incidents.queries import (
    LEVEL_COLUMN,
    count_incidents,
    count_overdue,
    get,
    list_incidents,
    overdue,
    stats,
    stats_geojson,
)
from geo.incidents.routing import categories, departments, set_routing, set_sla
from geo.incidents.settings import IncidentSettings
from geo.incidents.workflow import (
    ESCALATION,
    REROUTABLE,
    STAMP,
    STATUSES,
    STEPS_ZH,
    TRANSITIONS,
    escalate_overdue,
    reroute,
    transition,
    urge,
)
from geo.incidents.writer import ReportWriter

__all__ = [
    "ESCALATION",
    "LEVEL_COLUMN",
    "REROUTABLE",
    "STAMP",
    "STATUSES",
    "STEPS_ZH",
    "TRANSITIONS",
    "IncidentSettings",
    "ReportResult",
    "ReportWriter",
    "WorkCalendar",
    "attach_photo",
    "categories",
    "count_incidents",
    "count_overdue",
    "command_level",
    "departments",
    "escalate_overdue",
    "file_reports",
    "get",
    "get_photo",
    "list_incidents",
    "locate_address",
    "overdue",
    "report",
    "reroute",
    "rollup",
    "set_routing",
    "set_sla",
    "stats",
    "stats_geojson",
    "supervise",
    "supervise_overdue",
    "transition",
    "urge",
]
