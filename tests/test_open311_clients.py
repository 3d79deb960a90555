"""Open311 clients nobody here wrote, over real HTTP (uvicorn in a subprocess, access policy on):
``civicbot`` (PyPI) lists services, reads a service definition, posts a request with a photo
URL and reads it back in JSON; ``georeport`` (PyPI, XML through xmltodict) reads the same
services and request back in XML. civicbot parses only JSON answers, so the XML POST is sent
with httpx and read with xmltodict (georeport's own XML parser).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import xmltodict
from factories import AREA_SQL

from bench.common import uvicorn_server
from geo.auth.service import create_api_key
from geo.core.db import make_engine

civicbot_http = pytest.importorskip("civicbot.http")
civicbot_open311 = pytest.importorskip("civicbot.open311")
civicbot_registry = pytest.importorskip("civicbot.registry")
georeport = pytest.importorskip("georeport")

PHOTO = "https://img.example.cn/open311/pothole-0042.jpg"


@pytest.fixture(scope="module")
def service(fresh_database: Any) -> Iterator[tuple[str, str]]:
    url = fresh_database()
    eng = make_engine(url)
    with eng.begin() as c:
        c.exec_driver_sql(AREA_SQL)
        key = create_api_key(c, "civicbot", scopes=("open311",))
    eng.dispose()
    env = {**os.environ, "WANGGE_DATABASE_URL": url, "WANGGE_ENFORCE_ACCESS": "true",
           "WANGGE_JWT_SECRET": "open311-clients-" + "x" * 32}
    with uvicorn_server(env, start_seconds=60) as base:
        yield base, key


def _civicbot(base: str) -> Any:
    endpoint = civicbot_registry.Endpoint(id="wangge", name="wangge 网格",
                                          base_url=f"{base}/open311/v2", write=True)
    transport = civicbot_http.HttpTransport(
        rate_limiter=civicbot_http.RateLimiter(min_interval=0.0))
    return civicbot_open311.Open311Client(endpoint, transport=transport,
                                          jurisdiction_id="wangge")


def test_civicbot_json_and_georeport_xml(service: tuple[str, str]) -> None:
    base, key = service
    bot = _civicbot(base)
    services = bot.list_services()
    codes = {s["service_code"] for s in services}
    assert {"rubbish", "noise", "snow_ice"} <= codes
    assert bot.get_service_definition("rubbish") == {"service_code": "rubbish",
                                                     "attributes": []}

    sent = bot.create_request("rubbish", dry_run=False, confirm="SEND", api_key=key,
                              validate_remote=True, lat=26.05, lng=119.305,
                              description="楼下垃圾堆了三天", media_url=PHOTO,
                              email="resident@example.cn")
    [posted] = sent.response
    rid = posted["service_request_id"]
    got = bot.get_request(rid)
    assert got["media_url"] == PHOTO and got["service_code"] == "rubbish"
    assert got["lat"] == pytest.approx(26.05) and got["long"] == pytest.approx(119.305)
    assert got["service_notice"] == posted["service_notice"]
    assert "example.cn" not in str(got).replace(PHOTO, "")
    assert rid in {r["service_request_id"] for r in bot.list_requests(service_code="rubbish")}

    xml = georeport.GeoReport(f"{base}/open311/v2", jurisdiction="wangge",
                              output_format="xml")
    xml_services = xml.get_service_list()
    assert {s["service_code"] for s in xml_services} == codes
    assert xml.get_service_definition("rubbish")["service_code"] == "rubbish"
    back = xml.get_service_request(rid)
    assert back["service_request_id"] == rid and back["media_url"] == PHOTO
    assert float(back["lat"]) == pytest.approx(26.05)
    assert back["status"] == got["status"] == "open"

    # a POST answered in XML, read back in XML by georeport
    r = httpx.post(f"{base}/open311/v2/requests.xml",
                   data={"api_key": key, "jurisdiction_id": "wangge", "service_code": "noise",
                         "lat": "26.045", "long": "119.315", "media_url": PHOTO + "?2"})
    assert r.status_code == 201, r.text
    rid2 = xmltodict.parse(r.content)["service_requests"]["request"]["service_request_id"]
    assert xml.get_service_request(rid2)["media_url"] == PHOTO + "?2"

    # errors reach the clients in the spec's format and codes
    with pytest.raises(civicbot_http.HttpError) as err:
        bot.get_request("99999999")
    assert err.value.status == 404
    wrong = httpx.post(f"{base}/open311/v2/requests.json",
                       data={"service_code": "noise", "lat": "26.045", "long": "119.315"})
    assert wrong.status_code == 403 and wrong.json()[0]["code"] == 403


@pytest.mark.browser
def test_browser_on_another_origin_posts(service: tuple[str, str], browser: Any) -> None:
    """Chromium on a page of another origin (a second local HTTP server, another port) posts a
    JSON request (preflighted) and a form to the service and reads the answers: real CORS."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    base, key = service

    class Page(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = "<html><body>小程序</body></html>".encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    other = ThreadingHTTPServer(("127.0.0.1", 0), Page)
    threading.Thread(target=other.serve_forever, daemon=True).start()
    origin = f"http://127.0.0.1:{other.server_address[1]}"
    page = browser.new_page()
    try:
        page.goto(f"{origin}/report")
        result = page.evaluate("""async ([base, key, photo]) => {
            const json = await fetch(base + '/open311/v2/requests.json', {
                method: 'POST', headers: {'Content-Type': 'application/json'},
                body: JSON.stringify({api_key: key, service_code: 'parking', lat: 26.055,
                                      long: 119.318, media_url: photo})});
            const form = await fetch(base + '/open311/v2/requests.json', {
                method: 'POST', body: new URLSearchParams({api_key: key,
                    service_code: 'noise', lat: '26.041', long: '119.301'})});
            const list = await fetch(base + '/open311/v2/requests.json?page_size=1');
            return {origin: location.origin, json: [json.status, await json.json()],
                    form: [form.status, await form.json()],
                    total: list.headers.get('X-Total-Count'),
                    link: list.headers.get('Link')};
        }""", [base, key, PHOTO])
    finally:
        page.close()
        other.shutdown()
    assert result["origin"] == origin != base
    assert result["json"][0] == 201 and result["form"][0] == 201
    rid = result["json"][1][0]["service_request_id"]
    [got] = httpx.get(f"{base}/open311/v2/requests/{rid}.json").json()
    assert got["media_url"] == PHOTO and got["service_code"] == "parking"
    assert int(result["total"]) >= 2 and 'rel="next"' in result["link"]
