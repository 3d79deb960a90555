"""The embedded PostgreSQL + PostGIS + pgRouting cluster that the project starts itself.

The cluster lives in ``DatabaseSettings.state_dir``: ``pgdata/`` (the cluster), ``run/`` (the
Unix socket), ``port`` (the port chosen on first start) and ``postgres.log``. When the caller is
root, ``initdb`` and ``pg_ctl`` run as the ``postgres`` user, since PostgreSQL refuses root.
Every function is idempotent.
"""

from __future__ import annotations

import glob
import logging
import os
import pwd
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from geo.core.errors import DatabaseUnavailable
from geo.core.settings import DatabaseSettings

log = logging.getLogger(__name__)

SERVER_OPTIONS = {
    "listen_addresses": "127.0.0.1",
    "max_connections": "200",
    "shared_buffers": "1GB",
    "work_mem": "64MB",
    "maintenance_work_mem": "1GB",
    "max_wal_size": "4GB",
    "checkpoint_timeout": "15min",
    "jit": "off",
}


@dataclass(frozen=True)
class ClusterStatus:
    running: bool
    port: int | None
    pgdata: Path
    pid: int | None


def _pg_bin(settings: DatabaseSettings) -> Path:
    if settings.pg_bin_dir:
        return settings.pg_bin_dir
    candidates = sorted(
        glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(Path(p).parent.name)
    )
    if not candidates:
        raise DatabaseUnavailable(
            "PostgreSQL is not installed: run ./run.sh (it installs postgresql-15-postgis-3)"
        )
    return Path(candidates[-1])


def _as_postgres(cmd: list[str]) -> list[str]:
    """Prefix a command so that it runs as ``postgres`` when we are root."""
    if os.geteuid() == 0:
        return ["runuser", "-u", "postgres", "--", *cmd]
    return cmd


