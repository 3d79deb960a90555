"""Open311 GeoReport v2 in full (issue 19 item 8) and paged incident lists (item 6), over the
real app and database.

XML is read with the standard library's parser, distances are checked with pyproj's geodesic,
department names and building points come from the tables themselves, not from the code under
test.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any
from xml.etree import ElementTree as ET

import pytest
from factories import AREA_SQL
from fastapi.testclient import TestClient
from pyproj import Geod
from sqlalchemy import create_engine

from api.main import create_app
from geo.auth.service import AuthSettings, create_api_key
from geo.core.db import make_engine

GEOD = Geod(ellps="WGS84")
BASE = "/open311/v2"
# buildings with a postal address (EPSG:4326): one in each grid of AREA_SQL, and two sharing one
BUILDINGS_SQL = """
INSERT INTO building (code, name, location, address) VALUES
 ('B-W', '西楼', ST_SetSRID(ST_MakePoint(119.3050, 26.0500), 4326), '测试路 8 号'),
 ('B-E', '东楼', ST_SetSRID(ST_MakePoint(119.3150, 26.0450), 4326), 'Test Road 12'),
 ('B-T1', '双楼甲', ST_SetSRID(ST_MakePoint(119.3020, 26.0420), 4326), '双号路 1 号'),
 ('B-T2', '双楼乙', ST_SetSRID(ST_MakePoint(119.3180, 26.0580), 4326), '双号路 1 号');
"""


@pytest.fixture(scope="module")
def world(fresh_database: Any) -> Iterator[tuple[TestClient, str, Any]]:
    eng = make_engine(fresh_database())
    with eng.begin() as c:
        c.exec_driver_sql(AREA_SQL)
        c.exec_driver_sql(BUILDINGS_SQL)
        key = create_api_key(c, "open311-client", scopes=("open311",))
    auth = AuthSettings(jwt_secret="open311-full-" + "x" * 32, enforce_access=True)
    with TestClient(create_app(engine=eng, auth_settings=auth)) as tc:
        yield tc, key, eng
    eng.dispose()


def _post(tc: TestClient, key: str, fmt: str = "json", **form: Any) -> Any:
    return tc.post(f"{BASE}/requests.{fmt}", data={"api_key": key, **form})


def _errors_ok(resp: Any, status: int) -> list[str]:
    """The spec's error list, in the format the path names; returns the descriptions."""
    assert resp.status_code == status, resp.text
    if resp.request.url.path.endswith(".xml"):
        root = ET.fromstring(resp.content)
        assert root.tag == "errors"
        errs = [{c.tag: c.text for c in e} for e in root]
        assert errs and all(e["code"] == str(status) for e in errs)
    else:
        errs = resp.json()
        assert isinstance(errs, list) and errs
        assert all(set(e) == {"code", "description"} and e["code"] == status for e in errs)
    return [e["description"] for e in errs]


