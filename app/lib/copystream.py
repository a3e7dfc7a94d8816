"""``COPY … TO STDOUT`` streamed to an HTTP client in constant memory (audiences, the audit event stream).

PostgreSQL encodes the rows; the output is passed on as it arrives through a :class:`Pipe`, which gathers it into
pieces of at least :data:`PIECE` and holds at most :data:`QUEUE` of them, so a slow client slows the query down
instead of filling memory.

A slow client also holds its database connection for as long as it takes to read, so streams are kept apart from
everything else (issue 16, finding 4): they run on a pool of their own (:meth:`app.lib.db.Database.stream_driver`)
of :class:`StreamBudget` ``total`` connections, at most ``per_key`` of them for one API key, and a client that reads
nothing for ``send_timeout`` seconds is cut off, which frees its connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncGenerator, Awaitable, Callable, Iterable
from typing import TYPE_CHECKING, Any

import structlog
from litestar import Request
from litestar.enums import MediaType
from litestar.response import Stream
from litestar.response.streaming import ASGIStreamingResponse
from litestar.utils.helpers import get_enum_string_value

from app.lib.auth import Principal
from app.lib.db import Database
from app.lib.errors import RateLimited, Unauthenticated, Unavailable

if TYPE_CHECKING:
    from litestar.app import Litestar
    from litestar.background_tasks import BackgroundTask, BackgroundTasks
    from litestar.datastructures.cookie import Cookie
    from litestar.response.base import ASGIResponse
    from litestar.types import Message, Receive, Scope, Send, TypeEncodersMap

log = structlog.get_logger(__name__)

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


#: Seconds a client refused a stream is asked to wait (streams last seconds to minutes).
STREAM_RETRY_AFTER = 5


class StreamBudget:
    """The streams of one process: at most ``total``, ``per_workspace`` of one workspace, ``per_key`` of one key.

    The workspace's limit counts all its keys (a tenant admin can make keys) and stays below ``total``, so one
    tenant never holds every stream. ``total`` is also the size of the streams' connection pool, so a stream that
    is let in never waits for a connection. A stream over a limit is refused at once (429 for the key's or the
    workspace's own limit, 503 when the process is full), never queued: a queued stream would hold its client as
    long as the slowest reader ahead of it.
    """

    def __init__(self, total: int, per_key: int, send_timeout: float, per_workspace: int | None = None) -> None:
        self.total = total
        self.per_key = per_key
        self.per_workspace = per_workspace if per_workspace is not None else max(1, total // 2)
        self.send_timeout = send_timeout
        self._open: dict[uuid.UUID, int] = {}
        self._of_workspace: dict[uuid.UUID, int] = {}

    @property
    def open(self) -> int:
        """Streams running now."""
        return sum(self._open.values())

    def claim(self, api_key_id: uuid.UUID, workspace_id: uuid.UUID | None = None) -> StreamSlot:
        """A place for one stream of this key, or the error that says why there is none."""
        if self.open >= self.total:
            raise Unavailable(
                "Every stream this server runs at a time is in use. Try again shortly.",
                code="streams_busy",
                extra={"retry_after": STREAM_RETRY_AFTER},
                headers={"Retry-After": str(STREAM_RETRY_AFTER)},
            )
        if workspace_id is not None and self._of_workspace.get(workspace_id, 0) >= self.per_workspace:
            raise RateLimited(
                f"This workspace has {self.per_workspace} streams open, as many as one workspace may at a time; "
                "finish one before starting another.",
                retry_after=STREAM_RETRY_AFTER,
                code="too_many_streams",
            )
        if self._open.get(api_key_id, 0) >= self.per_key:
            raise RateLimited(
                f"This API key has {self.per_key} streams open, as many as one key may; "
                "finish one (read it to the end or close it) before starting another.",
                retry_after=STREAM_RETRY_AFTER,
                code="too_many_streams",
            )
        self._open[api_key_id] = self._open.get(api_key_id, 0) + 1
        if workspace_id is not None:
            self._of_workspace[workspace_id] = self._of_workspace.get(workspace_id, 0) + 1
        return StreamSlot(self, api_key_id, workspace_id)

    def _release(self, api_key_id: uuid.UUID, workspace_id: uuid.UUID | None) -> None:
        for counts, key in ((self._open, api_key_id), (self._of_workspace, workspace_id)):
            if key is None:
                continue
            left = counts.get(key, 0) - 1
            if left > 0:
                counts[key] = left
            else:
                counts.pop(key, None)


class StreamSlot:
    """One stream's place in the budget; released once, when its response ends however it ends."""

    def __init__(self, budget: StreamBudget, api_key_id: uuid.UUID, workspace_id: uuid.UUID | None) -> None:
        self._budget: StreamBudget | None = budget
        self._api_key_id = api_key_id
        self._workspace_id = workspace_id

    def release(self) -> None:
        """Give the place back (a no-op the second time)."""
        budget, self._budget = self._budget, None
        if budget is not None:
            budget._release(self._api_key_id, self._workspace_id)  # noqa: SLF001  # the slot belongs to its budget


def copy_response(request: Request[Any, Any, Any], database: Database, copy: Copy, *, as_csv: bool) -> Stream:
    """A streamed response (CSV or NDJSON) of what ``copy`` writes; closed (query cancelled) when the client goes.

    Claims the stream's place in the process's :class:`StreamBudget` first: over a limit, the request is answered
    429 or 503 before anything is streamed.
    """
    principal = request.scope.get("auth")
    if not isinstance(principal, Principal):  # pragma: no cover - the guard always runs first on /v1
        raise Unauthenticated("Authentication required.")
    budget: StreamBudget = request.app.state.streams
    slot = budget.claim(principal.api_key_id, principal.workspace_id)
    media_type = "text/csv; charset=utf-8" if as_csv else "application/x-ndjson"
    # Litestar lets the handler's declared media type override Stream(media_type=…); an explicit header wins.
    return CopyStream(
        relay(database, copy),
        slot=slot,
        send_timeout=budget.send_timeout,
        headers={"Content-Type": media_type, "Cache-Control": "no-store"},
    )


class CopyStream(Stream):
    """A :class:`Stream` that holds a place in the budget and cuts off a client that stops reading."""

    def __init__(
        self, body: AsyncGenerator[bytes, None], *, slot: StreamSlot, send_timeout: float, headers: dict[str, str]
    ) -> None:
        super().__init__(body, headers=headers)
        self.rows = body
        self.slot = slot
        self.send_timeout = send_timeout

    def to_asgi_response(  # Litestar's signature; ``app`` is deprecated, there are no type encoders to apply
        self,
        app: Litestar | None,  # noqa: ARG002
        request: Request[Any, Any, Any],  # noqa: ARG002
        *,
        background: BackgroundTask | BackgroundTasks | None = None,
        cookies: Iterable[Cookie] | None = None,
        encoded_headers: Iterable[tuple[bytes, bytes]] | None = None,
        headers: dict[str, str] | None = None,
        is_head_response: bool = False,
        media_type: MediaType | str | None = None,
        status_code: int | None = None,
        type_encoders: TypeEncodersMap | None = None,  # noqa: ARG002
    ) -> ASGIResponse:
        """As :meth:`Stream.to_asgi_response`, into a :class:`_CopyStreamResponse`."""
        merged = {**headers, **self.headers} if headers is not None else self.headers
        return _CopyStreamResponse(
            iterator=self.rows,
            slot=self.slot,
            send_timeout=self.send_timeout,
            background=self.background or background,
            content_length=0,
            cookies=[*self.cookies, *(cookies or ())],
            encoded_headers=encoded_headers,
            encoding=self.encoding,
            headers=merged,
            is_head_response=is_head_response,
            media_type=get_enum_string_value(media_type or self.media_type or MediaType.JSON),
            status_code=self.status_code or status_code,
        )


class _CopyStreamResponse(ASGIStreamingResponse):
    """Sends with a time limit; whatever ends the response, the query stops and the budget gets its place back."""

    __slots__ = ("rows", "send_timeout", "slot")

    def __init__(
        self, *, iterator: AsyncGenerator[bytes, None], slot: StreamSlot, send_timeout: float, **kwargs: Any
    ) -> None:
        super().__init__(iterator=iterator, **kwargs)
        self.rows = iterator
        self.slot = slot
        self.send_timeout = send_timeout

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Stream; a send the client does not take within ``send_timeout`` seconds ends the response."""
        timeout = self.send_timeout

        async def send_in_time(message: Message) -> None:
            # the server's send waits while the client's socket is full: the client has stopped reading
            try:
                await asyncio.wait_for(send(message), timeout)
            except TimeoutError:
                raise SendTimedOut from None

        try:
            await super().__call__(scope, receive, send_in_time)
        except* SendTimedOut:
            # returning without the last body message: the server closes the connection
            log.warning("stream_client_cut_off", reason="not_reading", seconds=timeout)
        finally:
            self.slot.release()
            # When the client goes away, Litestar cancels the sending but leaves the iterator suspended; closing it
            # (a no-op once it has ended) cancels the query and returns its connection at once.
            await self.rows.aclose()


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
        async with database.stream_driver() as driver:
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


class ClientGone(Exception):  # a signal, not an error
    """The client went away: the sink raises this to abort the COPY."""


class SendTimedOut(Exception):  # a signal, not an error
    """The client did not take a piece of the stream within the send timeout."""
