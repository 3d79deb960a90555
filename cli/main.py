"""``wangge``: one Typer app; each concern registers its commands from its own module."""

from __future__ import annotations

import logging

import typer

from cli import (
    circles,
    data,
    db,
    incidents,
    lookup,
    mapping,
    planning,
    scale,
    security,
    serve,
    synth,
)

app = typer.Typer(
    name="wangge",
    help="网格 wangge：基于 PostGIS 的网格化社会治理服务。",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
)


@app.callback()
def _configure(
    verbose: bool = typer.Option(False, "--verbose", "-v", help="输出调试日志。"),
) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


for module in (db, data, synth, serve, lookup, circles, incidents, mapping, planning, security,
               scale):
    module.register(app)
