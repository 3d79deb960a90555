"""Offline JS/CSS assets for the maps and the console, fetched from the npm registry at set-up.

``python -m maps.assets`` runs ``npm pack NAME@VERSION`` for each package into a temporary
directory and copies the few files the maps need into ``maps/static/vendor/`` (git-ignored).
It is idempotent: when every file is already there (and the manifest matches) it does nothing.

At run time nothing is fetched: :func:`resource_path` maps each folium resource name (the
first element of folium's ``default_js``/``default_css`` tuples) to a file in the vendor
directory, and :mod:`maps.render` points folium at those files (a ``/static/vendor/...`` URL
when the API serves the page, inlined into the page for files the CLI writes).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

VENDOR_DIR = Path(__file__).resolve().parent / "static" / "vendor"
MANIFEST = VENDOR_DIR / ".manifest.json"

# npm package spec -> [(path inside the tarball's package/ dir, path under VENDOR_DIR)]
PACKAGES: dict[str, list[tuple[str, str]]] = {
    "leaflet@1.9.3": [
        ("dist/leaflet.js", "leaflet/leaflet.js"),
        ("dist/leaflet.css", "leaflet/leaflet.css"),
        ("dist/images/layers.png", "leaflet/images/layers.png"),
        ("dist/images/layers-2x.png", "leaflet/images/layers-2x.png"),
        ("dist/images/marker-icon.png", "leaflet/images/marker-icon.png"),
        ("dist/images/marker-icon-2x.png", "leaflet/images/marker-icon-2x.png"),
        ("dist/images/marker-shadow.png", "leaflet/images/marker-shadow.png"),
    ],
    "jquery@3.7.1": [("dist/jquery.min.js", "jquery/jquery.min.js")],
    "bootstrap@5.2.2": [
        ("dist/js/bootstrap.bundle.min.js", "bootstrap/bootstrap.bundle.min.js"),
        ("dist/css/bootstrap.min.css", "bootstrap/bootstrap.min.css"),
    ],
    "leaflet.awesome-markers@2.0.5": [
        ("dist/leaflet.awesome-markers.js", "awesome-markers/leaflet.awesome-markers.js"),
        ("dist/leaflet.awesome-markers.css", "awesome-markers/leaflet.awesome-markers.css"),
        ("dist/images/markers-soft.png", "awesome-markers/images/markers-soft.png"),
        ("dist/images/markers-soft@2x.png", "awesome-markers/images/markers-soft@2x.png"),
        ("dist/images/markers-shadow.png", "awesome-markers/images/markers-shadow.png"),
        ("dist/images/markers-shadow@2x.png", "awesome-markers/images/markers-shadow@2x.png"),
    ],
    "@fortawesome/fontawesome-free@6.2.0": [
        ("css/all.min.css", "fontawesome/css/all.min.css"),
        *[
            (f"webfonts/{f}.{ext}", f"fontawesome/webfonts/{f}.{ext}")
            for f in ("fa-brands-400", "fa-regular-400", "fa-solid-900", "fa-v4compatibility")
            for ext in ("woff2", "ttf")
        ],
    ],
    "leaflet.markercluster@1.5.3": [
        ("dist/leaflet.markercluster.js", "markercluster/leaflet.markercluster.js"),
        ("dist/MarkerCluster.css", "markercluster/MarkerCluster.css"),
        ("dist/MarkerCluster.Default.css", "markercluster/MarkerCluster.Default.css"),
    ],
    "leaflet.heat@0.2.0": [("dist/leaflet-heat.js", "heat/leaflet-heat.js")],
    # The web console (web/): charts, and the OpenAPI pages /docs and /redoc served offline.
    "echarts@5.4.3": [("dist/echarts.min.js", "echarts/echarts.min.js")],
    "supercluster@7.1.5": [("dist/supercluster.min.js", "supercluster/supercluster.min.js")],
    "swagger-ui-dist@5.9.0": [
        ("swagger-ui-bundle.js", "swagger-ui/swagger-ui-bundle.js"),
        ("swagger-ui.css", "swagger-ui/swagger-ui.css"),
    ],
    "redoc@2.1.3": [("bundles/redoc.standalone.js", "redoc/redoc.standalone.js")],
}

# folium's resource names -> file under VENDOR_DIR; None = deliberately left out.
RESOURCES: dict[str, str | None] = {
    "leaflet": "leaflet/leaflet.js",
    "jquery": "jquery/jquery.min.js",
    "bootstrap": "bootstrap/bootstrap.bundle.min.js",
    "awesome_markers": "awesome-markers/leaflet.awesome-markers.js",
    "leaflet_css": "leaflet/leaflet.css",
    "bootstrap_css": "bootstrap/bootstrap.min.css",
    # Bootstrap 3 glyphicons: folium links them for awesome-markers' "glyphicon" prefix; the
    # maps use the font-awesome prefix only, so the file is not needed.
    "glyphicons_css": None,
    "awesome_markers_font_css": "fontawesome/css/all.min.css",
    "awesome_markers_css": "awesome-markers/leaflet.awesome-markers.css",
    # folium's own two-line CSS for rotated icons; the maps rotate no icon.
    "awesome_rotate_css": None,
    "markerclusterjs": "markercluster/leaflet.markercluster.js",
    "markerclustercss": "markercluster/MarkerCluster.css",
    "markerclusterdefaultcss": "markercluster/MarkerCluster.Default.css",
    "leaflet-heat.js": "heat/leaflet-heat.js",
}


class AssetsMissing(RuntimeError):
    """The vendor files are not installed: run ``python -m maps.assets``."""


def _wanted() -> dict[str, list[str]]:
    return {spec: sorted(dest for _, dest in files) for spec, files in PACKAGES.items()}


def installed() -> bool:
    """True when every vendor file is present and the manifest matches this module's list."""
    try:
        manifest = json.loads(MANIFEST.read_text())
    except (OSError, ValueError):
        return False
    if manifest != _wanted():
        return False
    return all((VENDOR_DIR / dest).is_file() for files in PACKAGES.values() for _, dest in files)