def _chown_to_runner(path: Path) -> None:
    if os.geteuid() == 0:
        user = pwd.getpwnam("postgres")
        os.chown(path, user.pw_uid, user.pw_gid)


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port on ``host`` that nothing listens on now (the one helper for it: the cluster,
    the scale proxy's workers, benchmarks and tests)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _paths(settings: DatabaseSettings) -> tuple[Path, Path, Path, Path]:
    state = settings.state_dir.resolve()
    return state, state / "pgdata", state / "run", state / "port"


def _port(settings: DatabaseSettings) -> int:
    _, _, _, port_file = _paths(settings)
    if port_file.exists():
        return int(port_file.read_text().strip())
    port = settings.db_port or free_port()
    port_file.parent.mkdir(parents=True, exist_ok=True)
    port_file.write_text(f"{port}\n")
    return port


def status(settings: DatabaseSettings) -> ClusterStatus:
    """Whether the embedded cluster is running, and on which port."""
    _, pgdata, _, port_file = _paths(settings)
    port = int(port_file.read_text()) if port_file.exists() else None
    pidfile = pgdata / "postmaster.pid"
    if not pidfile.exists():
        return ClusterStatus(False, port, pgdata, None)
    try:
        pid = int(pidfile.read_text().splitlines()[0])
        os.kill(pid, 0)
    except (ValueError, IndexError, ProcessLookupError, PermissionError):
        return ClusterStatus(False, port, pgdata, None)
    return ClusterStatus(True, port, pgdata, pid)


def _unenterable(path: Path) -> Path | None:
    """The first directory from ``/`` down to ``path`` that the server's user cannot enter
    (``postgres`` when we are root), or None."""
    for d in [*reversed(path.parents), path]:
        if not d.exists():
            return None
        if os.geteuid() == 0:
            ok = subprocess.run(_as_postgres(["test", "-x", str(d)]),
                                capture_output=True).returncode == 0
        else:
            ok = os.access(d, os.X_OK)
        if not ok:
            return d
    return None


def _initdb(settings: DatabaseSettings) -> None:
    state, pgdata, rundir, _ = _paths(settings)
    try:
        for d in (state, rundir):
            d.mkdir(parents=True, exist_ok=True)
            _chown_to_runner(d)
        if (pgdata / "PG_VERSION").exists():
            return
        pgdata.mkdir(parents=True, exist_ok=True)
        _chown_to_runner(pgdata)
    except OSError as exc:
        raise DatabaseUnavailable(
            f"cannot make the database directory in {state} (WANGGE_STATE_DIR): "
            f"{exc.strerror}; choose a directory you can write") from None
    blocked = _unenterable(pgdata)
    if blocked is not None:
        who = "the postgres user" if os.geteuid() == 0 else "this user"
        raise DatabaseUnavailable(
            f"{who} cannot enter {blocked}, so PostgreSQL cannot use {pgdata} "
            f"(WANGGE_STATE_DIR={state}): choose a state directory outside it, or let it "
            f"in (chmod o+x {blocked})")
    log.info("initialising a PostgreSQL cluster in %s", pgdata)
    result = subprocess.run(
        _as_postgres(
            [
                str(_pg_bin(settings) / "initdb"),
                "-D", str(pgdata),
                "-U", "postgres",
                "--auth=trust",
                "--locale=C.UTF-8",
                "--encoding=UTF8",
            ]
        ),
        capture_output=True,
        text=True,
    )
    if result.returncode != 0:
        raise DatabaseUnavailable(f"initdb failed for {pgdata}: "
                                  f"{(result.stderr or result.stdout).strip()[-1000:]}")


def start(settings: DatabaseSettings) -> ClusterStatus:
    """Initialise (once) and start the cluster, then make sure the database exists."""
    current = status(settings)
    if current.running:
        return current
    _initdb(settings)
    state, pgdata, rundir, _ = _paths(settings)
    port = _port(settings)
    logfile = state / "postgres.log"
    if not logfile.exists():
        logfile.touch()
    _chown_to_runner(logfile)
    options = " ".join(f"-c {k}={v}" for k, v in SERVER_OPTIONS.items())
    log.info("starting PostgreSQL on 127.0.0.1:%d", port)
    result = subprocess.run(
        _as_postgres(
            [
                str(_pg_bin(settings) / "pg_ctl"),
                "-D", str(pgdata),
                "-l", str(logfile),
                "-w", "-t", "60",
                "-o", f"-p {port} -k {rundir} {options}",
                "start",
            ]
        ),
        capture_output=True,
        text=True,
    )
    if result.returncode != 0:
        tail = logfile.read_text()[-2000:] if logfile.exists() else ""
        raise DatabaseUnavailable(f"pg_ctl start failed: {result.stderr.strip()}\n{tail}")
    ensure_database(settings, settings.db_name)
    return status(settings)


def stop(settings: DatabaseSettings, *, mode: str = "fast") -> ClusterStatus:
    """Stop the cluster (``mode``: smart, fast or immediate) and wait until it has gone."""
    current = status(settings)
    if not current.running:
        return current
    _, pgdata, _, _ = _paths(settings)
    subprocess.run(
        _as_postgres([str(_pg_bin(settings) / "pg_ctl"), "-D", str(pgdata), "-m", mode, "-w",
                      "stop"]),
        check=True,
        capture_output=True,
    )
    deadline = time.monotonic() + 30
    while current.pid and time.monotonic() < deadline:
        try:
            os.kill(current.pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.05)
    return status(settings)


def psql(settings: DatabaseSettings, sql: str, *, dbname: str = "postgres") -> str:
    """Run one SQL statement through ``psql`` on the embedded cluster; return its output."""
    port = _port(settings)
    psql_bin = _pg_bin(settings) / "psql"
    if not psql_bin.exists():
        psql_bin = Path(shutil.which("psql") or "psql")
    out = subprocess.run(
        [str(psql_bin), "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", "-d", dbname,
         "-v", "ON_ERROR_STOP=1", "-Atc", sql],
        check=True,
        capture_output=True,
        text=True,
    )
    return out.stdout


def ensure_database(settings: DatabaseSettings, name: str) -> None:
    """Create database ``name`` in the embedded cluster if it does not exist."""
    exists = psql(settings, f"SELECT 1 FROM pg_database WHERE datname = '{_ident(name)}'")
    if not exists.strip():
        psql(settings, f'CREATE DATABASE "{_ident(name)}"')


def drop_database(settings: DatabaseSettings, name: str) -> None:
    """Drop database ``name`` (closing its connections first)."""
    psql(settings, f'DROP DATABASE IF EXISTS "{_ident(name)}" WITH (FORCE)')


def _ident(name: str) -> str:
    if not name.replace("_", "").isalnum():
        raise ValueError(f"database name {name!r}: only letters, digits and _ are allowed")
    return name


def url(settings: DatabaseSettings, dbname: str | None = None) -> str:
    """SQLAlchemy URL of a database in the embedded cluster (started or not)."""
    name = dbname or settings.db_name
    return f"postgresql+psycopg2://postgres@127.0.0.1:{_port(settings)}/{name}"