def test_xml_on_every_path(world: tuple[TestClient, str, Any]) -> None:
    tc, key, _ = world
    services = ET.fromstring(tc.get(f"{BASE}/services.xml").content)
    assert services.tag == "services"
    codes = [s.findtext("service_code") for s in services.findall("service")]
    assert codes == [s["service_code"] for s in tc.get(f"{BASE}/services.json").json()]
    assert {s.findtext("metadata") for s in services} == {"false"}

    definition = ET.fromstring(tc.get(f"{BASE}/services/rubbish.xml").content)
    assert definition.tag == "service_definition"
    assert definition.findtext("service_code") == "rubbish"
    assert tc.get(f"{BASE}/services/rubbish.json").json() == {"service_code": "rubbish",
                                                              "attributes": []}
    _errors_ok(tc.get(f"{BASE}/services/no_such.xml"), 404)

    posted = _post(tc, key, "xml", service_code="noise", lat="26.051", long="119.306",
                   description="广场舞音响\x0b太吵")
    assert posted.status_code == 201 and posted.headers["content-type"].startswith("text/xml")
    [req] = ET.fromstring(posted.content).findall("request")
    rid = req.findtext("service_request_id")
    assert rid and req.findtext("service_notice")

    one = ET.fromstring(tc.get(f"{BASE}/requests/{rid}.xml").content)
    assert one.tag == "service_requests"
    [got] = one.findall("request")
    assert got.findtext("service_code") == "noise" and got.findtext("status") == "open"
    assert got.findtext("description") == "广场舞音响\ufffd太吵"  # no control char in XML
    assert float(got.findtext("lat") or 0) == pytest.approx(26.051)
    as_json = tc.get(f"{BASE}/requests/{rid}.json").json()[0]
    assert {c.tag for c in got} == set(as_json)
    listed = ET.fromstring(tc.get(f"{BASE}/requests.xml", params={"service_request_id": rid})
                           .content)
    assert [r.findtext("service_request_id") for r in listed] == [rid]

    disc = ET.fromstring(tc.get("/open311/discovery.xml").content)
    assert disc.tag == "discovery"
    [endpoint] = disc.find("endpoints") or []
    assert endpoint.findtext("url", "").endswith("/open311/v2")
    assert {f.text for f in endpoint.find("formats") or []} == {"text/xml", "application/json"}
    assert tc.get("/open311/discovery.json").json()["endpoints"][0]["specification"] \
        == "http://wiki.open311.org/GeoReport_v2"


def test_media_url_and_service_notice_read_back(world: tuple[TestClient, str, Any]) -> None:
    tc, key, eng = world
    photo = "https://img.example.cn/wechat/2026/12/rubbish-0001.jpg"
    r = _post(tc, key, service_code="rubbish", lat="26.047", long="119.303", media_url=photo)
    assert r.status_code == 201, r.text
    [posted] = r.json()
    [got] = tc.get(f"{BASE}/requests/{posted['service_request_id']}.json").json()
    assert got["media_url"] == photo
    assert got["service_notice"] == posted["service_notice"]
    with eng.connect() as c:
        stored = c.exec_driver_sql("SELECT media_url FROM incident WHERE id = %s",
                                   (int(posted["service_request_id"]),)).scalar_one()
    assert stored == photo
    bad = _post(tc, key, service_code="rubbish", lat="26.047", long="119.303",
                media_url="javascript:alert(1)")
    assert any("media_url" in d for d in _errors_ok(bad, 400))


def test_agency_responsible_names_the_departments(world: tuple[TestClient, str, Any]) -> None:
    tc, key, eng = world
    r = _post(tc, key, service_code="sewer_blocked", lat="26.052", long="119.312")
    [got] = tc.get(f"{BASE}/requests/{r.json()[0]['service_request_id']}.json").json()
    with eng.connect() as c:
        names = [n for (n,) in c.exec_driver_sql(
            "SELECT d.name FROM category_department cd JOIN department d"
            " ON d.id = cd.department_id WHERE cd.category_code = 'sewer_blocked'"
            " ORDER BY d.code")]
    assert names and got["agency_responsible"] == "、".join(names)


def test_address_string_locates_a_known_building(world: tuple[TestClient, str, Any]) -> None:
    tc, key, eng = world
    r = _post(tc, key, service_code="rubbish", address_string="  test road 12 ")
    assert r.status_code == 201, r.text
    rid = r.json()[0]["service_request_id"]
    [got] = tc.get(f"{BASE}/requests/{rid}.json").json()
    assert (got["long"], got["lat"]) == pytest.approx((119.3150, 26.0450), abs=1e-9)
    assert got["address"] == "  test road 12 "
    with eng.connect() as c:
        grid = c.exec_driver_sql("SELECT grid_code FROM incident WHERE id = %s",
                                 (int(rid),)).scalar_one()
    assert grid == "350104001001002"  # the east grid holds the building (AREA_SQL)
    unknown = _post(tc, key, service_code="rubbish", address_string="不存在路 99 号")
    assert any("address_string" in d for d in _errors_ok(unknown, 400))
    twice = _post(tc, key, service_code="rubbish", address_string="双号路 1 号")
    assert any("several" in d for d in _errors_ok(twice, 400))
    _errors_ok(_post(tc, key, service_code="rubbish"), 400)  # no location at all


