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


def test_zipped_shapefile_gives_its_shp() -> None:
    files = {f"set/{f.name}": f.read_bytes() for f in (SAMPLES / "no_crs").iterdir()}
    with saved_upload(_upload("grid.zip", _zip(files))) as path:
        assert path.suffix == ".shp" and path.is_file()
        assert {p.name for p in path.parent.iterdir()} == {Path(n).name for n in files}
    assert not path.exists()  # the temporary folder goes with the block


def test_plain_file_is_saved_as_is() -> None:
    data = (SAMPLES / "grid_bowtie.geojson").read_bytes()
    with saved_upload(_upload("../../grid.geojson", data)) as path:
        assert path.name == "grid.geojson" and path.read_bytes() == data
        assert path.parent.name.startswith("wangge-upload-")  # the name's "../" is dropped


@pytest.mark.parametrize("name, data, why", [
    ("grid.zip", b"PK\x03\x04 not really a zip", "zip"),
    ("grid.zip", _zip({"readme.txt": b"no layers here"}), ".shp"),
])
def test_bad_uploads_are_422_naming_the_field(name: str, data: bytes, why: str) -> None:
    with pytest.raises(InvalidInput) as err, saved_upload(_upload(name, data)):
        pass
    (problem,) = err.value.problems
    assert problem.field == "file" and why in f"{err.value.message} {problem.reason}"


@pytest.mark.parametrize("member", ["../escaped.shp", "/abs.shp"])
def test_members_outside_the_zip_are_refused(tmp_path: Path, member: str) -> None:
    shp = {f"x/{f.name}": f.read_bytes() for f in (SAMPLES / "no_crs").iterdir()}
    data = _zip({**shp, member: b"x"})
    with pytest.raises(InvalidInput) as err, saved_upload(_upload("grid.zip", data)):
        pass
    assert err.value.problems[0].field == "file" and member in err.value.problems[0].reason
    assert not (tmp_path.parent / "escaped.shp").exists() and not Path("/abs.shp").exists()
