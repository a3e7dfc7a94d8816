"""A worker of the Robinson import: one share of a list file to binary ``COPY`` rows of keys, on stdout.

Started by :mod:`app.imports.robinson_split` as ``python -m app.imports.robinson_worker``; reads its
:class:`~app.imports.robinson_split.Job` (msgpack) from stdin, which carries the peppers (never the command
line or the environment, which other users of the machine may read), and writes frames: keys as they are
done, then its summary. Imports only the reader and the per-row rule, not the service.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
from typing import BinaryIO

import msgspec

from app.imports.csvstream import NotUtf8, RecordReader
from app.imports.robinson_rows import FRAME, Columns, Job, KeyMaker, KeysDone, Summary

#: Linux's ``prctl`` option that has the kernel send a signal to this process when its parent ends.
_PR_SET_PDEATHSIG = 1

#: How much of the file is read at a time, and the rows whose keys are sent at once.
_CHUNK_BYTES = 1 << 20
_FRAME_ROWS = 5_000


def read_share(job: Job, out: BinaryIO) -> None:
    """Read the job's share and write its frames to ``out``."""
    reader = RecordReader(job.limit, delimiter=job.delimiter)
    maker = KeyMaker(Columns(job.index, job.width), job.peppers)
    done = KeysDone(job.keep)
    not_utf8: tuple[int, str] | None = None
    read = 0
    with open(job.path, "rb") as file:  # noqa: PTH123  # a plain binary read
        file.seek(job.start)
        left = job.end - job.start
        try:
            while left > 0:
                chunk = file.read(min(_CHUNK_BYTES, left))
                if not chunk:
                    break
                left -= len(chunk)
                read += len(chunk)
                maker.take(reader.feed(chunk), done)
                if len(done.data) >= _FRAME_ROWS:
                    _send(out, b"K", b"".join(done.data), read)
                    done.data.clear()
                    read = 0
            if job.last:
                maker.take(reader.finish(), done)
        except NotUtf8 as exc:
            not_utf8 = (exc.line, exc.reason)
    if done.data:
        _send(out, b"K", b"".join(done.data), read)
        read = 0
    summary = Summary(
        rows=done.rows,
        accepted=done.accepted,
        rejected=done.rejected,
        errors=done.errors,
        lines=reader.lines,
        open=not job.last and reader.open,
        not_utf8=not_utf8,
    )
    _send(out, b"S", msgspec.msgpack.encode(summary), read)
    out.flush()


def _send(out: BinaryIO, kind: bytes, payload: bytes, read: int) -> None:
    out.write(FRAME.pack(kind, len(payload), read))
    out.write(payload)


def end_with_parent() -> None:
    """Be killed when the import that started this worker ends, however it ends (a SIGKILL too).

    Without it a worker of a killed import read on until its next write failed: seconds for a share of rejected
    rows. Where ``prctl`` is missing (not Linux), the broken pipe of the next write still ends the worker.
    """
    if sys.platform == "linux":
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def main() -> None:
    """Read the job from stdin, the share from the file, write the frames to stdout."""
    end_with_parent()  # before the job is read: an import that ends after this line takes the worker with it
    job = msgspec.msgpack.decode(sys.stdin.buffer.read(), type=Job)
    if job.parent and os.getppid() != job.parent:  # the import ended before the signal was asked for
        os._exit(1)
    read_share(job, sys.stdout.buffer)


if __name__ == "__main__":
    main()