def test_errors_on_every_path(world: tuple[TestClient, str, Any]) -> None:
    tc, key, eng = world
    paths = ["/open311/discovery", f"{BASE}/services", f"{BASE}/services/rubbish",
             f"{BASE}/requests", f"{BASE}/requests/1"]
    for fmt in ("json", "xml"):
        for p in paths[1:]:
            d = _errors_ok(tc.get(f"{p}.{fmt}", params={"jurisdiction_id": "beijing"}), 404)
            assert "jurisdiction_id" in d[0]
            assert tc.get(f"{p}.{fmt}", params={"jurisdiction_id": "wangge"}).status_code == 200
        assert tc.get(f"{paths[0]}.{fmt}").status_code == 200
        _errors_ok(tc.post(f"{BASE}/requests.{fmt}", data={"service_code": "rubbish",
                                                           "lat": 26.05, "long": 119.305}), 403)
        _errors_ok(tc.post(f"{BASE}/requests.{fmt}", data={
            "api_key": "wg_not_a_key", "service_code": "rubbish", "lat": 26.05,
            "long": 119.305}), 403)
        _errors_ok(_post(tc, key, fmt, service_code="rubbish", lat=26.05, long=119.305,
                         jurisdiction_id="beijing"), 404)
        _errors_ok(_post(tc, key, fmt, service_code="no_such", lat=26.05, long=119.305), 404)
        _errors_ok(_post(tc, key, fmt, service_code="rubbish", lat="north", long=119.3), 400)
        _errors_ok(tc.get(f"{BASE}/requests/99999999.{fmt}"), 404)
        _errors_ok(tc.get(f"{BASE}/no/such/path.{fmt}"), 404)
        _errors_ok(tc.get(f"{BASE}/requests.{fmt}", params={"page_size": 1001}), 400)
        _errors_ok(tc.get(f"{BASE}/requests.{fmt}", params={"lat": 26.05}), 400)

    with eng.begin() as c:
        slow = create_api_key(c, "one-a-minute", scopes=("open311",), rate_per_minute=1)
    first = _post(tc, slow, service_code="rubbish", lat=26.049, long=119.304)
    assert first.status_code == 201, first.text
    limited = _post(tc, slow, "xml", service_code="rubbish", lat=26.049, long=119.304)
    _errors_ok(limited, 429)
    assert int(limited.headers["retry-after"]) > 0

    # an outage: the database cannot be reached
    app = tc.app
    good = app.state.engine  # type: ignore[attr-defined]
    app.state.engine = create_engine(  # type: ignore[attr-defined]
        "postgresql+psycopg2://nobody@127.0.0.1:1/none", pool_pre_ping=False)
    try:
        for fmt in ("json", "xml"):
            down = tc.get(f"{BASE}/services.{fmt}")
            _errors_ok(down, 503)
            assert down.headers["retry-after"]
    finally:
        app.state.engine.dispose()  # type: ignore[attr-defined]
        app.state.engine = good  # type: ignore[attr-defined]


