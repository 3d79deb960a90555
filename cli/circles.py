"""CLI commands for service circles: ``wangge circles``, ``wangge coverage``, ``wangge site``."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from cli.common import connection, domain_errors


def register(app: typer.Typer) -> None:
    """Add this module's commands to the ``wangge`` app."""

    @app.command("circles")
    @domain_errors
    def circles(
        tiers: list[float] | None = typer.Option(
            None, "--tier", help="Tier in metres of walking (repeatable); default 300/500/1000."),
        clip: str | None = typer.Option(None, "--clip", help="community, street or none."),
    ) -> None:
        """Walking service circles of every station, computed in pgRouting; stores a run."""
        from geo.circles.build import build_circles
        from geo.circles.runs import CircleSettings, get_run

        with connection() as conn:
            rid = build_circles(conn, CircleSettings(), tiers_m=tiers or None, clip=clip,
                                progress=True)
            summary = get_run(conn, rid)["summary"]
        typer.echo(f"circles run {rid}: {json.dumps(summary, ensure_ascii=False)}")

    @app.command("coverage")
    @domain_errors
    def coverage(
        run: int | None = typer.Option(None, "--run", help="Circles run id; default latest."),
        tier: float | None = typer.Option(None, "--tier", help="Tier (m); default 300."),
        level: str = typer.Option("street", "--level", help="Print per grid/community/street."),
        out: list[Path] | None = typer.Option(
            None, "--out", help="Export uncovered buildings (.geojson or .gpkg; repeatable)."),
    ) -> None:
        """Which buildings the circles cover; residents covered per level; station-kind shares."""
        from geo.circles.coverage import coverage_by_level, export_uncovered, run_coverage
        from geo.circles.runs import CircleSettings, get_run

        with connection() as conn:
            rid = run_coverage(conn, CircleSettings(), circles_run_id=run, tier_m=tier)
            s = get_run(conn, rid)["summary"]
            typer.echo(
                f"coverage run {rid}: {s['covered']}/{s['buildings']} buildings, "
                f"{s['residents_covered']}/{s['residents']} residents covered"
            )
            for row in coverage_by_level(conn, rid, level):
                typer.echo(f"  {row['code']}: {row['residents_covered']}/{row['residents']}"
                           f" residents ({row['share_residents_covered']})")
            for k in s["kind_shares"]:
                if "meets_targets" in k:
                    typer.echo(f"  {k['kind']}: communities {k['community_share']} "
                               f"(target {k['community_target']}), streets {k['street_share']} "
                               f"(target {k['street_target']}), meets: {k['meets_targets']}")
            for path in out or []:
                n = export_uncovered(conn, rid, path)
                typer.echo(f"wrote {n} uncovered buildings to {path}")

    @app.command("site")
    @domain_errors
    def site(
        k: int = typer.Option(5, "--k", help="How many new stations to suggest."),
        run: int | None = typer.Option(None, "--run", help="Coverage run id; default latest."),
        tier: float | None = typer.Option(None, "--tier", help="Walking metres; default the "
                                          "coverage run's tier."),
    ) -> None:
        """Suggest k new station sites covering most uncovered residents (MCLP vs greedy)."""
        from geo.circles.runs import CircleSettings
        from geo.circles.siting import run_siting, sites

        with connection() as conn:
            with typer.progressbar(length=1, label="siting (MCLP)") as bar:
                rid = run_siting(conn, CircleSettings(), k=k, coverage_run_id=run, tier_m=tier)
                bar.update(1)
            out = sites(conn, rid)
        typer.echo(f"siting run {rid}: {json.dumps(out['summary'], ensure_ascii=False)}")
        for f in out["sites"]["features"]:
            p = f["properties"]
            lon, lat = f["geometry"]["coordinates"]
            typer.echo(f"  {p['method']} #{p['rank']}: node {p['node_id']} ({lon:.6f}, {lat:.6f})"
                       f" +{p['gain_residents']:.0f} residents (total "
                       f"{p['cumulative_residents']:.0f})")