def resource_path(name: str) -> Path | None:
    """The vendor file for a folium resource name (None if left out on purpose).

    Raises KeyError for a name this module does not know (it would otherwise come from a CDN).
    """
    rel = RESOURCES[name]
    return None if rel is None else VENDOR_DIR / rel


def _npm_pack(spec: str, workdir: Path) -> Path:
    out = subprocess.run(
        ["npm", "pack", spec, "--silent", "--pack-destination", str(workdir)],
        check=True,
        capture_output=True,
        text=True,
        cwd=workdir,
    )
    name = out.stdout.strip().splitlines()[-1]
    return workdir / name


def fetch(*, force: bool = False) -> bool:
    """Fetch the packages and copy the needed files. Returns False if nothing had to be done."""
    if not force and installed():
        return False
    if shutil.which("npm") is None:
        raise AssetsMissing("npm is not installed; cannot fetch the map assets")
    VENDOR_DIR.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="wangge-assets-") as tmp:
        work = Path(tmp)
        for spec, files in PACKAGES.items():
            tarball = _npm_pack(spec, work)
            with tarfile.open(tarball) as tar:
                for src, dest in files:
                    member = tar.extractfile(f"package/{src}")
                    if member is None:
                        raise AssetsMissing(f"{spec} has no file {src}")
                    target = VENDOR_DIR / dest
                    target.parent.mkdir(parents=True, exist_ok=True)
                    target.write_bytes(member.read())
            print(f"maps.assets: {spec} ({len(files)} files)", file=sys.stderr)
    MANIFEST.write_text(json.dumps(_wanted(), indent=1, sort_keys=True))
    return True


def main() -> None:
    """Install the map assets unless they are already there."""
    force = "--force" in sys.argv[1:]
    if not fetch(force=force):
        print("maps.assets: already installed", file=sys.stderr)


if __name__ == "__main__":
    main()
