"""CLI commands for incidents: ``wangge incident report|show|transition|list|overdue|stats|
escalate|urge|reroute|route|sla|partitions|archive``."""

from __future__ import annotations

from dataclasses import asdict
from datetime import datetime
from pathlib import Path
from typing import Any

import typer

from cli.common import connection, domain_errors, engine, print_json

incident_app = typer.Typer(help="案件办理：从吹哨上报到评价的六步接办闭环。",
                           no_args_is_help=True)


def _settings() -> Any:
    from geo.incidents import IncidentSettings

    return IncidentSettings()


@incident_app.command("report")
@domain_errors
def report(
    category: str = typer.Option(..., "--category", "-c", help="问题类别编码，如 rubbish。"),
    lon: float = typer.Option(..., "--lon", help="经度（坐标系见 --crs）。"),
    lat: float = typer.Option(..., "--lat", help="纬度（坐标系见 --crs）。"),
    crs: str = typer.Option("wgs84", "--crs", help="坐标系（wgs84 | gcj02 | bd09 | cgcs2000）。"),
    description: str | None = typer.Option(None, "--description", "-d", help="问题描述。"),
    actor: str = typer.Option("cli", "--actor", help="上报人。"),
) -> None:
    """吹哨上报一个案件：自动定位到网格、派给责任部门并检查是否重复。"""
    from geo import incidents as inc

    with connection() as conn:
        res = inc.report(conn, category=category, lon=lon, lat=lat, crs=crs,
                         description=description, actor=actor, source="cli",
                         settings=_settings())
    print_json(res.__dict__)


@incident_app.command("show")
@domain_errors
def show(incident_id: int = typer.Argument(..., help="案件编号。")) -> None:
    """查看一个案件及其办理过程和照片。"""
    from geo import incidents as inc

    with connection() as conn:
        print_json(inc.get(conn, incident_id))


@incident_app.command("transition")
@domain_errors
def transition(
    incident_id: int = typer.Argument(..., help="案件编号。"),
    to: str = typer.Argument(..., help="要转入的状态：checked_in | consulting | "
                             "in_progress | feedback | rated | closed； 差评后转 "
                             "in_progress 即重新办理。"),
    actor: str = typer.Option("cli", "--actor", help="办理人。"),
    note: str | None = typer.Option(None, "--note", help="记入办理过程的说明。"),
    rating: int | None = typer.Option(None, "--rating", help="满意度 1-5，转入 rated 时填写。"),
) -> None:
    """将案件推进一步；不合规的步骤会被拒绝并说明原因。"""
    from geo import incidents as inc

    with connection() as conn:
        print_json(inc.transition(conn, incident_id, to, actor=actor, note=note, rating=rating,
                              settings=_settings()))


@incident_app.command("list")
@domain_errors
def list_(
    status: list[str] = typer.Option(None, "--status", help="状态（可重复）。"),
    category: list[str] = typer.Option(None, "--category", help="问题类别（可重复）。"),
    street: str | None = typer.Option(None, "--street", help="街道编码（9 位）。"),
    grid: str | None = typer.Option(None, "--grid", help="网格编码（15 位）。"),
    limit: int = typer.Option(50, "--limit", help="最多显示条数。"),
) -> None:
    """列出案件，最新的在前。"""
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
    street: str | None = typer.Option(None, "--street", help="街道编码。"),
    grid: str | None = typer.Option(None, "--grid", help="网格编码。"),
    department: str | None = typer.Option(None, "--department", help="部门编码。"),
    level: str = typer.Option("red", "--level", help="red（已超期）或 amber（已过时限的 80 %）。"),
    limit: int = typer.Option(100, "--limit", help="最多显示条数。"),
) -> None:
    """按街道、网格或部门列出超过时限的在办案件。"""
    from geo import incidents as inc

    with connection() as conn:
        print_json(inc.overdue(conn, street=street, grid=grid, department=department, level=level,
                           limit=limit))


@incident_app.command("stats")
@domain_errors
def stats(
    by: str = typer.Option("grid", "--by",
                           help="统计单元：grid、community、street 或 department。"),
    street: str | None = typer.Option(None, "--street", help="仅统计此街道。"),
    start: datetime | None = typer.Option(None, "--start", help="上报时间不早于此时刻。"),
    end: datetime | None = typer.Option(None, "--end", help="上报时间不晚于此时刻。"),
    geojson: bool = typer.Option(False, "--geojson", help="输出 RFC 7946 FeatureCollection。"),
) -> None:
    """按区域或部门统计案件数、各步骤办理时长中位数（小时）和满意度。"""
    from geo import incidents as inc

    with connection() as conn:
        if geojson:
            print_json(inc.stats_geojson(conn, by=by, street=street, start=start, end=end))
        else:
            print_json(inc.stats(conn, by=by, street=street, start=start, end=end))


