"""N API workers behind HAProxy, started and supervised by the project (``wangge proxy``).

Each worker is its own uvicorn process listening on a Unix domain socket,
``<state_dir>/proxy/worker-N.sock``, with its own in-process lookup index (kept fresh by
``geo.scale.listener``). A socket, not a localhost TCP port: no port to pick or collide on, and
less CPU per request on both sides (no TCP/IP stack between HAProxy and the worker; measured
+26 % lookups/s for one worker, +14 % for two). HAProxy (Debian's ``haproxy``) balances them,
checks ``GET /v1/ping`` on each every ``health_interval_ms`` and takes a worker out after two
failed checks; a GET that a dying worker held is retried on another one. The supervisor
restarts a worker that exits (and HAProxy, should it exit), so the pool heals itself.

The configuration is rendered from ``haproxy.cfg.tmpl`` next to this module into
``<state_dir>/proxy/haproxy.cfg``; the worker logs go to ``<state_dir>/proxy/worker-N.log``.
"""

from __future__ import annotations

import http.client
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from string import Template

from geo.core.errors import InvalidInput, Problem, WanggeError
from geo.scale.settings import ScaleSettings

log = logging.getLogger(__name__)

TEMPLATE = Path(__file__).with_name("haproxy.cfg.tmpl")


class ProxyError(WanggeError):
    """HAProxy or a worker could not be started."""


# sun_path of struct sockaddr_un holds 108 bytes, the terminating NUL included
MAX_SOCKET_PATH = 107


def render_config(*, bind_host: str, bind_port: int, worker_sockets: list[Path], run_dir: Path,
                  check_ms: int = 500, balance: str = "roundrobin") -> str:
    """The HAProxy configuration text for workers listening on the Unix sockets
    ``worker_sockets`` (absolute paths)."""
    servers = "\n".join(f"    server w{i} unix@{p} check"
                        for i, p in enumerate(worker_sockets, 1))
    write_servers = "\n".join(f"    server w{i} unix@{p} track workers/w{i}"
                              for i, p in enumerate(worker_sockets, 1))
    return Template(TEMPLATE.read_text()).substitute(
        pidfile=run_dir / "haproxy.pid", stats_socket=run_dir / "haproxy.sock",
        bind_host=bind_host, bind_port=bind_port, balance=balance, check_ms=f"{check_ms}ms",
        fast_ms=f"{max(100, check_ms // 2)}ms", servers=servers,
        write_servers=write_servers)


class UnixHTTPConnection(http.client.HTTPConnection):
    """``http.client`` over the Unix domain socket at ``path`` (``timeout`` in seconds)."""

    def __init__(self, path: Path, timeout: float = 1.0) -> None:
        super().__init__("localhost", timeout=timeout)
        self.path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(str(self.path))
        except OSError:
            sock.close()
            raise
        self.sock = sock


def answers_ping(conn: http.client.HTTPConnection) -> bool:
    """Whether ``GET /v1/ping`` on ``conn`` answers 200 (closes ``conn``)."""
    try:
        conn.request("GET", "/v1/ping")
        return conn.getresponse().status == 200
    except (OSError, http.client.HTTPException):
        return False
    finally:
        conn.close()


@dataclass
class Worker:
    """One uvicorn process of the pool, listening on the Unix socket ``socket``."""

    number: int
    socket: Path
    proc: subprocess.Popen[bytes] | None = None
    restarts: int = 0
    started_at: float = field(default=0.0)


