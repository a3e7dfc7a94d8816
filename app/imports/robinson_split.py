"""A Robinson list file read by worker processes, each its own share of the file, straight into one ``COPY``.

Nothing of the rows crosses a process boundary: each worker (:mod:`app.imports.robinson_worker`) opens the
file, reads its byte range with the same reader and the same per-row rule as this process would
(:class:`~app.imports.csvstream.RecordReader`, :class:`~app.imports.robinson_rows.KeyMaker`) and writes its
keys, already in binary ``COPY`` format, to a pipe; this process passes them on to the one ``COPY`` of the
import's transaction as they come (in any order: the keys go into a set). What comes back is a few counts, the
first errors of each share (line numbers within the share, made absolute here) and whether the share ended
inside a quoted field.

Record boundaries: the shares are cut after a line break, and a quoted field may hold one. Each worker starts
as a reader starts at a record's beginning, and says whether its share *ended* inside a quoted field. The first
share starts where the header ends, a record boundary; if every share ends outside a quoted field, each next
one started on a boundary too (by induction), and the workers read exactly the records one reader would have.
If one does not, the keys copied are dropped and the file is read again in this process (:func:`read_shares`
answers ``None``): never a wrong record, at worst the time of one more read.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import msgspec
import structlog

from app.imports import repository
from app.imports.csvstream import MAX_LINE_BYTES, LineError, NotUtf8, RecordReader
from app.imports.robinson_rows import (
    FRAME,
    MAX_SHARE_ERRORS,
    NAME_COLUMNS,
    Columns,
    Job,
    KeysDone,
    Summary,
)
from app.lib.errors import InvalidInput

log = structlog.get_logger(__name__)

#: A share smaller than this is not worth a process (starting one takes about 0.3 s of a core).
MIN_SHARE_BYTES = 4 << 20
#: How much of a file is read at a time, by this process or a worker.
CHUNK_BYTES = 1 << 20
_ALIASES = {
    "strasse": "street",
    "straße": "street",
    "hausnummer": "house_number",
    "hausnr": "house_number",
    "plz": "postcode",
    "postleitzahl": "postcode",
    "zip": "postcode",
    "ort": "city",
    "stadt": "city",
    "land": "country",
    "vorname": "first_name",
    "nachname": "last_name",
}


def header(line: int, fields: list[str] | LineError) -> Columns:
    """The header's columns by name, and how many it has."""
    if isinstance(fields, LineError):
        raise InvalidInput(f"The header (line {line}) cannot be read: {fields.message}", code="invalid_csv")
    names = [_ALIASES.get(name.strip().lower(), name.strip().lower()) for name in fields]
    columns = {name: index for index, name in enumerate(names)}
    missing = [name for name in ("street", "postcode", "city") if name not in columns]
    if missing or not any(name in columns for name in NAME_COLUMNS):
        raise InvalidInput(
            "The header needs the columns street, postcode, city and name (or first_name and last_name); "
            f"house_number and country are optional. Found: {', '.join(names)}.",
            code="invalid_csv_header",
        )
    return Columns(columns, len(fields))


async def file_chunks(path: Path) -> AsyncIterator[bytes]:
    """The file's bytes, a chunk at a time (read on a thread: the event loop keeps serving the ``COPY``)."""
    with path.open("rb") as file:
        while chunk := await asyncio.to_thread(file.read, CHUNK_BYTES):
            yield chunk