@incident_app.command("escalate")
@domain_errors
def escalate() -> None:
    """将时限内无部门报到的案件逐级升级：网格 → 街道 → 区（由 cron 每隔几分钟运行）。"""
    from geo import incidents as inc

    with connection() as conn:
        print_json(inc.escalate_overdue(conn, settings=_settings(), actor="cli"))


@incident_app.command("urge")
@domain_errors
def urge(incident_id: int = typer.Argument(..., help="案件编号。"),
         actor: str = typer.Option("command-centre", "--actor", help="督办人。"),
         note: str | None = typer.Option(None, "--note", help="督办说明，如 市委督单。")) -> None:
    """督办一个案件。"""
    from geo import incidents as inc

    with connection() as conn:
        print_json(inc.urge(conn, incident_id, actor=actor, note=note))


@incident_app.command("reroute")
@domain_errors
def reroute(incident_id: int = typer.Argument(..., help="案件编号。"),
            department: list[str] = typer.Option(..., "--department",
                                                 help="改派到的部门编码（可重复）。"),
            actor: str = typer.Option("cli", "--actor", help="改派人。"),
            note: str | None = typer.Option(None, "--note", help="改派说明。")) -> None:
    """将案件改派给其他部门（回到吹哨环节，重新计算报到时限）。"""
    from geo import incidents as inc

    with connection() as conn:
        print_json(inc.reroute(conn, incident_id, department, actor=actor, note=note,
                           settings=_settings()))


@incident_app.command("route")
@domain_errors
def route(category: str | None = typer.Argument(None, help="问题类别；省略则列出全部。"),
          department: list[str] = typer.Option(None, "--department",
                                               help="设为这些部门（可重复）。")) -> None:
    """查看或修改派单规则（问题类别 → 部门）。"""
    from geo import incidents as inc

    with connection() as conn:
        if category and department:
            inc.set_routing(conn, category, department)
        cats = inc.categories(conn)
    for c in cats:
        if category is None or c["code"] == category:
            typer.echo(f"{c['code']:<18} {c['name_zh']:<8} 报到 {c['checkin_workdays']:g} 个工作日"
                       f"  办结 {c['resolve_workdays']:g} 个工作日  → "
                       f"{', '.join(c['departments'])}")


@incident_app.command("sla")
@domain_errors
def sla(category: str = typer.Argument(..., help="问题类别编码。"),
        checkin: float | None = typer.Option(None, "--checkin", help="工作日数。"),
        resolve: float | None = typer.Option(None, "--resolve", help="工作日数。")) -> None:
    """修改问题类别的办理时限（工作日）。"""
    from geo import incidents as inc

    with connection() as conn:
        print_json(inc.set_sla(conn, category, checkin_workdays=checkin, resolve_workdays=resolve))


@incident_app.command("partitions")
@domain_errors
def partitions(
    ahead: int = typer.Option(12, "--ahead", help="在当前月之后预建的月数。"),
    start: str | None = typer.Option(None, "--from", help="同时补建自 YYYY-MM 起的月份"
                                     "（如导入历史案件之前）。"),
) -> None:
    """预建案件、办理过程和照片的月分区，并列出已有月份。"""
    from geo.incidents import partitions as parts

    first = parts.parse_month(start, "from") if start else None
    with connection() as conn:
        made = parts.ensure_partitions(conn, ahead=ahead, start=first)
        months = parts.monthly_partitions(conn)
    print_json({"tables_made": made, "months": months})


@incident_app.command("archive")
@domain_errors
def archive(
    before: str = typer.Option(..., "--before", help="分离 YYYY-MM 之前的所有月份。"),
    dump: Path | None = typer.Option(None, "--dump", help="将分离出的月份用 pg_dump 导出到"
                                     "此目录，然后删除。"),
    include_open: bool = typer.Option(False, "--include-open",
                                      help="仍有在办案件的月份也归档。"),
) -> None:
    """分离较早月份的案件（连同办理过程和照片）以便归档。"""
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
