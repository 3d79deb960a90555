"""Two real uvicorn workers behind a real HAProxy (geo/scale/proxy.py): lookups and reports
through the balancer, a worker killed mid-load, and a grid change made through one worker
answered by the other after one LISTEN/NOTIFY refresh (polling is set to 30 s, so only the
notification can explain a prompt answer)."""

from __future__ import annotations

import os
import signal
import socket
import threading
import time
from pathlib import Path

import httpx
import pytest
import shapely
from factories import AREAS_GEN1, C1, G11, G12, seed_hand_made

from geo.core.embedded import free_port
from geo.scale.proxy import ProxyError, Worker, WorkerPool
from geo.scale.settings import ScaleSettings

pytestmark = pytest.mark.skipif(not Path("/usr/sbin/haproxy").exists(),
                                reason="Debian package haproxy is not installed")


def haproxy_servers(pool: WorkerPool) -> dict[str, dict[str, str]]:
    """HAProxy's own view of its servers (``show stat`` on the stats socket)."""
    with socket.socket(socket.AF_UNIX) as s:
        s.connect(str(pool.run_dir / "haproxy.sock"))
        s.sendall(b"show stat\n")
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    lines = data.decode().splitlines()
    head = lines[0].lstrip("# ").split(",")
    rows = [dict(zip(head, line.split(","), strict=False)) for line in lines[1:] if line]
    return {r["svname"]: r for r in rows if r["pxname"] == "workers"}


@pytest.fixture(scope="module")
def pool(fresh_database, tmp_path_factory):
    url = fresh_database()
    seed_hand_made(url).dispose()
    env = {"WANGGE_DATABASE_URL": url, "WANGGE_JWT_SECRET": "s" * 64,
           "WANGGE_ENFORCE_ACCESS": "false", "WANGGE_BALANCE_MODE": "warn",
           "WANGGE_CHECK_INTERVAL_MS": "30000", "WANGGE_POOL_SIZE": "4",
           "WANGGE_GAP_TOLERANCE_M2": "1e9",  # the hand-made grid G11 has a hole
           "WANGGE_LOGIN_FAILURES_PER_ADDRESS": "4"}
    p = WorkerPool(2, host="127.0.0.1", port=free_port(), env=env,
                   state_dir=tmp_path_factory.mktemp("proxy"),
                   settings=ScaleSettings(health_interval_ms=200, restart_delay_s=0.2))
    with p:
        yield p


GRIDS = sorted((code, shapely.from_wkt(wkt)) for lvl, code, _p, _n, wkt in AREAS_GEN1
               if lvl == "grid")


def _grid_of(lon: float, lat: float) -> str | None:
    """The grid holding a point, by shapely (smallest code on a shared boundary)."""
    return next((code for code, g in GRIDS if g.covers(shapely.Point(lon, lat))), None)


def _base(pool: WorkerPool) -> str:
    return f"http://127.0.0.1:{pool.port}"


def worker_client(w: Worker, timeout: float = 10) -> httpx.Client:
    """An httpx client for worker ``w`` alone, over its Unix socket (not through HAProxy)."""
    return httpx.Client(transport=httpx.HTTPTransport(uds=str(w.socket)),
                        base_url="http://worker", timeout=timeout)


def test_lookups_and_reports_through_the_balancer(pool):
    with httpx.Client(base_url=_base(pool), timeout=10) as c:
        for _ in range(20):
            r = c.get("/v1/lookup", params={"lon": 119.31, "lat": 26.03})
            assert r.status_code == 200, r.text
            assert r.json()["grid"]["code"] == _grid_of(119.31, 26.03) == G12
        ids = []
        for i in range(6):
            lon, lat = 119.301 + i * 0.0065, 26.011
            r = c.post("/v1/incidents", json={"category": "rubbish", "lon": lon, "lat": lat,
                                              "actor": "test"})
            assert r.status_code == 201, r.text
            assert r.json()["grid_code"] == _grid_of(lon, lat)
            ids.append(r.json()["id"])
        for i in ids:
            assert c.get(f"/v1/incidents/{i}").status_code == 200
    for w in pool.workers:  # each worker answers on its own socket, HAProxy's checks too
        assert w.socket == pool.run_dir / f"worker-{w.number}.sock"
        with worker_client(w) as direct:
            assert direct.get("/v1/ping").status_code == 200
    servers = haproxy_servers(pool)
    assert {s: servers[s]["status"] for s in ("w1", "w2")} == {"w1": "UP", "w2": "UP"}
    assert all(int(servers[s]["stot"]) >= 5 for s in ("w1", "w2")), servers  # both served


def test_a_state_dir_too_long_for_a_socket_path_is_refused_up_front(tmp_path):
    with pytest.raises(ProxyError, match="at most 107"):
        WorkerPool(2, host="127.0.0.1", port=free_port(), state_dir=tmp_path / ("x" * 100))


