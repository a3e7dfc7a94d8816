"""The real ``consent serve`` process on a fresh embedded database: starts, answers, leaves nothing behind."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

pytestmark = pytest.mark.slow

CONSENT = str(Path(sys.executable).parent / "consent")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def postgres_pids(data_dir: Path) -> list[int]:
    """PIDs of postgres processes whose command line names a folder inside ``data_dir``."""
    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if cmdline and cmdline[0].endswith(b"postgres") and any(str(data_dir).encode() in arg for arg in cmdline):
            pids.append(int(proc.name))
    return pids


def service_env(data_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "CONSENT_SECRET_KEY", "PUBLIC_BASE_URL"}}
    env.update(CONSENT_DATA_DIR=str(data_dir), CONSENT_LOG_FORMAT="json")
    return env


def start_service(data_dir: Path, port: int, log_path: Path) -> subprocess.Popen[bytes]:
    with log_path.open("ab") as log:
        return subprocess.Popen(
            [CONSENT, "serve", "--dev", "--port", str(port)], env=service_env(data_dir), stdout=log, stderr=log
        )


def wait_healthy(port: int, process: subprocess.Popen[bytes], timeout: float = 30.0) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        assert process.poll() is None, "the service exited during start-up"
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                return time.monotonic() - started
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    pytest.fail(f"no healthy answer within {timeout} s")


def wait_gone(data_dir: Path, timeout: float = 15.0) -> list[int]:
    deadline = time.monotonic() + timeout
    while (left := postgres_pids(data_dir)) and time.monotonic() < deadline:
        time.sleep(0.1)
    return left


def test_serve_starts_on_embedded_postgres_and_sigterm_leaves_no_server(tmp_path):
    data_dir = tmp_path / "data"
    port = free_port()
    log_path = tmp_path / "serve.log"
    process = start_service(data_dir, port, log_path)
    try:
        wait_healthy(port, process)
        assert postgres_pids(data_dir), "the embedded server should run while the service runs"
        ready = httpx.get(f"http://127.0.0.1:{port}/ready", timeout=5)
        assert ready.status_code == 200
        assert httpx.get(f"http://127.0.0.1:{port}/v1/purposes", timeout=5).status_code == 401
        # the CLI joins the running embedded server; the key then works through the service's own pools
        env = service_env(data_dir)
        workspace = json.loads(
            subprocess.run(
                [CONSENT, "workspace", "create", "Acme", "--json"],
                env=env,
                capture_output=True,
                text=True,
                timeout=60,
                check=True,
            )
            .stdout.strip()
            .splitlines()[-1]
        )
        key = json.loads(
            subprocess.run(
                [CONSENT, "apikey", "create", "--workspace", workspace["id"], "--scopes", "admin", "--json"],
                env=env,
                capture_output=True,
                text=True,
                timeout=60,
                check=True,
            )
            .stdout.strip()
            .splitlines()[-1]
        )
        headers = {"Authorization": f"Bearer {key['secret']}"}
        base = f"http://127.0.0.1:{port}"
        created = httpx.post(
            f"{base}/v1/purposes", json={"key": "news", "name": "News", "kind": "marketing"}, headers=headers
        )
        assert created.status_code == 201
        unknown = httpx.get(
            f"{base}/v1/eligibility", params={"contact": "x", "channel": "email", "purpose": "news"}, headers=headers
        )
        assert unknown.status_code == 404
        assert unknown.json()["code"] == "contact_not_found"
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=30)
    # uvicorn re-raises the signal after its graceful shutdown, so "killed by SIGTERM" is the clean exit
    assert process.returncode in {0, -signal.SIGTERM}
    assert wait_gone(data_dir, timeout=1) == []
    events = [json.loads(line) for line in log_path.read_text().splitlines() if line.startswith("{")]
    embedded = [e for e in events if e["event"] == "database_embedded"]
    assert len(embedded) == 1
    assert (data_dir / "secret_key").stat().st_mode & 0o777 == 0o600


def test_sigkilled_service_does_not_leave_its_server_and_restarts(tmp_path):
    data_dir = tmp_path / "data"
    port = free_port()
    process = start_service(data_dir, port, tmp_path / "serve.log")
    wait_healthy(port, process)
    process.kill()
    process.wait(timeout=10)
    assert wait_gone(data_dir) == [], "the server must not outlive a SIGKILLed owner"

    again = start_service(data_dir, port, tmp_path / "serve2.log")
    try:
        wait_healthy(port, again)
    finally:
        again.send_signal(signal.SIGTERM)
        again.wait(timeout=30)
    assert wait_gone(data_dir, timeout=1) == []


def test_serve_without_secret_refuses_with_a_clear_message(tmp_path):
    result = subprocess.run(
        [CONSENT, "serve", "--port", str(free_port())],
        env=service_env(tmp_path / "data"),
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode != 0
    assert "CONSENT_SECRET_KEY is not set" in result.stderr


def worker_pids(parent: int) -> list[int]:
    """The server processes uvicorn's supervisor spawned under ``parent`` (not the embedded PostgreSQL)."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            ppid = int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1])
            cmdline = (proc / "cmdline").read_bytes()
        except (OSError, IndexError, ValueError):
            continue
        if ppid == parent and b"spawn_main" in cmdline:  # not the resource tracker
            found.append(int(proc.name))
    return found


def test_serve_with_two_workers_shares_the_port_the_database_and_the_metrics(tmp_path):
    data_dir = tmp_path / "data"
    port = free_port()
    env = {**service_env(data_dir), "METRICS_TOKEN": "m" * 32}
    with (tmp_path / "serve.log").open("ab") as log:
        process = subprocess.Popen(
            [CONSENT, "serve", "--dev", "--workers", "2", "--port", str(port)], env=env, stdout=log, stderr=log
        )
    try:
        wait_healthy(port, process, timeout=60)
        deadline = time.monotonic() + 30
        while len(worker_pids(process.pid)) < 2 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert len(worker_pids(process.pid)) == 2, "two server processes"
        assert len(postgres_pids(data_dir)) >= 1, "one embedded server, started by the supervisor"
        base = f"http://127.0.0.1:{port}"
        for _ in range(3):  # every worker reaches the database (each answers some of these)
            assert httpx.get(f"{base}/ready", timeout=10).status_code == 200

        def health_count() -> float:
            metrics = httpx.get(f"{base}/metrics", headers={"Authorization": "Bearer " + "m" * 32}, timeout=5)
            assert metrics.status_code == 200
            return sum(
                float(line.rsplit(" ", 1)[1])
                for line in metrics.text.splitlines()
                if line.startswith("consent_http_requests_total{") and 'route="/health"' in line
            )

        def counting() -> set[str]:  # the processes that counted a request: a file of counters each
            return {path.stem.rsplit("_", 1)[1] for path in (data_dir / "metrics").glob("counter_*.db")}

        before, served = health_count(), 0
        while served < 40 or (len(counting()) < 2 and served < 1000):  # new connections: the kernel spreads them
            assert httpx.get(f"{base}/health", timeout=5, headers={"Connection": "close"}).status_code == 200
            served += 1
        assert len(counting()) == 2, "both processes answered requests"
        assert health_count() - before == served, "the counts of both processes, added up, whichever answers"
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=60)
    assert process.returncode in {0, -signal.SIGTERM}
    assert wait_gone(data_dir, timeout=5) == [], "the supervisor stops the embedded server it started"