async def read_shares(
    driver: Any,
    peppers: dict[int, bytes],
    path: Path,
    progress: Callable[[int], None] | None,
    *,
    workers: int,
) -> list[tuple[KeysDone, int]] | None:
    """Read ``path``'s rows in ``workers`` processes into the keys table; each share's rows and lines before it.

    ``None``: the file was not read here (too small for more than one share, a header over several lines, or a
    share that did not start on a record boundary; the keys table is then empty again): the caller reads it in
    this process. A file that is not UTF-8 raises :class:`NotUtf8` for its first such line, as one reader would.
    """
    size = (await asyncio.to_thread(path.stat)).st_size
    count = min(workers, size // MIN_SHARE_BYTES)
    if count < 2:  # noqa: PLR2004  # one share is this process's work
        return None
    start = await asyncio.to_thread(_after_header, path)
    if start is None:
        return None
    offset, header_lines, columns, delimiter = start
    bounds = await asyncio.to_thread(_bounds, path, offset, size, count)
    jobs = [
        Job(
            path=os.fsencode(path),
            start=begin,
            end=end,
            last=end == size,
            delimiter=delimiter,
            index=columns.index,
            width=columns.width,
            peppers=peppers,
            parent=os.getpid(),
        )
        for begin, end in itertools.pairwise(bounds)
    ]
    if progress is not None:
        progress(offset)
    summaries = await _run(driver, jobs, progress)
    shares: list[tuple[KeysDone, int]] = []
    before = header_lines
    for number, summary in enumerate(summaries):
        if summary.not_utf8 is not None:
            raise NotUtf8(before + summary.not_utf8[0], summary.not_utf8[1])
        if summary.open and number < len(summaries) - 1:
            log.info("robinson_shares_dropped", reason="a quoted field over a share's end", share=number)
            await repository.clear_keys(driver)
            return None
        done = KeysDone(MAX_SHARE_ERRORS, [], summary.rows, summary.accepted, summary.rejected, summary.errors)
        shares.append((done, before))
        before += summary.lines
    return shares


def _after_header(path: Path) -> tuple[int, int, Columns, str] | None:
    """Where the header line ends, the lines up to it, its columns, its delimiter; ``None`` if it is unusual.

    Unusual: no header within the first chunks, or a header with a quoted line break (the caller's reader
    reports what is wrong with a file, so it reads such a file itself).
    """
    data = b""
    reader = RecordReader()
    with path.open("rb") as file:
        while len(data) < MAX_LINE_BYTES * 4:
            chunk = file.read(CHUNK_BYTES)
            if not chunk:
                return None
            data += chunk
            found = reader.feed(chunk)
            if found:
                break
        else:
            return None
    line, fields = found[0]
    if isinstance(fields, LineError):
        return None
    end = -1
    for _ in range(line):
        end = data.find(b"\n", end + 1)
        if end < 0:
            return None
    again = RecordReader()
    if again.feed(data[: end + 1]) != [(line, fields)] or again.open:
        return None
    assert again.reader.delimiter is not None  # a record was read
    return end + 1, line, header(line, fields), again.reader.delimiter


def _bounds(path: Path, offset: int, size: int, count: int) -> list[int]:
    """``offset``, each share's end (just after a line break, about ``size / count`` apart), ``size``."""
    bounds = [offset]
    with path.open("rb") as file:
        for share in range(1, count):
            at = max(offset + (size - offset) * share // count, bounds[-1])
            file.seek(at)
            while chunk := file.read(1 << 16):
                found = chunk.find(b"\n")
                if found >= 0:
                    at += found + 1
                    break
                at += len(chunk)
            if bounds[-1] < at < size:
                bounds.append(at)
    return [*bounds, size]


class WorkerFailed(RuntimeError):
    """A worker process of the import stopped or could not be given its job: the import writes nothing."""


async def _run(driver: Any, jobs: list[Job], progress: Callable[[int], None] | None) -> list[Summary]:
    """Start a worker per job, ``COPY`` their keys as they come, and answer their summaries in job order."""
    # A worker gets this process's import path and nothing else of its environment (which may hold the service's
    # secret key and the database's address): the peppers it needs come with its job, on its stdin.
    environment = {"PYTHONPATH": os.pathsep.join(filter(None, sys.path))}
    processes = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            "-P",  # not the current directory first on the import path: a msgspec.py there would get the peppers
            "-m",
            "app.imports.robinson_worker",
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            env=environment,
        )
        for _ in jobs
    ]
    queue: asyncio.Queue[bytes | BaseException | None] = asyncio.Queue(maxsize=4 * len(jobs))
    summaries: list[Summary] = []

    async def source() -> AsyncIterator[bytes]:
        finished = 0
        while finished < len(jobs):
            item = await queue.get()
            if item is None:
                finished += 1
            elif isinstance(item, BaseException):
                raise WorkerFailed("a worker of the Robinson import stopped") from item
            else:
                yield item

    pumps = [
        asyncio.create_task(_pump(job, process, queue, progress)) for job, process in zip(jobs, processes, strict=True)
    ]
    try:
        await repository.copy_key_stream(driver, source())
        summaries = await asyncio.gather(*pumps)
        statuses = [await process.wait() for process in processes]
        if any(statuses):
            raise WorkerFailed(f"a worker of the Robinson import stopped (exit statuses {statuses})")
    finally:
        for task in pumps:
            task.cancel()
        await asyncio.gather(*pumps, return_exceptions=True)
        for process in processes:
            if process.returncode is None:
                process.kill()
                await process.wait()
    return summaries


async def _pump(
    job: Job,
    process: asyncio.subprocess.Process,
    queue: asyncio.Queue[bytes | BaseException | None],
    progress: Callable[[int], None] | None,
) -> Summary:
    """Give a worker its job; put its keys on ``queue`` (then ``None``, or what went wrong); its summary."""
    assert process.stdin is not None  # piped
    assert process.stdout is not None
    try:
        process.stdin.write(msgspec.msgpack.encode(job))
        await process.stdin.drain()
        process.stdin.close()
        while True:
            kind, length, read = FRAME.unpack(await process.stdout.readexactly(FRAME.size))
            payload = await process.stdout.readexactly(length)
            if progress is not None and read:
                progress(read)
            if kind == b"S":
                await queue.put(None)
                return msgspec.msgpack.decode(payload, type=Summary)
            await queue.put(payload)
    except asyncio.CancelledError:
        raise
    except Exception as exc:  # whatever it is (a job that cannot be encoded, a pipe that broke): the COPY must end
        await queue.put(exc)
        raise
