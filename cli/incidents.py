"""CLI commands for incidents: ``wangge incident report|show|transition|list|overdue|stats|
escalate|urge|reroute|route|sla|partitions|archive``."""

from __future__ import annotations

from dataclasses import asdict
from datetime import datetime
from pathlib import Path
from typing import Any

import typer

from cli.common import connection, domain_errors, engine, print_json

incident_app = typer.Typer(help="Incidents: the six-step loop (六步接办) from report to rating.",
                           no_args_is_help=True)


def _settings() -> Any:
    from geo.incidents import IncidentSettings

    return IncidentSettings()


@incident_app.command("report")
@domain_errors
def report(
    category: str = typer.Option(..., "--category", "-c", help="Category code, e.g. rubbish."),
    lon: float = typer.Option(..., "--lon", help="Longitude in --crs."),
    lat: float = typer.Option(..., "--lat", help="Latitude in --crs."),
    crs: str = typer.Option("wgs84", "--crs", help="wgs84 | gcj02 | bd09 | cgcs2000."),
    description: str | None = typer.Option(None, "--description", "-d", help="What is wrong."),
    actor: str = typer.Option("cli", "--actor", help="Who reports."),
) -> None:
    """吹哨: report an incident; it is located, routed and checked for duplicates."""
    from geo import incidents as inc

    with connection() as conn:
        res = inc.report(conn, category=category, lon=lon, lat=lat, crs=crs,
                         description=description, actor=actor, source="cli",
                         settings=_settings())
    print_json(res.__dict__)


@incident_app.command("show")
@domain_errors
def show(incident_id: int = typer.Argument(..., help="Case id.")) -> None:
    """One case with its history and photos."""
    from geo import incidents as inc

    with connection() as conn:
        print_json(inc.get(conn, incident_id))


@incident_app.command("transition")
@domain_errors
def transition(
    incident_id: int = typer.Argument(..., help="Case id."),
    to: str = typer.Argument(..., help="checked_in, consulting, in_progress, feedback, rated, "
                             "closed (in_progress after a poor rating reopens)."),
    actor: str = typer.Option("cli", "--actor", help="Who acts."),
    note: str | None = typer.Option(None, "--note", help="Note for the history."),
    rating: int | None = typer.Option(None, "--rating", help="1-5, to enter 'rated'."),
) -> None:
    """Move a case one step; an illegal step is refused with the reason."""
    from geo import incidents as inc

    with connection() as conn:
        print_json(inc.transition(conn, incident_id, to, actor=actor, note=note, rating=rating,
                              settings=_settings()))


@incident_app.command("list")
@domain_errors
def list_(
    status: list[str] = typer.Option(None, "--status", help="Status (repeatable)."),
    category: list[str] = typer.Option(None, "--category", help="Category (repeatable)."),
    street: str | None = typer.Option(None, "--street", help="Street code (9 digits)."),
    grid: str | None = typer.Option(None, "--grid", help="Grid code (15 digits)."),
    limit: int = typer.Option(50, "--limit", help="At most this many."),
) -> None:
    """List cases, newest first."""
    from geo import incidents as inc

    with connection() as conn:
        rows = inc.list_incidents(conn, status=status or None, category=category or None,
                                  street=street, grid=grid, limit=limit)
    for r in rows:
        typer.echo(f"{r['id']:>8}  {r['status']:<11} {r['sla']:<5} {r['category_code']:<18}"
                   f" {r['grid_code'] or '-':<15}  {r['reported_at']:%Y-%m-%d %H:%M}")


@incident_app.command("overdue")
@domain_errors
def overdue(
    street: str | None = typer.Option(None, "--street", help="Street code."),
    grid: str | None = typer.Option(None, "--grid", help="Grid code."),
    department: str | None = typer.Option(None, "--department", help="Department code."),
    level: str = typer.Option("red", "--level", help="red (past due) or amber (past 80 %)."),
    limit: int = typer.Option(100, "--limit", help="At most this many."),
) -> None:
    """Open cases past their deadline, per street, grid or department."""
    from geo import incidents as inc

    with connection() as conn:
        print_json(inc.overdue(conn, street=street, grid=grid, department=department, level=level,
                           limit=limit))


