"""The sealer: committed ledger events take their place in their workspace's hash chain (migration 0043).

A consent change (:func:`app.ledger.service.apply_changes`) inserts its event *unsealed* and commits without
touching its workspace's chain head, so that many changes of one workspace commit together (issue 21, item 3: a
STOP flood). Sealing then appends what has committed, under the head's lock, in ``intake`` order (drawn at insert,
after the consent rows' locks: one address's events keep their order), a batch per statement:

- every process runs a :class:`Sealer`, woken when a session that recorded changes commits (so its own events
  are sealed within milliseconds) and polling now and then for what others left (a process killed between its
  commit and the seal);
- whoever appends under the head itself (imports, notes, merges: :func:`lock_head`) seals what waits first, so
  the chain keeps commit order around them;
- whoever reads the chain or a contact's history in order (:func:`seal`) seals first, so it reads every
  committed event with its place.

An acknowledged change is durable at its commit; it is chained within the sealer's lag (metric
``consent_ledger_seal_lag_seconds``). Until then its row exists with ``seq`` NULL: it counts for eligibility,
reports count it once sealed, and the chain's verification covers it once sealed.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

import structlog
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

from app.domain.chain import ChainFields, event_hash
from app.ledger import repository
from app.lib.db import Database

log = structlog.get_logger(__name__)

#: Events sealed per statement.
SEAL_BATCH = 5_000
#: Seconds between looks for events another process left unsealed.
POLL_SECONDS = 1.0
#: The key under which a session notes the workspaces whose unsealed events it wrote (``session.info``).
_UNSEALED = "consent_unsealed_workspaces"


async def lock_head(session: AsyncSession, workspace_id: uuid.UUID) -> tuple[int, bytes]:
    """Lock the workspace's chain head and seal what waits; returns (last seq, last hash) to append after."""
    head, _ = await _seal_waiting(session, workspace_id, await repository.lock_head(session, workspace_id))
    return head


async def seal(session: AsyncSession, workspace_id: uuid.UUID, *, skip_busy: bool = False) -> int:
    """Seal every committed event of the workspace that waits, in the caller's transaction; how many.

    Costs one look at an (almost always empty) index when nothing waits; takes the head's lock only then, and with
    ``skip_busy`` (the background sealer) not at all while another transaction holds it: one busy workspace must
    not hold up the sealing of the others. Never for a workspace being deleted.
    """
    if not await repository.has_unsealed(session, workspace_id):
        return 0
    head = await repository.lock_live_head(session, workspace_id, skip_locked=skip_busy)
    if head is None:
        return 0
    _, total = await _seal_waiting(session, workspace_id, head)
    return total


async def seal_first(session: AsyncSession, workspace_id: uuid.UUID) -> None:
    """For a reader of the chain in order: seal what waits first, in a short transaction of its own.

    Only when ``session`` has no transaction open yet: sealing inside the reader's transaction would hold the chain
    head for as long as the reader reads (a verification walks the whole chain). A reader inside a transaction
    reads what is sealed; what waits is sealed within the sealer's lag and shown with a null ``seq`` meanwhile.
    """
    if session.in_transaction():
        return
    async with session.begin():
        await seal(session, workspace_id)


async def seal_on_database(database: Database, workspace_id: uuid.UUID) -> None:
    """:func:`seal_first` in a session of its own (for readers that stream on a driver connection)."""
    async with database.sessionmaker() as session:
        await seal_first(session, workspace_id)


async def _seal_waiting(
    session: AsyncSession, workspace_id: uuid.UUID, head: tuple[int, bytes]
) -> tuple[tuple[int, bytes], int]:
    """Chain every waiting event after ``head`` (locked by the caller), a batch at a time; the new head, how many."""
    total = 0
    while True:
        head, sealed = await _seal_batch(session, workspace_id, head)
        total += sealed
        if sealed < SEAL_BATCH:
            return head, total


