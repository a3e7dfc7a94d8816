"""``COPY … TO STDOUT`` streamed to an HTTP client in constant memory (audiences, the audit event stream).

PostgreSQL encodes the rows; the output is passed on as it arrives through a :class:`Pipe`, which gathers it into
pieces of at least :data:`PIECE` and holds at most :data:`QUEUE` of them, so a slow client slows the query down
instead of filling memory.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, Awaitable, Callable
from typing import Any

from litestar.background_tasks import BackgroundTask
from litestar.response import Stream

from app.lib.db import Database

#: Pieces of COPY output held between PostgreSQL and the client.
QUEUE = 8
#: COPY output arrives in the pieces of one socket read (about 17 KB while the client keeps up); they are
#: gathered into pieces of at least this size before they are passed on, for fewer writes to the client.
PIECE = 64 * 1024

#: A COPY on the driver connection: ``copy(driver, sink)`` awaits ``sink`` with each piece of output.
Copy = Callable[[Any, Callable[[bytes], Awaitable[None]]], Awaitable[None]]


def csv_cell(expression: str) -> str:
    """SQL for a text value as a CSV cell that a spreadsheet shows as text instead of running it as a formula.

    OWASP's "CSV injection" advice: a value starting with ``=``, ``+``, ``-``, ``@``, a tab or a carriage
    return gets a leading ``'``. A plain integer (a phone number in E.164, ``+4915112345678``) is left as it is:
    it runs nothing, and tools reading the export need the address unchanged. ``expression`` is SQL of our own
    (a column), never input; the regular expression runs only for values that start with a trigger.
    """
    return (
        f"CASE WHEN left({expression}, 1) IN ('=', '+', '-', '@', chr(9), chr(13))"
        f" AND {expression} !~ '^[+-]?[0-9]+$' THEN '''' || {expression} ELSE {expression} END"
    )


def wants_csv(accept: str) -> bool:
    """Whether an ``Accept`` header asks for CSV (the streams answer NDJSON otherwise)."""
    return "text/csv" in accept


async def copy_rows(
    driver: Any, rows_sql: str, lines_sql: str, *args: Any, as_csv: bool, sink: Callable[[bytes], Awaitable[None]]
) -> None:
    """``COPY`` to ``sink``: ``rows_sql`` as CSV with a header, or ``lines_sql`` (one JSON text per row) as NDJSON.

    The JSON must escape every string (``to_json``, ``row_to_json``), so a line never holds a raw newline. It
    goes out as one CSV column with a quote and a delimiter that JSON never holds raw, so PostgreSQL writes each
    line as it is (the text format would double every backslash).
    """
    if as_csv:
        await driver.copy_from_query(rows_sql, *args, output=sink, format="csv", header=True)
    else:
        await driver.copy_from_query(lines_sql, *args, output=sink, format="csv", quote="\x01", delimiter="\x02")


def copy_response(database: Database, copy: Copy, *, as_csv: bool) -> Stream:
    """A streamed response (CSV or NDJSON) of what ``copy`` writes; closed (query cancelled) when the client goes."""
    media_type = "text/csv; charset=utf-8" if as_csv else "application/x-ndjson"
    body = relay(database, copy)
    # Litestar lets the handler's declared media type override Stream(media_type=…); an explicit header wins.
    # When the client goes away, Litestar cancels the sending but leaves the iterator suspended: closing it
    # afterwards (a no-op once it has ended) cancels the query and returns its connection at once.
    return Stream(
        body,
        headers={"Content-Type": media_type, "Cache-Control": "no-store"},
        background=BackgroundTask(_close, body),
    )


async def relay(database: Database, copy: Copy) -> AsyncGenerator[bytes, None]:
    """What ``copy`` writes, passed on as it arrives through a :class:`Pipe`.

    The query runs in a task of its own; when the pipe is full its sink waits, which stops reading from
    PostgreSQL, so memory stays flat however large the output and however slow the client. When the client
    goes away, the response's background task closes this generator and the sink raises: asyncpg's own way
    to abort a COPY (it sends a cancel request and reads on until PostgreSQL confirms). Cancelling the task
    instead leaves asyncpg's protocol mid-COPY, and the connection then fails its rollback.
    """
    pipe = Pipe()

    async def produce() -> None:
        async with database.driver() as driver:
            await copy(driver, pipe.write)
        await pipe.close_writing()

    task = asyncio.create_task(produce())
    try:
        while (chunk := await pipe.read(task)) is not None:
            yield chunk
        await task
    finally:
        pipe.gone.set()
        with contextlib.suppress(ClientGone):
            await task  # ends at the sink's next piece, or when the query ends


class Pipe:
    """COPY output on its way to the client: pieces of at least PIECE, at most QUEUE held."""

    def __init__(self) -> None:
        self.gone = asyncio.Event()  # set when the reader stops: the writer raises ClientGone from then on
        self._queue: asyncio.Queue[bytes | None] = asyncio.Queue(maxsize=QUEUE)
        self._gathered = bytearray()

    async def write(self, piece: bytes) -> None:
        """The COPY's sink: waits while the pipe is full."""
        if self.gone.is_set():
            raise ClientGone
        self._gathered.extend(piece)  # a copy: asyncpg hands over a buffer of its own
        if len(self._gathered) >= PIECE:
            await self._put(self._take())

    async def close_writing(self) -> None:
        """After the COPY: what is left, then the end mark."""
        if self._gathered:
            await self._put(self._take())
        await self._put(None)

    async def read(self, writer: asyncio.Task[None]) -> bytes | None:
        """The next piece, or ``None`` at the end; raises the writer's error if it fails first."""
        while self._queue.empty():
            getter = asyncio.ensure_future(self._queue.get())
            await asyncio.wait({getter, writer}, return_when=asyncio.FIRST_COMPLETED)
            if getter.done():
                return getter.result()
            getter.cancel()  # the writer ended first: with an error, or with its end mark queued
            writer.result()  # raises the query's error
        return self._queue.get_nowait()

    def _take(self) -> bytes:
        chunk = bytes(self._gathered)
        self._gathered.clear()
        return chunk

    async def _put(self, chunk: bytes | None) -> None:
        while self._queue.full() and not self.gone.is_set():
            put, left = asyncio.ensure_future(self._queue.put(chunk)), asyncio.ensure_future(self.gone.wait())
            await asyncio.wait({put, left}, return_when=asyncio.FIRST_COMPLETED)
            left.cancel()
            if put.done():
                return
            put.cancel()
        if self.gone.is_set():
            raise ClientGone
        self._queue.put_nowait(chunk)


async def _close(body: AsyncGenerator[bytes, None]) -> None:
    # a coroutine function of our own: Litestar would run the bound ``aclose`` in a thread and never await it
    await body.aclose()


class ClientGone(Exception):  # a signal, not an error
    """The client went away: the sink raises this to abort the COPY."""
