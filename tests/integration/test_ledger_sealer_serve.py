"""The real ``consent serve`` killed with SIGKILL in a flood of consent changes: nothing acknowledged is lost.

Each change commits before it is acknowledged and is chained after commit by the process's sealer; a process
killed between the two leaves its events unsealed, and the next process's sealer chains them (its poll).
"""

from __future__ import annotations

import json
import subprocess
import threading
import time

import httpx
import pytest

from tests.integration.test_serve import CONSENT, free_port, service_env, start_service, wait_gone, wait_healthy

pytestmark = pytest.mark.slow


def cli_json(env: dict[str, str], *args: str) -> dict:
    done = subprocess.run([CONSENT, *args, "--json"], env=env, capture_output=True, text=True, timeout=60, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def objection(n: int) -> dict:
    return {
        "postal_address": {"name": f"Person {n}", "street": f"Teststraße {n}", "postcode": "12043", "city": "Berlin"},
        "scope": "print",
        "kind": "sticker",
        "evidence": {"document_ref": f"letter {n}"},
    }


def flood(base: str, headers: dict[str, str], acknowledged: dict[str, str]):
    """A client that posts objections until the server is gone, noting each acknowledged event."""
    counter = iter(range(1_000_000))
    lock = threading.Lock()

    def client() -> None:
        with httpx.Client(base_url=base, headers=headers, timeout=10) as http:
            while True:
                with lock:
                    n = next(counter)
                try:
                    answer = http.post("/v1/objections", json=objection(n))
                except httpx.TransportError:
                    return  # the server is gone
                if answer.status_code == 201:
                    [change] = answer.json()["changes"]
                    with lock:
                        acknowledged[change["event_id"]] = answer.json()["contact_id"]

    return client


def test_every_acknowledged_change_survives_a_sigkill_and_is_chained_after_restart(tmp_path):
    data_dir = tmp_path / "data"
    port = free_port()
    process = start_service(data_dir, port, tmp_path / "serve.log")
    env = service_env(data_dir)
    base = f"http://127.0.0.1:{port}"
    acknowledged: dict[str, str] = {}  # event id -> contact id
    try:
        wait_healthy(port, process)
        workspace = cli_json(env, "workspace", "create", "Acme")
        key = cli_json(env, "apikey", "create", "--workspace", workspace["id"], "--scopes", "admin")
        headers = {"Authorization": f"Bearer {key['secret']}"}
        client = flood(base, headers, acknowledged)
        threads = [threading.Thread(target=client, daemon=True) for _ in range(8)]
        for thread in threads:
            thread.start()
        deadline = time.monotonic() + 60
        while len(acknowledged) < 60 and time.monotonic() < deadline:
            time.sleep(0.05)
        process.kill()  # mid-flood: requests in flight, commits not yet sealed
        process.wait(timeout=10)
        for thread in threads:
            thread.join(timeout=15)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)
    assert len(acknowledged) >= 60, "the flood ran"
    assert wait_gone(data_dir) == []

    again = start_service(data_dir, port, tmp_path / "serve2.log")
    try:
        wait_healthy(port, again)
        with httpx.Client(base_url=base, headers=headers, timeout=30) as http:
            verified = http.get("/v1/audit/verify").json()
            assert verified["valid"], verified
            lines = [json.loads(line) for line in http.get("/v1/audit/events").text.splitlines()]
    finally:
        again.kill()
        again.wait(timeout=10)
    chained = {line["id"]: line for line in lines}
    missing = set(acknowledged) - set(chained)
    assert not missing, f"{len(missing)} acknowledged changes are not in the ledger"
    assert all(chained[event]["seq"] and len(chained[event]["hash"]) == 64 for event in acknowledged)
    assert [line["seq"] for line in lines] == list(range(1, len(lines) + 1)), "one chain, no gap, no fork"
    assert verified["events_checked"] == len(lines) >= len(acknowledged)