def _refusing(path: Path) -> float:
    """When the worker listening on the Unix socket ``path`` stops accepting connections
    (connecting is refused: the file stays, nobody listens). SIGKILL is delivered at once, but
    the kernel takes a while (tens of ms for a large threaded process) to tear it down, and
    until its listening socket is closed it still accepts connections: a request sent to it
    meanwhile is one it held, like those in flight at the kill."""
    while True:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(0.5)
            try:
                s.connect(str(path))
            except OSError:  # ConnectionRefusedError once the process is gone
                return time.monotonic()
        time.sleep(0.001)


def test_killed_worker_costs_at_most_its_in_flight_requests(pool):
    stop = threading.Event()
    results: dict[str, list[int]] = {"get": [], "post": [], "get_err": [], "post_err": []}
    lock = threading.Lock()

    started_err: list[tuple[str, float]] = []  # (client, when the failed request was sent)

    def client(kind: str, name: str) -> None:
        with httpx.Client(base_url=_base(pool), timeout=10) as c:
            while not stop.is_set():
                sent = time.monotonic()
                try:
                    if kind == "get":
                        r = c.get("/v1/lookup", params={"lon": 119.33, "lat": 26.02})
                    else:
                        r = c.post("/v1/incidents", json={"category": "noise", "lon": 119.335,
                                                          "lat": 26.02, "actor": "load"})
                    code = r.status_code
                except httpx.HTTPError:
                    code = -1
                with lock:
                    ok = code == (200 if kind == "get" else 201)
                    results[kind if ok else kind + "_err"].append(code)
                    if not ok:
                        started_err.append((name, sent))

    kinds = ("get",) * 4 + ("post",) * 2
    threads = [threading.Thread(target=client, args=(k, f"{k}{i}")) for i, k in enumerate(kinds)]
    for t in threads:
        t.start()
    time.sleep(1.5)
    victim = pool.workers[0]
    before = victim.restarts
    os.kill(victim.proc.pid, signal.SIGKILL)
    dead_at = _refusing(victim.socket)
    time.sleep(3.0)
    stop.set()
    for t in threads:
        t.join(15)
    assert len(results["get"]) > 50 and len(results["post"]) > 5, {
        k: len(v) for k, v in results.items()}
    # Only the requests the dead worker held can fail. A GET it held is retried on the other
    # worker, so no lookup fails. A POST is never re-sent (it may have been filed), so a report
    # it held fails: one in flight at the kill, or one sent while the dead worker's kernel still
    # accepted connections (a large process is torn down for tens of ms after SIGKILL, its
    # sockets last); HAProxy takes the worker out at its first failure. Anything sent after the
    # dead worker stopped accepting must succeed.
    assert results["get_err"] == [], (started_err, dead_at, results)
    assert all(sent <= dead_at for _, sent in started_err), (started_err, dead_at, results)
    # the supervisor restarted it and HAProxy put it back
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if victim.restarts > before and haproxy_servers(pool)["w1"]["status"] == "UP":
            break
        time.sleep(0.2)
    assert victim.restarts == before + 1
    assert haproxy_servers(pool)["w1"]["status"] == "UP"


def test_workers_see_each_client_address_not_the_balancers(pool):
    """Behind HAProxy the failed sign-in throttle counts each client's own address (its
    X-Forwarded-For, HAProxy's, not one the client sends): after 4 failures from 127.0.0.2 that
    address gets 429, spoofed header or not, while 127.0.0.3 is still answered 401."""
    def client(address: str) -> httpx.Client:
        return httpx.Client(base_url=_base(pool), timeout=30,
                            transport=httpx.HTTPTransport(local_address=address))

    def sign_in(c: httpx.Client, user: str, **headers: str) -> int:
        return c.post("/v1/auth/token", data={"username": user, "password": "wrong"},
                      headers=headers).status_code

    with client("127.0.0.2") as a, client("127.0.0.3") as b:
        first = [sign_in(a, f"nobody-{i}") for i in range(4)]  # distinct accounts
        assert first == [401] * 4, first
        assert sign_in(a, "nobody-4") == 429
        assert sign_in(a, "nobody-5", **{"X-Forwarded-For": "10.9.9.9"}) == 429
        assert sign_in(b, "nobody-6") == 401


def test_grid_change_through_one_worker_is_answered_by_the_other(pool):
    probe = {"lon": 119.31, "lat": 26.03}  # inside G12
    assert _grid_of(probe["lon"], probe["lat"]) == G12
    with worker_client(pool.workers[0], 30) as w1, worker_client(pool.workers[1]) as w2:
        deadline = time.monotonic() + 60  # the worker killed above may still be warming up
        while time.monotonic() < deadline:
            try:
                if w1.get("/v1/ping", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
        assert w2.get("/v1/lookup", params=probe).json()["grid"]["code"] == G12
        r = w1.post("/v1/planning/merge", json={"codes": [G11, G12]})
        assert r.status_code == 200, r.text
        (new,) = r.json()["created"]
        assert new.startswith(C1) and new not in (G11, G12)
        t0 = time.monotonic()
        while time.monotonic() - t0 < 5:  # polling alone would take 30 s
            got = w2.get("/v1/lookup", params=probe).json()["grid"]["code"]
            if got == new:
                break
            time.sleep(0.02)
    assert got == new, f"worker 2 still answers {got} after {time.monotonic() - t0:.1f} s"
