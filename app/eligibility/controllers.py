"""``/v1/eligibility``, ``/v1/eligibility/batch``, ``/v1/audiences``."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncGenerator
from typing import Annotated, Any

import msgspec
from litestar import Controller, Request, get, post
from litestar.background_tasks import BackgroundTask
from litestar.datastructures import State
from litestar.di import NamedDependency
from litestar.params import FromQuery, JSONBody
from litestar.response import Stream

from app.domain.model import Channel, PurposeKind
from app.eligibility import repository, service
from app.eligibility.schemas import MAX_BATCH_CONTACTS, BatchIn, BatchOut, EligibilityOut
from app.lib.auth import Principal, Scope
from app.lib.db import Database
from app.lib.errors import AppError
from app.lib.openapi import errors
from app.purposes.service import require_purpose

#: Pieces of COPY output held between PostgreSQL and the client.
AUDIENCE_QUEUE = 8
#: COPY output arrives in the pieces of one socket read (about 17 KB while the client keeps up); they are
#: gathered into pieces of at least this size before they are passed on, for fewer writes to the client.
AUDIENCE_PIECE = 64 * 1024


class PayloadTooLarge(AppError):
    """More than a batch may hold (413)."""

    status = 413
    code = "batch_too_large"
    title = "Request too large"


class EligibilityController(Controller):
    """What campaign tools ask before every send (scope `eligibility:read`)."""

    path = "/"
    tags = ["eligibility"]  # noqa: RUF012  # Litestar reads class attributes
    opt = {"scope": Scope.ELIGIBILITY_READ}  # noqa: RUF012

    @get("/eligibility", operation_id="getEligibility", responses=errors(401, 403, 404))
    async def single(
        self,
        principal: NamedDependency[Principal],
        state: State,
        contact: FromQuery[Annotated[str, msgspec.Meta(min_length=1, max_length=200)]],
        channel: FromQuery[Channel],
        purpose: FromQuery[Annotated[str, msgspec.Meta(min_length=1, max_length=63)]],
    ) -> EligibilityOut:
        """May we contact this person on this channel for this purpose now, why, and on which evidence."""
        return await service.single(
            state.database, principal.workspace_id, contact_ref=contact, channel=channel, purpose_key=purpose
        )

    @post(
        "/eligibility/batch",
        operation_id="getEligibilityBatch",
        status_code=200,
        responses=errors(401, 403, 404, 413, 422),
        opt={"idempotent": False},  # a read: a repeat must answer what holds now, never a stored answer
    )
    async def batch(self, data: JSONBody[BatchIn], principal: NamedDependency[Principal], state: State) -> BatchOut:
        """One decision per contact and channel, for up to 10,000 contacts (more answers 413)."""
        if len(data.contacts) > MAX_BATCH_CONTACTS:
            raise PayloadTooLarge(
                f"A batch holds at most {MAX_BATCH_CONTACTS:,} contacts; this one has {len(data.contacts):,}. "
                "Split it, or stream a whole audience with GET /v1/audiences."
            )
        database: Database = state.database
        purpose, decided_at, decisions = await service.batch(
            database, principal.workspace_id, refs=data.contacts, channels=data.channels, purpose_key=data.purpose
        )
        return BatchOut(purpose=purpose, decided_at=decided_at, decisions=decisions)

    @get(
        "/audiences",
        operation_id="streamAudience",
        responses=errors(401, 403, 404),
        media_type="application/x-ndjson",
    )
    async def audience(
        self,
        request: Request[Any, Any, Any],
        state: State,
        principal: NamedDependency[Principal],
        purpose: FromQuery[Annotated[str, msgspec.Meta(min_length=1, max_length=63)]],
        channel: FromQuery[Annotated[list[Channel], msgspec.Meta(min_length=1)]],
    ) -> Stream:
        """Every eligible contact point, streamed as NDJSON (or CSV with `Accept: text/csv`) in constant memory.

        The send window is a send-time check and is not applied here; routing re-checks every message.
        """
        database: Database = state.database
        async with database.sessionmaker() as session:
            found = await require_purpose(session, principal.workspace_id, purpose)
        as_csv = "text/csv" in request.headers.get("accept", "")
        body = _relay(
            database,
            principal.workspace_id,
            found.id,
            PurposeKind(found.kind),
            sorted(set(channel)),
            as_csv=as_csv,
        )
        media_type = "text/csv; charset=utf-8" if as_csv else "application/x-ndjson"
        # Litestar lets the handler's declared media type override Stream(media_type=…); an explicit header wins.
        # When the client goes away, Litestar cancels the sending but leaves the iterator suspended: closing it
        # afterwards (a no-op once it has ended) cancels the query and returns its connection at once.
        return Stream(
            body,
            headers={"Content-Type": media_type, "Cache-Control": "no-store"},
            background=BackgroundTask(_close, body),
        )


async def _relay(
    database: Database,
    workspace_id: uuid.UUID,
    purpose_id: uuid.UUID,
    kind: PurposeKind,
    channels: list[Channel],
    *,
    as_csv: bool,
) -> AsyncGenerator[bytes, None]:
    """What ``COPY`` writes, passed on as it arrives through a :class:`_Pipe`.

    The query runs in a task of its own; when the pipe is full its sink waits, which stops reading from
    PostgreSQL, so memory stays flat however large the audience and however slow the client. When the client
    goes away, the response's background task closes this generator and the sink raises: asyncpg's own way
    to abort a COPY (it sends a cancel request and reads on until PostgreSQL confirms). Cancelling the task
    instead leaves asyncpg's protocol mid-COPY, and the connection then fails its rollback.
    """
    pipe = _Pipe()

    async def produce() -> None:
        async with database.driver() as driver:
            await repository.copy_audience(
                driver, workspace_id, purpose_id, kind, channels, as_csv=as_csv, sink=pipe.write
            )
        await pipe.close_writing()

    task = asyncio.create_task(produce())
    try:
        while (chunk := await pipe.read(task)) is not None:
            yield chunk
        await task
    finally:
        pipe.gone.set()
        with contextlib.suppress(_ClientGone):
            await task  # ends at the sink's next piece, or when the query ends


class _Pipe:
    """COPY output on its way to the client: pieces of at least AUDIENCE_PIECE, at most AUDIENCE_QUEUE held."""

    def __init__(self) -> None:
        self.gone = asyncio.Event()  # set when the reader stops: the writer raises _ClientGone from then on
        self._queue: asyncio.Queue[bytes | None] = asyncio.Queue(maxsize=AUDIENCE_QUEUE)
        self._gathered = bytearray()

    async def write(self, piece: bytes) -> None:
        """The COPY's sink: waits while the pipe is full."""
        if self.gone.is_set():
            raise _ClientGone
        self._gathered.extend(piece)  # a copy: asyncpg hands over a buffer of its own
        if len(self._gathered) >= AUDIENCE_PIECE:
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
            raise _ClientGone
        self._queue.put_nowait(chunk)


async def _close(body: AsyncGenerator[bytes, None]) -> None:
    # a coroutine function of our own: Litestar would run the bound ``aclose`` in a thread and never await it
    await body.aclose()


class _ClientGone(Exception):  # a signal, not an error
    """The client went away: the sink raises this to abort the COPY."""
