"""HTTP routes for layers: read one layer as GeoJSON, import a file (validated first)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Depends, File, Form, Query, Request, UploadFile
from pydantic import BaseModel, Field
from sqlalchemy.engine import Connection

from api.dependencies import CONNECTION, READ_CONNECTION, AppSettings
from api.paging import check_page, page_links
from api.policy import PolicyRoute, area_within
from api.schemas import GeoJSONAnswer
from api.uploads import saved_upload
from geo.auth.service import refuse_import_outside
from geo.core.errors import InvalidInput, Problem
from geo.core.settings import DataSettings
from geo.data.io import import_file, read_file, read_layer
from geo.data.validate import LAYERS

router = APIRouter(prefix="/v1/layers", tags=["layers"], route_class=PolicyRoute)


MAX_LIMIT = 10_000
LAYER_SUFFIXES = (".gpkg", ".geojson", ".json", ".zip")
data_settings = AppSettings(DataSettings, "data_settings")


class FeatureCollection(BaseModel):
    """An RFC 7946 FeatureCollection (lon, lat in WGS 84), one page of a layer."""

    type: str = Field("FeatureCollection", description="Always FeatureCollection.")
    features: list[dict[str, Any]] = Field(description="GeoJSON Features; properties per layer.")
    total: int = Field(description="Features matching the query, on every page.")
    offset: int = Field(description="Index of this page's first feature.")
    limit: int = Field(description="Most features a page holds.")
    links: list[dict[str, str]] = Field(description="self, and next/prev when there are more.")


class ImportResult(BaseModel):
    generation: int = Field(description="Id of the generation the import created.")
    layers: list[str] = Field(description="Layers written.")


class LayerQuery:
    """Paging and a bounding box for a layer read."""

    def __init__(
        self,
        limit: int = Query(1000, description=f"Most features a page holds, 1 to {MAX_LIMIT} "
                           "(more is a 400, never a silent cut)."),
        offset: int = Query(0, description="Features to skip (follow the next link)."),
        bbox: str | None = Query(
            None, description="minLon,minLat,maxLon,maxLat in WGS 84 degrees.",
            examples=["119.28,26.03,119.32,26.07"]),
        generation: int | None = Query(
            None, ge=1, description="Boundary generation to read areas from; default current."),
        within: str | None = Query(
            None, pattern=r"^[0-9]{6}([0-9]{3}){0,3}$",
            description="Only features in this area (6, 9, 12 or 15-digit code). A signed-in "
            "user reads only their own area: omitted, it is their area; a wider code is "
            "narrowed to it; a code outside it is refused (403)."),
    ) -> None:
        check_page(limit, offset, MAX_LIMIT)
        self.limit = limit
        self.offset = offset
        self.generation = generation
        self.within = within
        self.bbox = _parse_bbox(bbox) if bbox else None


def _parse_bbox(raw: str) -> tuple[float, float, float, float]:
    try:
        parts = [float(v) for v in raw.split(",")]
    except ValueError:
        parts = []
    if (len(parts) != 4 or parts[0] > parts[2] or parts[1] > parts[3]
            or any(abs(v) > 180 for v in parts[::2]) or any(abs(v) > 90 for v in parts[1::2])):
        raise InvalidInput("bad bbox", [Problem(
            reason="expected minLon,minLat,maxLon,maxLat with min <= max, |lon|<=180, |lat|<=90",
            field="bbox")])
    return parts[0], parts[1], parts[2], parts[3]


@router.get(
    "/{layer}",
    operation_id="get_layer",
    summary="One layer of the current generation as a GeoJSON FeatureCollection",
    response_model=FeatureCollection,
)
def get_layer(
    layer: str,
    request: Request,
    q: LayerQuery = Depends(),
    conn: Connection = READ_CONNECTION,
) -> dict[str, Any]:
    # read_layer has no offset or count: the whole match is read and one page cut from it
    gdf = read_layer(conn, layer, bbox=q.bbox, generation=q.generation,
                     within=area_within(request, q.within))
    total = len(gdf)
    gdf = gdf.iloc[q.offset:q.offset + q.limit]
    links = page_links(request, q.offset, q.limit, total)
    page = {"total": total, "offset": q.offset, "limit": q.limit, "links": links}
    if layer == "grid_team":
        return GeoJSONAnswer({"type": "FeatureCollection", **page, "features": [
            {"type": "Feature", "geometry": None,
             "properties": {k: v for k, v in row.items()}}
            for row in gdf.to_dict(orient="records")]})
    return GeoJSONAnswer({**json.loads(gdf.to_json(drop_id=True, to_wgs84=True)), **page})


@router.post(
    "/import",
    operation_id="import_layers",
    summary="Import a GeoPackage, GeoJSON or zipped Shapefile: validated, then one transaction. "
    "A planner scoped to an area may import only features inside it, and only layers that hold "
    "nothing outside it (an import replaces whole layers).",
    response_model=ImportResult,
    responses={422: {"description": "Validation problems, each naming feature/field/reason."},
               403: {"description": "Features outside the caller's area, each named."},
               413: {"description": "More features than max_import_features."}},
)
def import_layers(
    request: Request,
    file: UploadFile = File(description=".gpkg, .geojson/.json, or a .zip holding a .shp set"),
    layer: str | None = Form(None, description="Layer name for a single-layer file.",
                             max_length=64),
    repair: bool = Form(False, description="Fix invalid geometry with make_valid."),
    conn: Connection = CONNECTION,
    settings: DataSettings = Depends(data_settings),
) -> dict[str, Any]:
    name = Path(file.filename or "upload").name
    if Path(name).suffix.lower() not in LAYER_SUFFIXES:
        raise InvalidInput("unsupported file type", [Problem(
            reason="upload a .gpkg, .geojson/.json or a .zip with a shapefile", field="file")])
    if layer is not None and layer not in LAYERS:
        raise InvalidInput("unknown layer", [Problem(
            reason=f"expected one of {', '.join(LAYERS)}", field="layer", feature=layer)])
    with saved_upload(file) as path:
        source = path.parent if name.lower().endswith(".zip") else path
        data = read_file(source, layer=layer)
        area = area_within(request, None)
        if area is not None:
            refuse_import_outside(conn, data, area)
        generation = import_file(conn, source, layer=layer, repair=repair, settings=settings,
                                 note=f"upload {name}")
        written = sorted(data.keys())
    return {"generation": generation, "layers": written}
