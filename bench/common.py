"""Shared by the benchmarks: the machine they ran on, and writing bench/results/NAME.json."""

from __future__ import annotations

import json
import os
import platform
import resource
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from geo.core.embedded import free_port

ROOT = Path(__file__).resolve().parent.parent
RESULTS_DIR = Path(__file__).resolve().parent / "results"


def stop(server: Any) -> None:
    """SIGTERM a server's whole process group (its workers too) and wait for it."""
    import signal

    try:
        os.killpg(server.pid, signal.SIGTERM)
    except ProcessLookupError:  # already gone
        pass
    server.wait(timeout=30)


@contextmanager
def uvicorn_server(env: dict[str, str], *, workers: int = 1,
                   extra_args: tuple[str, ...] = (),
                   start_seconds: float = 120.0) -> Iterator[str]:
    """The API under uvicorn on a free localhost port with ``env``; yields its base URL once
    ``/v1/ping`` answers, and stops every worker on exit. RuntimeError (with the end of its
    stderr) if it exits or does not answer within ``start_seconds``."""
    import subprocess
    import sys
    import tempfile

    import httpx

    port = free_port()
    log = tempfile.TemporaryFile()  # not a pipe: a long run's warnings never block it
    server = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "api.main:create_app", "--factory", "--host",
         "127.0.0.1", "--port", str(port), "--workers", str(workers), "--log-level", "warning",
         "--no-access-log", *extra_args],
        cwd=ROOT, env=env, start_new_session=True, stderr=log)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + start_seconds
        while True:
            if server.poll() is not None or time.monotonic() > deadline:
                stop(server)
                log.seek(0)
                tail = log.read().decode(errors="replace")[-2000:]
                raise RuntimeError(f"uvicorn did not start on {base}: {tail}")
            try:
                if httpx.get(base + "/v1/ping", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
        yield base
    finally:
        stop(server)
        log.close()


def machine_info() -> dict[str, Any]:
    """CPU model, core count and memory of this machine: absolute times mean nothing without it."""
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_gb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1024**3
    return {
        "cpu": model,
        "cores": os.cpu_count(),
        "memory_gb": round(mem_gb, 1),
        "python": platform.python_version(),
        "note": "shared, noisy machine: compare ratios from one run, not absolute times",
    }


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far, in MB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    """Run ``fn`` once; return its result and the wall time in seconds."""
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def write_results(name: str, figures: dict[str, Any]) -> Path:
    """Write ``figures`` (with the machine added) to bench/results/NAME.json and print them."""
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    payload = {"machine": machine_info(), **figures}
    path = RESULTS_DIR / f"{name}.json"
    path.write_text(json.dumps(payload, indent=2, ensure_ascii=False) + "\n")
    print(json.dumps(payload, indent=2, ensure_ascii=False))
    return path


def run_wrk(url: str, *, seconds: int, connections: int, threads: int = 1,
            lua: str | None = None, headers: dict[str, str] | None = None) -> dict:
    """Run wrk (Debian's) against ``url``, with the Lua script ``lua`` (its text) if given;
    return rps, p50/p99 (ms), requests and errors (non-2xx/3xx answers plus socket errors and
    timeouts)."""
    import re
    import subprocess
    import tempfile

    cmd = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{seconds}s", "--latency",
           "--timeout", "10s"]
    for name, value in (headers or {}).items():
        cmd += ["-H", f"{name}: {value}"]
    with tempfile.NamedTemporaryFile("w", suffix=".lua") as script:
        if lua:
            script.write(lua)
            script.flush()
            cmd += ["-s", script.name]
        out = subprocess.run([*cmd, url], capture_output=True, text=True, check=True).stdout

    def pct(p: str) -> float:
        m = re.search(rf"^\s+{p}%\s+([\d.]+)(us|ms|s)", out, re.M)
        if not m:
            return float("nan")
        v, unit = float(m.group(1)), m.group(2)
        return v / 1000 if unit == "us" else v * 1000 if unit == "s" else v

    requests = int(re.search(r"(\d+) requests in", out).group(1))
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    socket_errors = sum(int(g) for g in sock.groups()) if sock else 0
    return {
        "requests": requests,
        "rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),
        "p50_ms": pct("50"),
        "p99_ms": pct("99"),
        "non2xx": int(non2xx.group(1)) if non2xx else 0,
        "socket_errors": socket_errors,
        "errors": (int(non2xx.group(1)) if non2xx else 0) + socket_errors,
        "raw": out,
    }
