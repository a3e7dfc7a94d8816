"""A worker of the Robinson import ends with the import that started it (the hostile review: it read on)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import msgspec
import pytest

from app.imports.robinson_rows import Job

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="the kernel's parent-death signal is Linux's")

# The import stood in for by a process that starts one worker the way robinson_split does, gives it its job and then
# waits without reading: the worker's share is rows without a name, so it writes nothing until its summary.
_PARENT = """
import os, subprocess, sys
env = {"PYTHONPATH": os.pathsep.join(filter(None, sys.path))}
worker = subprocess.Popen(
    [sys.executable, "-P", "-m", "app.imports.robinson_worker"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env
)
worker.stdin.write(sys.stdin.buffer.read())
worker.stdin.close()
print(worker.pid, flush=True)
worker.wait()
"""


def _alive(pid: int) -> bool:
    try:
        with Path(f"/proc/{pid}/stat").open() as stat:
            return stat.read().split()[2] != "Z"
    except FileNotFoundError:
        return False


def test_a_worker_ends_when_the_import_is_killed(tmp_path):
    path = tmp_path / "list.csv"
    head = b"Name;Strasse;Hausnummer;PLZ;Ort\n"
    path.write_bytes(head + b";Weg;1;10115;Berlin\n" * 3_000_000)  # ~60 MB: seconds of reading, nothing written
    job = Job(
        path=os.fsencode(path),
        start=len(head),
        end=path.stat().st_size,
        last=True,
        delimiter=";",
        index={"name": 0, "street": 1, "house_number": 2, "postcode": 3, "city": 4},
        width=5,
        peppers={1: b"p" * 32},
    )  # parent left 0: the stand-in's pid is not known here (the check after the signal is not what is tested)
    root = str(Path(__file__).resolve().parents[2])
    with subprocess.Popen(
        [sys.executable, "-c", _PARENT],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        cwd=root,
        env={**os.environ, "PYTHONPATH": root},
    ) as parent:
        assert parent.stdin is not None
        assert parent.stdout is not None
        parent.stdin.write(msgspec.msgpack.encode(job))
        parent.stdin.close()
        worker = int(parent.stdout.readline())
        time.sleep(0.5)  # the worker is reading its share
        assert _alive(worker)
        parent.send_signal(signal.SIGKILL)
        parent.wait()
    deadline = time.monotonic() + 2
    while _alive(worker) and time.monotonic() < deadline:
        time.sleep(0.02)
    try:
        assert not _alive(worker), "the worker read on after its import was killed"
    finally:
        if _alive(worker):
            os.kill(worker, signal.SIGKILL)


def test_a_worker_whose_import_ended_before_it_had_its_job_exits_at_once(tmp_path):
    """The job names the import's process: a worker whose parent is another process (here: this test, not the
    named one) took the job after its import was gone, and reads nothing."""
    path = tmp_path / "list.csv"
    path.write_bytes(b"Name;Strasse;Hausnummer;PLZ;Ort\nAnna Korn;Weg;1;10115;Berlin\n")
    job = Job(
        path=os.fsencode(path),
        start=0,
        end=path.stat().st_size,
        last=True,
        delimiter=";",
        index={"name": 0, "street": 1, "house_number": 2, "postcode": 3, "city": 4},
        width=5,
        peppers={1: b"p" * 32},
        parent=os.getpid() + 1_000_000,  # no process has it
    )
    root = str(Path(__file__).resolve().parents[2])
    done = subprocess.run(
        [sys.executable, "-P", "-m", "app.imports.robinson_worker"],
        input=msgspec.msgpack.encode(job),
        capture_output=True,
        cwd=root,
        env={**os.environ, "PYTHONPATH": root},
        timeout=30,
        check=False,
    )
    assert (done.returncode, done.stdout) == (1, b"")