@incident_app.command("stats")
@domain_errors
def stats(
    by: str = typer.Option("grid", "--by", help="grid, community, street or department."),
    street: str | None = typer.Option(None, "--street", help="Only this street."),
    start: datetime | None = typer.Option(None, "--start", help="Reported at or after."),
    end: datetime | None = typer.Option(None, "--end", help="Reported at or before."),
    geojson: bool = typer.Option(False, "--geojson", help="RFC 7946 FeatureCollection."),
) -> None:
    """Counts, median hours per step and satisfaction per area or department."""
    from geo import incidents as inc

    with connection() as conn:
        if geojson:
            print_json(inc.stats_geojson(conn, by=by, street=street, start=start, end=end))
        else:
            print_json(inc.stats(conn, by=by, street=street, start=start, end=end))


@incident_app.command("escalate")
@domain_errors
def escalate() -> None:
    """Escalate grid → street → district every case no department checked in to within SLA
    (run it from cron every few minutes)."""
    from geo import incidents as inc

    with connection() as conn:
        print_json(inc.escalate_overdue(conn, settings=_settings(), actor="cli"))


@incident_app.command("urge")
@domain_errors
def urge(incident_id: int = typer.Argument(..., help="Case id."),
         actor: str = typer.Option("command-centre", "--actor", help="Who urges."),
         note: str | None = typer.Option(None, "--note", help="e.g. 市委督单.")) -> None:
    """督办: urge and supervise a case."""
    from geo import incidents as inc

    with connection() as conn:
        print_json(inc.urge(conn, incident_id, actor=actor, note=note))


@incident_app.command("reroute")
@domain_errors
def reroute(incident_id: int = typer.Argument(..., help="Case id."),
            department: list[str] = typer.Option(..., "--department", help="Repeatable."),
            actor: str = typer.Option("cli", "--actor", help="Who re-routes."),
            note: str | None = typer.Option(None, "--note")) -> None:
    """Send a case to other departments (back to 吹哨, new check-in deadline)."""
    from geo import incidents as inc

    with connection() as conn:
        print_json(inc.reroute(conn, incident_id, department, actor=actor, note=note,
                           settings=_settings()))


@incident_app.command("route")
@domain_errors
def route(category: str | None = typer.Argument(None, help="Category; omit to list all."),
          department: list[str] = typer.Option(None, "--department",
                                               help="Set these departments (repeatable).")) -> None:
    """Show or edit the routing table (category → departments)."""
    from geo import incidents as inc

    with connection() as conn:
        if category and department:
            inc.set_routing(conn, category, department)
        cats = inc.categories(conn)
    for c in cats:
        if category is None or c["code"] == category:
            typer.echo(f"{c['code']:<18} {c['name_zh']:<8} check-in {c['checkin_workdays']:g}d"
                       f"  resolve {c['resolve_workdays']:g}d  → {', '.join(c['departments'])}")


@incident_app.command("sla")
@domain_errors
def sla(category: str = typer.Argument(..., help="Category code."),
        checkin: float | None = typer.Option(None, "--checkin", help="Working days."),
        resolve: float | None = typer.Option(None, "--resolve", help="Working days.")) -> None:
    """Change a category's SLA (working days)."""
    from geo import incidents as inc

    with connection() as conn:
        print_json(inc.set_sla(conn, category, checkin_workdays=checkin, resolve_workdays=resolve))


@incident_app.command("partitions")
@domain_errors
def partitions(
    ahead: int = typer.Option(12, "--ahead", help="Months to make ahead of the current one."),
    start: str | None = typer.Option(None, "--from", help="Also make the months from YYYY-MM "
                                     "(e.g. before importing old cases)."),
) -> None:
    """Make the monthly partitions of cases, history and photos ahead; list the months."""
    from geo.incidents import partitions as parts

    first = parts.parse_month(start, "from") if start else None
    with connection() as conn:
        made = parts.ensure_partitions(conn, ahead=ahead, start=first)
        months = parts.monthly_partitions(conn)
    print_json({"tables_made": made, "months": months})


@incident_app.command("archive")
@domain_errors
def archive(
    before: str = typer.Option(..., "--before", help="Detach every month before YYYY-MM."),
    dump: Path | None = typer.Option(None, "--dump", help="pg_dump the detached months into "
                                     "this folder, then drop them."),
    include_open: bool = typer.Option(False, "--include-open",
                                      help="Archive months that still hold open cases."),
) -> None:
    """Detach old months of cases (with their history and photos) for archive."""
    from geo.incidents import partitions as parts

    eng = engine()
    try:
        done = parts.archive(eng, before, dump_dir=dump, include_open=include_open)
    finally:
        eng.dispose()
    print_json([asdict(m) for m in done])


def register(app: typer.Typer) -> None:
    """Add this module's commands to the ``wangge`` app."""
    app.add_typer(incident_app, name="incident")
