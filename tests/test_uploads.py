"""api.uploads.saved_upload: the one helper behind the layer and planning imports."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import pytest
from fastapi import UploadFile

from api.uploads import saved_upload
from geo.core.errors import InvalidInput

SAMPLES = Path(__file__).resolve().parent.parent / "data" / "shapefiles"


def _upload(name: str, data: bytes) -> UploadFile:
    return UploadFile(io.BytesIO(data), filename=name)


def _zip(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for name, data in members.items():
            z.writestr(name, data)
    return buf.getvalue()


def test_zipped_shapefile_gives_its_shp(tmp_path: Path) -> None:
    files = {f"set/{f.name}": f.read_bytes() for f in (SAMPLES / "no_crs").iterdir()}
    path = saved_upload(_upload("grid.zip", _zip(files)), tmp_path)
    assert path.suffix == ".shp" and path.is_file()
    assert {p.name for p in path.parent.iterdir()} == {Path(n).name for n in files}


def test_plain_file_is_saved_as_is(tmp_path: Path) -> None:
    data = (SAMPLES / "grid_bowtie.geojson").read_bytes()
    path = saved_upload(_upload("../../grid.geojson", data), tmp_path)
    assert path == tmp_path / "grid.geojson" and path.read_bytes() == data


@pytest.mark.parametrize("name, data, why", [
    ("grid.zip", b"PK\x03\x04 not really a zip", "zip"),
    ("grid.zip", _zip({"readme.txt": b"no layers here"}), "shapefile"),
    ("grid.exe", b"MZ", "upload a .gpkg"),
])
def test_bad_uploads_are_422_naming_the_field(tmp_path: Path, name: str, data: bytes,
                                             why: str) -> None:
    with pytest.raises(InvalidInput) as err:
        saved_upload(_upload(name, data), tmp_path, field="file")
    (problem,) = err.value.problems
    assert problem.field == "file" and why in f"{err.value.message} {problem.reason}"


def test_members_outside_the_folder_are_skipped(tmp_path: Path) -> None:
    shp = {f"x/{f.name}": f.read_bytes() for f in (SAMPLES / "no_crs").iterdir()}
    data = _zip({**shp, "../escaped.shp": b"x", "/abs.shp": b"x"})
    (tmp_path / "in").mkdir()
    path = saved_upload(_upload("grid.zip", data), tmp_path / "in")
    assert path.parent.name == "x"
    assert not (tmp_path / "escaped.shp").exists() and not Path("/abs.shp").exists()