async def _seal_batch(
    session: AsyncSession, workspace_id: uuid.UUID, head: tuple[int, bytes]
) -> tuple[tuple[int, bytes], int]:
    """Chain up to :data:`SEAL_BATCH` waiting events after ``head`` (locked by the caller); the new head, how many."""
    rows = await repository.unsealed_events(session, workspace_id, SEAL_BATCH)
    if not rows:
        return head, 0
    last_seq, last_hash = head
    sealed: list[dict[str, Any]] = []
    for row in rows:
        fields = ChainFields(
            id=row.id,
            workspace_id=workspace_id,
            seq=last_seq + 1,
            contact_id=row.contact_id,
            contact_point_id=row.contact_point_id,
            purpose_id=row.purpose_id,
            channel=row.channel,
            trigger=row.trigger,
            from_state=row.from_state,
            to_state=row.to_state,
            legal_basis=row.legal_basis,
            notice_id=row.notice_id,
            actor_type=row.actor_type,
            actor_id=row.actor_id,
            occurred_at=row.occurred_at,
            recorded_at=row.recorded_at,
            personal_digest=bytes(row.personal_digest),
        )
        digest = event_hash(fields, last_hash)
        sealed.append(
            {"id": row.id, "recorded_at": row.recorded_at, "seq": fields.seq, "prev_hash": last_hash, "hash": digest}
        )
        last_seq, last_hash = fields.seq, digest
    await repository.seal_events(session, workspace_id, sealed)
    _observe_lag(rows[0].recorded_at)
    return (last_seq, last_hash), len(rows)


def deferred() -> bool:
    """Whether consent changes leave their events to the sealer: where this process runs one."""
    return _running is not None


def note_unsealed(session: AsyncSession, workspace_id: uuid.UUID) -> None:
    """Remember that ``session`` wrote unsealed events of the workspace: its commit wakes this process's sealer."""
    session.info.setdefault(_UNSEALED, set()).add(workspace_id)


@event.listens_for(Session, "after_commit")
def _committed(session: Session) -> None:
    workspaces = session.info.pop(_UNSEALED, None)
    if workspaces and _running is not None:
        _running.wake(workspaces)


@event.listens_for(Session, "after_rollback")
def _rolled_back(session: Session) -> None:
    session.info.pop(_UNSEALED, None)


#: This process's sealer, once it runs (one per process; tests run none and seal where they read).
_running: Sealer | None = None
#: The lag histogram of the running sealer's app (set with it).
_lag: Any = None


def _observe_lag(recorded_at: datetime) -> None:
    if _lag is not None:
        _lag.observe(max(0.0, (datetime.now(UTC) - recorded_at).total_seconds()))


class Sealer:
    """Seals this process's committed events as they commit, and what others left, until stopped."""

    def __init__(self, database: Database, *, lag: Any = None, poll_seconds: float = POLL_SECONDS) -> None:
        self.database = database
        self.poll_seconds = poll_seconds
        self._lag = lag
        self._waiting: set[uuid.UUID] = set()
        self._woken = asyncio.Event()

    def wake(self, workspaces: Iterable[uuid.UUID]) -> None:
        """Seal these workspaces' events soon (called on commit, in the event loop's thread)."""
        self._waiting.update(workspaces)
        self._woken.set()

    async def run(self, stop: asyncio.Event) -> None:
        """Seal until ``stop`` is set; then once more, so that what this process committed leaves sealed."""
        global _running, _lag  # one sealer per process, found by the commit hook
        _running, _lag = self, self._lag
        last_poll = 0.0
        try:
            while not stop.is_set():
                if time.monotonic() - last_poll >= self.poll_seconds:
                    last_poll = time.monotonic()
                    await self._round(None)
                elif self._waiting:
                    await self._round(self._take())
                await self._sleep(stop)
            await self._round(None)
        finally:
            if _running is self:
                _running, _lag = None, None

    async def _sleep(self, stop: asyncio.Event) -> None:
        """Until a commit wakes it, ``stop`` is set or the poll is due."""
        if not self._woken.is_set():
            waits = [asyncio.ensure_future(self._woken.wait()), asyncio.ensure_future(stop.wait())]
            _, pending = await asyncio.wait(waits, timeout=self.poll_seconds, return_when=asyncio.FIRST_COMPLETED)
            for waiting in pending:
                waiting.cancel()
        self._woken.clear()

    def _take(self) -> set[uuid.UUID]:
        taken, self._waiting = self._waiting, set()
        return taken

    async def _round(self, workspaces: set[uuid.UUID] | None) -> None:
        """Seal the given workspaces (all with waiting events if ``None``), one transaction each; never raises."""
        try:
            if workspaces is None:
                async with self.database.sessionmaker() as session:
                    workspaces = set(await repository.workspaces_with_unsealed(session)) | self._take()
            for workspace_id in workspaces:
                async with self.database.sessionmaker() as session, session.begin():
                    await seal(session, workspace_id, skip_busy=True)
        except Exception:  # logged; the next poll finds what is left (a deleted workspace's events it skips)
            log.exception("ledger_seal_failed")
