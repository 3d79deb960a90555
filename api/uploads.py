"""Uploaded files (layer and planning imports): saved, unzipped within limits, path-free errors.

One helper for every route that takes a file. A zip is checked before anything is extracted:
at most ``max_zip_members`` members, at most ``max_uncompressed_bytes`` declared in total, no
absolute or ``..`` paths; extraction then counts the bytes actually written and stops at the
same cap (a header can lie), so a zip bomb never fills the disk. Error text never shows the
temporary directory: it is replaced by the uploaded file's name.
"""

from __future__ import annotations

import dataclasses
import shutil
import tempfile
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path, PurePosixPath

from fastapi import UploadFile
from pydantic import Field

from geo.core.errors import InvalidInput, PayloadTooLarge, Problem, WanggeError
from geo.core.settings import WanggeSettings

_CHUNK = 1024 * 1024


class UploadSettings(WanggeSettings):
    """Limits on uploaded files (WANGGE_MAX_ZIP_MEMBERS, WANGGE_MAX_UNCOMPRESSED_BYTES)."""

    max_zip_members: int = Field(default=64, description="Most files a zip upload may hold.")
    max_uncompressed_bytes: int = Field(
        default=512 * 1024 * 1024,
        description="Most bytes a zip upload may unpack to, all members together (bytes).")


def _scrub(exc: WanggeError, tmp: str, name: str) -> WanggeError:
    """The same error with the temporary directory replaced by the upload's name."""
    def clean(text: str) -> str:
        return text.replace(tmp + "/", "").replace(tmp, name)

    exc.message = clean(exc.message)
    exc.problems = [dataclasses.replace(p, reason=clean(p.reason),
                                        feature=clean(p.feature) if isinstance(p.feature, str)
                                        else p.feature) for p in exc.problems]
    exc.args = (exc.message,)
    return exc


def _zip_members(zf: zipfile.ZipFile, settings: UploadSettings) -> list[zipfile.ZipInfo]:
    members = [m for m in zf.infolist() if not m.is_dir()]
    if len(members) > settings.max_zip_members:
        raise PayloadTooLarge("the zip holds too many files", [Problem(
            field="file", reason=f"{len(members)} files; at most {settings.max_zip_members}",
            detail={"limit": settings.max_zip_members})])
    declared = sum(m.file_size for m in members)
    if declared > settings.max_uncompressed_bytes:
        raise PayloadTooLarge("the zip unpacks to more than the limit", [Problem(
            field="file", reason=f"{declared} bytes uncompressed; at most "
            f"{settings.max_uncompressed_bytes}",
            detail={"limit": settings.max_uncompressed_bytes})])
    for m in members:
        parts = PurePosixPath(m.filename.replace("\\", "/")).parts
        if m.filename.startswith(("/", "\\")) or ".." in parts or not parts:
            raise InvalidInput("the zip holds a path outside itself",
                               [Problem(field="file", reason=f"member '{m.filename}'")])
    return members


def _extract(zf: zipfile.ZipFile, members: list[zipfile.ZipInfo], into: Path,
             settings: UploadSettings) -> None:
    written = 0
    for m in members:
        target = into / PurePosixPath(m.filename.replace("\\", "/"))
        target.parent.mkdir(parents=True, exist_ok=True)
        with zf.open(m) as src, target.open("wb") as out:
            while chunk := src.read(_CHUNK):
                written += len(chunk)
                if written > settings.max_uncompressed_bytes:
                    raise PayloadTooLarge("the zip unpacks to more than the limit", [Problem(
                        field="file", reason="more than "
                        f"{settings.max_uncompressed_bytes} bytes uncompressed")])
                out.write(chunk)


@contextmanager
def saved_upload(file: UploadFile, *, settings: UploadSettings | None = None,
                 find: tuple[str, ...] = (".shp", ".geojson")) -> Iterator[Path]:
    """The upload saved to a private temporary directory (removed afterwards). A ``.zip`` is
    checked and unpacked; the path given is then its first file ending in one of ``find``.
    Domain errors raised inside the block lose the temporary path from their text; other read
    errors of the file become a 422 naming it."""
    settings = settings or UploadSettings()
    name = Path(file.filename or "upload").name or "upload"
    tmp = tempfile.mkdtemp(prefix="wangge-upload-")
    try:
        target = Path(tmp) / name
        with target.open("wb") as out:
            shutil.copyfileobj(file.file, out, _CHUNK)
        path = target
        if name.lower().endswith(".zip"):
            unpacked = Path(tmp) / "unzipped"
            try:
                with zipfile.ZipFile(target) as zf:
                    _extract(zf, _zip_members(zf, settings), unpacked, settings)
            except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, NotImplementedError,
                    ValueError) as exc:
                raise InvalidInput("the upload is not a readable zip file", [Problem(
                    field="file", reason=str(exc) or type(exc).__name__)]) from None
            target.unlink()
            found = sorted(p for p in unpacked.rglob("*") if p.suffix.lower() in find)
            if not found:
                raise InvalidInput("nothing to read in the zip", [Problem(
                    field="file", reason=f"the zip holds no {' or '.join(find)} file")])
            path = found[0]
        yield path
    except WanggeError as exc:
        raise _scrub(exc, tmp, name) from None
    except (OSError, RuntimeError) as exc:  # GDAL/pyogrio read errors carry the path
        raise _scrub(InvalidInput(f"cannot read {name}", [Problem(
            field="file", reason=str(exc).splitlines()[0] if str(exc) else type(exc).__name__)]),
            tmp, name) from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
