"""QGIS 3.22 (Debian ``python3-qgis``, headless) loads wangge's grids over OGC API Features and
as vector tiles with a Basic authentication configuration, and counts the features.

QGIS lives in the system python3, not the venv: the probe runs as a subprocess with
``QT_QPA_PLATFORM=offscreen``. Marked ``qgis`` (a big install): CI may run it as its own stage.
Expected codes and per-tile counts come from the database and shapely.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import morecantile
import numpy as np
import pytest
import shapely
from pyproj import Transformer
from shapely.geometry import box
from sqlalchemy import text

from bench.common import uvicorn_server
from geo.auth.service import AuthSettings, create_user
from geo.core.db import make_engine
from geo.data.store import write_layers
from geo.samples.synth import generate_city


def _has_qgis() -> bool:
    try:
        return subprocess.run(["/usr/bin/python3", "-c", "import qgis.core"],
                              capture_output=True, timeout=60).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


pytestmark = [pytest.mark.slow, pytest.mark.qgis,
              pytest.mark.skipif(not _has_qgis(), reason="needs Debian python3-qgis")]

PROBE = Path(__file__).with_name("ogc_qgis_probe.py")


def test_qgis_reads_grids_over_oapif_and_mvt_with_basic_auth(fresh_database, tmp_path) -> None:
    url = fresh_database()
    eng = make_engine(url)
    with eng.begin() as c:
        write_layers(c, generate_city(grids=24, buildings=24 * 30, stations=4, seed=5,
                                      team=False), kind="synth")
        create_user(c, "analyst", "analyst-password", "commander", area_code="350104",
                    settings=AuthSettings())
        grids = {code: shapely.from_wkb(bytes(w)) for code, w in c.execute(text(
            "SELECT code, ST_AsBinary(geom) FROM area_current WHERE level = 'grid'")).all()}
    eng.dispose()
    to_merc = Transformer.from_crs(4326, 3857, always_xy=True)
    merc = {k: shapely.transform(g, lambda a: np.column_stack(to_merc.transform(a[:, 0], a[:, 1])))
            for k, g in grids.items()}
    x0, y0, x1, y1 = shapely.union_all(list(merc.values())).bounds
    script = PROBE
    env = {**os.environ, "WANGGE_DATABASE_URL": url, "WANGGE_ENFORCE_ACCESS": "true"}
    with uvicorn_server(env) as base:
        run = subprocess.run(
            ["/usr/bin/python3", str(script), base + "/ogc", "analyst", "analyst-password",
             str(x0), str(y0), str(x1), str(y1)], capture_output=True, text=True, timeout=300,
            env={"PATH": os.environ.get("PATH", "/usr/bin"), "HOME": str(tmp_path),
                 "QGIS_AUTH_DB_DIR_PATH": str(tmp_path), "QT_QPA_PLATFORM": "offscreen",
                 "XDG_RUNTIME_DIR": str(tmp_path)})
        wrong = subprocess.run(
            ["/usr/bin/python3", str(script), base + "/ogc", "analyst", "wrong-password",
             str(x0), str(y0), str(x1), str(y1)], capture_output=True, text=True, timeout=300,
            env={"PATH": os.environ.get("PATH", "/usr/bin"), "HOME": str(tmp_path / "w"),
                 "QGIS_AUTH_DB_DIR_PATH": str(tmp_path), "QT_QPA_PLATFORM": "offscreen",
                 "XDG_RUNTIME_DIR": str(tmp_path)})
    assert run.returncode == 0, run.stderr[-3000:]
    out = json.loads(run.stdout.strip().splitlines()[-1])
    assert out["authcfg"] and out["oapif_valid"] and out["mvt_valid"]
    assert out["oapif_codes"] == sorted(grids)
    tms = morecantile.tms.get("WebMercatorQuad")
    assert out["mvt_tiles"]
    for key, layers in out["mvt_tiles"].items():
        z, col, row = (int(v) for v in key.split("/"))
        b = tms.xy_bounds(morecantile.Tile(col, row, z))
        pad = (b.right - b.left) * 64 / 4096
        cell = box(b.left - pad, b.bottom - pad, b.right + pad, b.top + pad)
        want = sum(1 for g in merc.values() if g.intersects(cell))
        assert layers.get("grids", 0) == want, key
    # without the right password QGIS gets nothing
    bad = json.loads(wrong.stdout.strip().splitlines()[-1])
    assert bad["oapif_codes"] == [] and not any(bad["mvt_tiles"].values())
