"""The embedded PostgreSQL manager: stale servers are stopped, a second process joins as a guest."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import asyncpg
import pytest

from app.lib.embedded_pg import EmbeddedPostgres, _read_postmaster_pid, binaries_dir

pytestmark = pytest.mark.slow


async def test_a_stale_server_without_owner_is_stopped_and_replaced(tmp_path):
    first = EmbeddedPostgres(tmp_path / "pg", initdb_sync=False)
    await first.start()
    await first.stop()

    # A server that outlived its owner: started detached, not a child of anyone who will stop it.
    kwargs = {} if first._uid is None else {"user": first._uid, "group": first._gid}
    stale = subprocess.Popen(
        [str(binaries_dir() / "postgres"), "-D", str(first.pgdata), "-k", str(first.pgdata), "-c", "listen_addresses="],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
        **kwargs,
    )
    try:
        deadline = time.monotonic() + 20
        while (_read_postmaster_pid(first.pgdata) or {}).get("status") != "ready":
            assert time.monotonic() < deadline
            time.sleep(0.05)

        second = EmbeddedPostgres(tmp_path / "pg")
        await second.start()
        try:
            assert stale.poll() is not None, "the stale server should have been stopped"
            pid = int(_read_postmaster_pid(second.pgdata)["pid"])
            assert pid != stale.pid
            conn = await asyncpg.connect(second.dsn())
            assert await conn.fetchval("SELECT 1") == 1
            await conn.close()
        finally:
            await second.stop()
    finally:
        if stale.poll() is None:
            stale.send_signal(signal.SIGQUIT)
        stale.wait(timeout=10)


async def test_a_second_process_joins_as_guest_and_does_not_stop_the_server(tmp_path):
    owner = EmbeddedPostgres(tmp_path / "pg", initdb_sync=False)
    await owner.start()
    try:
        # flock is per open file description: a second manager in this process behaves like another process
        guest = EmbeddedPostgres(tmp_path / "pg")
        await guest.start()
        assert owner.owner
        assert not guest.owner
        await guest.stop()
        conn = await asyncpg.connect(owner.dsn())
        assert await conn.fetchval("SELECT 1") == 1
        await conn.close()
    finally:
        await owner.stop()
    assert _read_postmaster_pid(owner.pgdata) is None


async def test_server_runs_unprivileged_and_socket_is_private(tmp_path):
    server = EmbeddedPostgres(tmp_path / "pg", initdb_sync=False)
    await server.start()
    try:
        info = _read_postmaster_pid(server.pgdata)
        assert info is not None
        status = Path(f"/proc/{info['pid']}/status").read_text()
        uid = int(next(line for line in status.splitlines() if line.startswith("Uid:")).split()[1])
        if os.geteuid() == 0:
            assert uid != 0
        assert server.socket_dir is not None
        assert (server.socket_dir.stat().st_mode & 0o077) == 0, "only the server's user may enter the socket folder"
        assert info["listen"] == "", "no TCP listener"
    finally:
        await server.stop()
