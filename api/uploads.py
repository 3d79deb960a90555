"""Uploaded files: saved to a temporary folder, a zipped Shapefile unpacked (one helper for the
layer import and the planning import)."""

from __future__ import annotations

import shutil
import zipfile
import zlib
from pathlib import Path

from fastapi import UploadFile

from geo.core.errors import InvalidInput, Problem

LAYER_SUFFIXES = (".gpkg", ".geojson", ".json", ".zip")


def saved_upload(file: UploadFile, folder: Path, *, field: str = "file",
                 default_name: str = "upload") -> Path:
    """Save ``file`` in ``folder`` and return the path to read: the file itself, or for a
    ``.zip`` the first ``.shp`` (else ``.geojson``) it holds, unpacked under ``folder``.

    Refused with 422 naming ``field``: a type other than .gpkg, .geojson/.json or .zip, a
    corrupt zip, or a zip with no shapefile. Members that would land outside ``folder``
    (absolute paths, ``..``) are skipped.
    """
    name = Path(file.filename or default_name).name
    suffix = Path(name).suffix.lower()
    if suffix not in LAYER_SUFFIXES:
        raise InvalidInput("unsupported file type", [Problem(
            reason="upload a .gpkg, .geojson/.json or a .zip with a shapefile", field=field)])
    target = folder / name
    with target.open("wb") as out:
        shutil.copyfileobj(file.file, out)
    if suffix != ".zip":
        return target
    unzipped = folder / "unzipped"
    try:
        with zipfile.ZipFile(target) as zf:
            members = [m for m in zf.namelist()
                       if not m.startswith("/") and ".." not in Path(m).parts]
            zf.extractall(unzipped, members)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, zlib.error, NotImplementedError, OSError,
            EOFError) as exc:
        raise InvalidInput("not a readable zip file",
                           [Problem(reason=str(exc) or type(exc).__name__, field=field)]) from exc
    found = sorted(unzipped.rglob("*.shp")) or sorted(unzipped.rglob("*.geojson"))
    if not found:
        raise InvalidInput("no .shp in the zip",
                           [Problem(reason="the zip holds no shapefile", field=field)])
    return found[0]