def test_paging_and_radius_search(world: tuple[TestClient, str, Any]) -> None:
    tc, key, _ = world
    centre = (119.3080, 26.0460)
    ids = []
    for i in range(7):  # distinct categories: no duplicate links among them
        lon, lat, _ = GEOD.fwd(*centre, 45.0 * i, 60.0 * (i + 1))
        r = _post(tc, key, service_code=["rubbish", "noise", "parking", "sewer_blocked",
                                         "snow_ice", "neighbour_dispute", "rubbish"][i],
                  lat=lat, long=lon)
        assert r.status_code == 201, r.text
        ids.append(r.json()[0]["service_request_id"])

    everything = tc.get(f"{BASE}/requests.json", params={"page_size": 1000})
    total = int(everything.headers["x-total-count"])
    assert total == len(everything.json()) >= 7
    seen: list[str] = []
    url: str | None = f"{BASE}/requests.json?page_size=3"
    while url:
        page = tc.get(url)
        assert page.status_code == 200 and len(page.json()) <= 3
        assert int(page.headers["x-total-count"]) == total
        seen += [x["service_request_id"] for x in page.json()]
        links = page.headers["link"].split(", ")
        nxt = [x for x in links if x.endswith('rel="next"')]
        url = nxt[0].split(">")[0].lstrip("<") if nxt else None
    assert seen == [x["service_request_id"] for x in everything.json()]
    page2 = tc.get(f"{BASE}/requests.xml", params={"page": 2, "page_size": 3})
    assert [r.findtext("service_request_id") for r in ET.fromstring(page2.content)] == seen[3:6]

    radius = 250.0
    near = tc.get(f"{BASE}/requests.json", params={"lat": centre[1], "long": centre[0],
                                                    "radius": radius, "page_size": 1000}).json()
    expected = set()
    for x in everything.json():
        _, _, d = GEOD.inv(centre[0], centre[1], x["long"], x["lat"])
        if d <= radius:
            expected.add(x["service_request_id"])
    assert {x["service_request_id"] for x in near} == expected
    assert set(ids[:4]) <= expected and not set(ids[4:]) & expected  # 60..240 m in, 300+ out


def test_cors_for_a_browser_client_on_another_origin(world: tuple[TestClient, str, Any]) -> None:
    tc, _, _ = world
    origin = "https://miniapp.example.cn"
    pre = tc.options(f"{BASE}/requests.json", headers={
        "Origin": origin, "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "content-type"})
    assert pre.status_code == 200
    assert pre.headers["access-control-allow-origin"] in ("*", origin)
    assert "POST" in pre.headers["access-control-allow-methods"]
    got = tc.get(f"{BASE}/requests.json", headers={"Origin": origin})
    assert got.headers["access-control-allow-origin"] in ("*", origin)
    assert "x-total-count" in got.headers["access-control-expose-headers"].lower()
    # the rest of the API stays same-origin
    assert "access-control-allow-origin" not in tc.get(
        "/v1/incident-categories", headers={"Origin": origin}).headers


def test_incident_list_pages(world: tuple[TestClient, str, Any]) -> None:
    tc, _, eng = world
    with eng.connect() as c:
        n = c.exec_driver_sql("SELECT count(*) FROM incident").scalar_one()
    app_key = _admin_key(eng)
    everything = tc.get("/v1/incidents", params={"limit": 10_000},
                        headers={"X-API-Key": app_key}).json()
    assert everything["total"] == len(everything["items"]) == n
    got: list[int] = []
    url: str | None = "/v1/incidents?limit=4"
    while url:
        page = tc.get(url, headers={"X-API-Key": app_key}).json()
        assert page["total"] == n and len(page["items"]) <= 4
        got += [x["id"] for x in page["items"]]
        url = next((x["href"] for x in page["links"] if x["rel"] == "next"), None)
    assert got == [x["id"] for x in everything["items"]]
    too_many = tc.get("/v1/incidents", params={"limit": 10_001}, headers={"X-API-Key": app_key})
    assert too_many.status_code == 400 and too_many.json()["problems"][0]["field"] == "limit"


def _admin_key(eng: Any) -> str:
    with eng.begin() as c:
        key = create_api_key(c, "admin-reader", scopes=(), role="commander", area_code="350104")
    return key


def test_too_large_a_body_in_spec_format(world: tuple[TestClient, str, Any]) -> None:
    from geo.core.settings import ApiSettings

    _, key, eng = world
    app = create_app(engine=eng, api_settings=ApiSettings(max_body_bytes=500),
                     auth_settings=AuthSettings(jwt_secret="x" * 40, enforce_access=False))
    with TestClient(app) as small:
        for fmt in ("json", "xml"):
            r = small.post(f"{BASE}/requests.{fmt}", data={
                "api_key": key, "service_code": "rubbish", "lat": 26.05, "long": 119.305,
                "description": "长" * 400})
            _errors_ok(r, 413)
        assert small.post("/v1/incidents", content=b"{" + b" " * 600 + b"}").json()[
            "error"] == "PayloadTooLarge"  # the rest of the API keeps its own format