class WorkerPool:
    """``workers`` uvicorn processes of ``app`` (an ``module:factory`` string) behind HAProxy
    on ``host:port``. Use as a context manager, or ``start()`` / ``supervise()`` / ``stop()``.
    """

    def __init__(self, workers: int, *, host: str, port: int, state_dir: Path,
                 app: str = "api.main:create_app", env: dict[str, str] | None = None,
                 settings: ScaleSettings | None = None, log_level: str = "warning") -> None:
        if workers < 1:
            raise InvalidInput("at least one worker is needed",
                               [Problem(reason="must be 1 or more", field="workers")])
        self.settings = settings or ScaleSettings()
        if not self.settings.haproxy_bin.exists():
            raise ProxyError(f"HAProxy is not installed ({self.settings.haproxy_bin}): run "
                             "./run.sh bootstrap (Debian package haproxy)")
        self.host, self.port, self.app, self.log_level = host, port, app, log_level
        self.run_dir = state_dir.resolve() / "proxy"
        self.workers = [Worker(i, self.run_dir / f"worker-{i}.sock")
                        for i in range(1, workers + 1)]
        longest = str(self.workers[-1].socket)
        if len(longest.encode()) > MAX_SOCKET_PATH:
            raise ProxyError(f"the workers' sockets would be {longest} "
                             f"({len(longest.encode())} bytes): a Unix socket's path holds at "
                             f"most {MAX_SOCKET_PATH}; use a shorter WANGGE_STATE_DIR")
        self.env = {**os.environ, **(env or {}), "WANGGE_LOOKUP_LISTEN": "true"}
        self.env.setdefault("WANGGE_CHECK_INTERVAL_MS", "30000")  # NOTIFY refreshes; poll rarely
        self.haproxy: subprocess.Popen[bytes] | None = None
        self._stop = threading.Event()
        self._lock = threading.Lock()

    # -- processes -------------------------------------------------------------------------

    def _spawn(self, w: Worker) -> None:
        w.socket.unlink(missing_ok=True)  # a killed worker leaves its socket file behind
        logfile = open(self.run_dir / f"worker-{w.number}.log", "ab")
        w.proc = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", self.app, "--factory", "--uds", str(w.socket),
             "--log-level", self.log_level, "--no-access-log",
             # a Unix socket has no peer address to trust by: HAProxy's X-Forwarded-For is
             # the client's (it drops any the client sent), and only HAProxy reaches the socket
             "--forwarded-allow-ips", "*"],
            env=self.env, stdout=logfile, stderr=subprocess.STDOUT, start_new_session=True)
        logfile.close()
        w.started_at = time.monotonic()

    def _spawn_haproxy(self) -> None:
        cfg = self.run_dir / "haproxy.cfg"
        cfg.write_text(render_config(
            bind_host=self.host, bind_port=self.port,
            worker_sockets=[w.socket for w in self.workers], run_dir=self.run_dir,
            check_ms=self.settings.health_interval_ms))
        check = subprocess.run([str(self.settings.haproxy_bin), "-c", "-q", "-f", str(cfg)],
                               capture_output=True, text=True)
        if check.returncode != 0:
            raise ProxyError(f"HAProxy refused its configuration: {check.stderr.strip()}")
        logfile = open(self.run_dir / "haproxy.log", "ab")
        self.haproxy = subprocess.Popen(
            [str(self.settings.haproxy_bin), "-db", "-f", str(cfg)],
            stdout=logfile, stderr=subprocess.STDOUT, start_new_session=True)
        logfile.close()

    def _wait_ready(self, what: str, connect: Callable[[], http.client.HTTPConnection],
                    proc: subprocess.Popen[bytes], timeout: float) -> None:
        """Until ``GET /v1/ping`` on a connection from ``connect`` answers 200 (``what`` names
        it in errors); ProxyError if ``proc`` exits or ``timeout`` seconds pass first."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                logs = sorted(self.run_dir.glob("*.log"), key=lambda p: p.stat().st_mtime)
                tail = logs[-1].read_text(errors="replace")[-600:] if logs else ""
                raise ProxyError(f"{what}: the process exited with {proc.returncode} (logs in "
                                 f"{self.run_dir}):\n{tail}")
            if answers_ping(connect()):
                return
            time.sleep(0.1)
        raise ProxyError(f"{what} did not answer /v1/ping within {timeout:.0f} s (logs in "
                         f"{self.run_dir})")

    def _prepare_database(self) -> None:
        """Months of incident partitions made here, once, before any worker starts: a worker
        never runs DDL at start-up (it would lock ``incident`` and queue the reports of the
        other workers behind a restarting one)."""
        from geo.core.db import make_engine, resolve_url
        from geo.core.settings import DatabaseSettings
        from geo.incidents.partitions import ensure_months_ahead

        url = self.env.get("WANGGE_DATABASE_URL") or resolve_url(DatabaseSettings())
        eng = make_engine(url, pool_size=1)
        try:
            ensure_months_ahead(eng)
        finally:
            eng.dispose()

    def start(self, timeout: float = 60.0) -> WorkerPool:
        """Start every worker, wait until each answers /v1/ping, then start HAProxy."""
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self._prepare_database()
        try:
            for w in self.workers:
                self._spawn(w)
            for w in self.workers:
                assert w.proc is not None
                self._wait_ready(f"worker {w.number} ({w.socket})",
                                 partial(UnixHTTPConnection, w.socket), w.proc, timeout)
            self._spawn_haproxy()
            assert self.haproxy is not None
            self._wait_ready(f"HAProxy (http://{self.host}:{self.port})",
                             lambda: http.client.HTTPConnection(self.host, self.port, timeout=1),
                             self.haproxy, 10)
        except BaseException:
            self.stop()
            raise
        return self

    def check(self) -> list[int]:
        """Restart every worker (and HAProxy) that has exited; the restarted workers' numbers."""
        restarted: list[int] = []
        with self._lock:
            if self._stop.is_set():
                return restarted
            for w in self.workers:
                if w.proc is not None and w.proc.poll() is not None:
                    log.warning("worker %d (%s) exited with %s: restarting", w.number,
                                w.socket, w.proc.returncode)
                    w.restarts += 1
                    self._spawn(w)
                    restarted.append(w.number)
            if self.haproxy is not None and self.haproxy.poll() is not None:
                log.warning("HAProxy exited with %s: restarting", self.haproxy.returncode)
                self._spawn_haproxy()
        return restarted

    def supervise(self) -> None:
        """Check the processes until ``stop()`` (blocks; run it in a thread or the main one)."""
        while not self._stop.wait(self.settings.restart_delay_s):
            self.check()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop HAProxy and the workers (SIGTERM, then SIGKILL after ``timeout``)."""
        with self._lock:
            self._stop.set()
            procs = [p for p in [self.haproxy, *(w.proc for w in self.workers)] if p]
            for p in procs:
                if p.poll() is None:
                    p.send_signal(signal.SIGTERM)
            deadline = time.monotonic() + timeout
            for p in procs:
                try:
                    p.wait(max(0.1, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()

    def __enter__(self) -> WorkerPool:
        self.start()
        self._thread = threading.Thread(target=self.supervise, name="proxy-supervisor",
                                        daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
