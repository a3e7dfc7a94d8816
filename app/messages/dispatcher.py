"""The dispatcher: claims due deliveries, re-checks the send gate, calls the adapter, records the outcome.

- **Claiming** marks a batch ``sending`` with a lease (``FOR UPDATE SKIP LOCKED``), so any number of workers
  (``consent serve`` runs one, ``consent worker`` more) never claim the same row. A worker that dies leaves its
  rows leased; when the lease runs out another worker takes them over.
- **At send time** the gate is asked again: a consent withdrawn after queueing makes the delivery
  ``blocked_at_send`` (nothing is sent); outside the send window it waits for the next opening. A delivery the
  gate permits as an existing customer's (``existing_customer``, UWG §7(3)) is composed with the objection notice;
  a channel whose message cannot carry it blocks the delivery (``objection_notice_missing``), nothing goes out.
  A call's in-flight mark is written only while the gate's facts are those its decision read (a digest of them,
  recomputed in the mark's own statement) and its decision still holds (before its consent's end and its window's
  close, by the statement's clock); a delivery whose facts changed meanwhile (a STOP, a pause, a suppression) or
  whose decision stopped holding is decided again at once on the facts of now (:meth:`Dispatcher._regate`). Calls
  already marked are made whatever deciding the others again does.
- What differs between channels (the provider adapter, what goes into the request, what a provider's answer
  means for the address) comes from the channel registry (:mod:`app.channels`); nothing here names a channel.
- Every provider call has a deadline. Transient failures are retried with exponential backoff and jitter up to
  ``max_attempts``; permanent ones fail at once. The channel's feedback mapping turns what the provider said
  into state: Twilio 21610 → ``provider_blocked`` and opted out; a push subscription gone → ``expired`` and
  opted out; an SMTP 5xx → ``undeliverable``.
- Each delivery's ``in_flight_at`` mark is committed before its provider call and its outcome as soon as the
  call returns (writes that arrive together go together: marks and acceptances as one statement, other outcomes in
  one short transaction; none waits for a slow sibling), only by the worker holding the lease (checked in the
  statements), so a late worker never overwrites the row's new owner. The mark renews the lease, so a call that
  waited for a slot is not taken over by another worker while it is under way (a lease must cover one call and
  its writes: :class:`DispatchConfig`). A worker dying mid-batch thus leaves every delivery finished, untouched,
  or marked in flight; one claimed again with the mark set is resolved by :mod:`app.messages.policy`: marketing
  becomes ``unknown`` (at most once), transactional is sent again (at least once; the Message-ID and push Topic
  derived from the delivery id let receivers fold the repeat). Nothing the provider answered is sent again.
- One delivery's failure is its own: an error while preparing it (a stored time zone no zone database knows,
  say) schedules a retry of that delivery, and the rest of the batch (every workspace's) goes on.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Iterable, Mapping, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, NamedTuple

import structlog
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession

from app.channels import registry
from app.channels.adapters import Adapters
from app.channels.base import ChannelSpec, Sending
from app.domain.gate import PointFacts, Reason, decide_point
from app.domain.model import ActorType, Channel, LegalBasis, PurposeKind
from app.eligibility import repository as facts_repository
from app.eligibility.service import routable
from app.ledger import repository as ledger
from app.ledger.actions import withdraw_point
from app.ledger.service import Actor
from app.lib.db import Database
from app.lib.keys import Keys
from app.lib.orm import utcnow
from app.lib.rounds import backoff, work_until
from app.messages import repository, tracking
from app.messages.models import Delivery
from app.messages.policy import AfterCrash, after_crash
from app.messages.repository import Claimed, ToSend, add_event
from app.messages.status import DeliveryStatus, Step, step_of
from app.settings import Settings
from app.workspaces.service import settings_by_workspace
from app.workspaces.settings import WorkspaceSettings, window_of
from channel_providers.base import ChannelAdapter, Outbound, Outcome, SendResult, provider_of

log = structlog.get_logger(__name__)

#: The error of a delivery the gate permitted as an existing customer's (UWG §7(3)) whose composed message cannot
#: carry the objection notice: it is blocked at send time instead of going out without one.
OBJECTION_NOTICE_MISSING = "objection_notice_missing: the message cannot carry the objection notice UWG §7(3) requires"


#: The share of the lease one provider call may take (its ``deadline``): the rest covers the in-flight mark's commit
#: before the call and the outcome's write after it, so a call and its outcome stay inside the lease the mark renewed.
CALL_SHARE_OF_LEASE = 0.8


@dataclass(frozen=True, slots=True)
class DispatchConfig:
    """How a dispatcher works.

    Each call's in-flight mark renews the delivery's lease for ``lease`` (:func:`repository.mark_and_settle_sent`),
    so the lease must cover one call: a ``deadline`` longer than :data:`CALL_SHARE_OF_LEASE` of it is refused
    (``consent worker`` clamps the deadline to it instead).
    """

    batch: int = 200
    concurrency: int = 64
    lease: timedelta = timedelta(seconds=60)
    max_attempts: int = 8
    base_backoff: float = 5.0
    max_backoff: float = 3600.0
    deadline: float = 15.0
    idle_sleep: float = 0.5

    def __post_init__(self) -> None:
        """Refuse a configuration under which a call could outlive its lease (or nothing could be sent)."""
        if self.batch < 1 or self.concurrency < 1:
            msg = f"batch and concurrency must be at least 1 (batch={self.batch}, concurrency={self.concurrency})"
            raise ValueError(msg)
        if self.deadline <= 0:
            msg = f"the deadline must be positive (deadline={self.deadline})"
            raise ValueError(msg)
        # rounded: 0.8 x 2.8 s is 2.2399999999999998 in binary floating point, and 2.24 s must pass
        if round(self.deadline, 6) > round(self.lease.total_seconds() * CALL_SHARE_OF_LEASE, 6):
            msg = (
                f"a lease of {self.lease.total_seconds()} s does not cover a call of up to {self.deadline} s and the "
                f"writes around it: the deadline may be at most {CALL_SHARE_OF_LEASE:.0%} of the lease"
            )
            raise ValueError(msg)


@dataclass(frozen=True, slots=True)
class _Prepared:
    """A claimed delivery ready to send (or already decided not to)."""

    delivery_id: uuid.UUID
    workspace_id: uuid.UUID
    channel: Channel
    outbound: Outbound | None
    adapter: ChannelAdapter | None
    kind: PurposeKind | None = None
    """The purpose's kind: what an answer that may have been delivered leads to (:mod:`app.messages.policy`)."""
    digest: str = ""
    """The digest of the gate's facts its decision was made on (:func:`app.eligibility.repository.gate_facts_sql`):
    its in-flight mark is written only while the facts of that moment have the same (else it is decided again)."""
    holds_until: datetime | None = None
    """When its decision stops holding on the same facts (:attr:`app.domain.gate.GateDecision.holds_until`: its
    consent's end, its send window's close): no in-flight mark is written from then on (it is decided again)."""


@dataclass(frozen=True, slots=True)
class _Entry:
    """What the journal writes for one delivery: its call begins (no result yet), or its outcome."""

    item: _Prepared
    result: SendResult | None = None


#: How many times in a row a delivery whose gate facts changed before its in-flight mark is decided again and its mark
#: tried again (:meth:`Dispatcher._regate`); one whose facts changed every time is retried later (an attempt).
_REGATE_TRIES = 3


class _Held(set[uuid.UUID]):
    """The deliveries a journal write found held by this worker (and wrote).

    ``again``: those of its in-flight marks whose gate facts had changed since their decision, decided again on the
    facts of now and marked, with what to send for them now (:meth:`Dispatcher._regate`).
    """

    def __init__(self, held: Iterable[uuid.UUID] = (), again: Mapping[uuid.UUID, _Prepared] | None = None) -> None:
        super().__init__(held)
        self.again: dict[uuid.UUID, _Prepared] = dict(again or {})


class _Journal:
    """Writes in-flight marks and outcomes as they come, like a group commit.

    An entry is written at once when no write is under way; entries arriving during a write go together into
    the next one. Nobody waits for more than the write before theirs, never for a slow provider call, and a
    burst of answers costs one transaction instead of one each. A shared write that fails is repeated entry by
    entry, so one delivery's bad row fails only its own write.
    """

    def __init__(self, write: Callable[[Sequence[_Entry]], Awaitable[set[uuid.UUID]]]) -> None:
        self._write = write
        self._lock = asyncio.Lock()
        self._pending: list[tuple[_Entry, asyncio.Future[_Prepared | None]]] = []

    async def write(self, entry: _Entry) -> _Prepared | None:
        """Write ``entry`` (with whatever else is pending); ``None`` unless the worker still held the delivery.

        Answers what to send for a call that begins (its item, or the one decided again where its gate's facts had
        changed: :class:`_Held`); ``None`` where the call must not begin (its lease is lost, or the facts of now
        stop it, and it was settled so).
        """
        done: asyncio.Future[_Prepared | None] = asyncio.get_running_loop().create_future()
        self._pending.append((entry, done))
        async with self._lock:
            if not done.done():
                await asyncio.sleep(0)  # one turn of the loop: what else is ready now joins this write
                batch, self._pending = self._pending, []
                try:
                    await self._settle(batch)
                except BaseException:  # cancelled mid-write: whoever waits for this batch must not wait forever
                    for _, waiting in batch:
                        if not waiting.done():
                            waiting.cancel()
                    raise
        return await done

    async def _settle(self, batch: Sequence[tuple[_Entry, asyncio.Future[_Prepared | None]]]) -> None:
        try:
            held = await self._write([e for e, _ in batch])
        except Exception as exc:  # noqa: BLE001  # handed to the entry's writer, or split up below
            if len(batch) == 1:
                batch[0][1].set_exception(exc)
                return
            for one in batch:  # one at a time: the failure stays with the entry that causes it
                await self._settle([one])
            return
        again = held.again if isinstance(held, _Held) else {}
        for e, waiting in batch:
            held_one = e.item.delivery_id in held
            waiting.set_result(again.get(e.item.delivery_id, e.item) if held_one else None)


class _Calls:
    """The provider calls of one batch: at most ``concurrency`` at once, begun in claim order."""

    def __init__(self, concurrency: int) -> None:
        self.concurrency = concurrency
        self._limit = asyncio.Semaphore(concurrency)
        self._running = 0
        self._waiting = 0

    def room(self) -> int:
        """How many calls could begin now (free slots no queued call waits for)."""
        return max(self.concurrency - self._running - self._waiting, 0)

    def queue(self, count: int) -> None:
        """``count`` calls are prepared and will each take a slot (:meth:`slot`)."""
        self._waiting += count

    @contextlib.asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        """One queued call's slot, held for the call."""
        try:
            await self._limit.acquire()
        finally:  # taken, or given up (cancelled): no longer queued either way
            self._waiting -= 1
        self._running += 1
        try:
            yield
        finally:
            self._running -= 1
            self._limit.release()


class _Marks(NamedTuple):
    """What a batch of in-flight marks found (:meth:`Dispatcher._mark`)."""

    marked: set[uuid.UUID]
    changed: set[uuid.UUID]
    """Held, not marked: their gate's facts changed or their decision stopped holding (to be decided again)."""
    failed: frozenset[uuid.UUID]
    """The workspaces whose marks the database refused (none of their deliveries was marked)."""


class FactsUnavailable(RuntimeError):
    """The database refused to compute a delivery's gate facts (its workspace's stored time zone, say)."""


@dataclass(frozen=True, slots=True)
class _Loaded:
    """What a batch's deliveries need besides their own rows (:func:`repository.batch_to_send`)."""

    settings: Mapping[uuid.UUID, WorkspaceSettings]
    facts: Mapping[tuple[uuid.UUID, uuid.UUID], PointFacts]
    digests: Mapping[tuple[uuid.UUID, uuid.UUID], str]
    """The digest of each (address, purpose)'s facts as read (:func:`app.eligibility.repository.gate_facts_sql`)."""
    tracked: Mapping[uuid.UUID, dict[str, Any]]
    """The content of each delivery sent with tracking (consented: :mod:`app.messages.tracking`), by its id."""
    unreadable: frozenset[tuple[uuid.UUID, uuid.UUID]] = frozenset()
    """(workspace, purpose) whose facts the database refused to compute: their deliveries wait and retry."""


@dataclass(frozen=True, slots=True)
class _Settle:
    """How prepare settles a delivery it does not send (written through the ORM, as every such outcome is).

    ``status`` with ``error``: the attempt ends (:meth:`Dispatcher._finish`); ``opens``: it waits for its send window
    (:meth:`Dispatcher._wait`); ``failure``: preparing it failed, a transient failure (:meth:`Dispatcher._apply`).
    """

    status: DeliveryStatus | None = None
    error: str | None = None
    opens: datetime | None = None
    failure: str | None = None


class Dispatcher:
    """Claims and sends deliveries for every workspace."""

    def __init__(
        self,
        database: Database,
        keys: Keys,
        settings: Settings,
        adapters: Adapters,
        *,
        config: DispatchConfig | None = None,
        worker_id: str | None = None,
    ) -> None:
        self.database = database
        self.keys = keys
        self.settings = settings
        self.adapters = adapters
        self.config = config or DispatchConfig()
        self.worker_id = worker_id or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"

    @property
    def _lease_seconds(self) -> float:
        """How long a claim, and each call's in-flight mark, holds a delivery (:data:`CALL_SHARE_OF_LEASE`)."""
        return self.config.lease.total_seconds()

    async def run(self, stop: asyncio.Event) -> None:
        """Work until ``stop`` is set; sleeps briefly when nothing is due.

        One batch at a time (:meth:`run_once`): the next is claimed when every call of this one has ended. Claiming
        the next batch while this one's calls were under way (a pipeline, tried 2026-12-06) let a call outlive its
        lease, so this worker's own next claim or another worker took the delivery over and sent it again, and
        gated a batch long before its calls began (hostile review): not kept.
        """
        await work_until(
            stop, self.run_once, self.config.idle_sleep, failed="dispatch_round_failed", worker=self.worker_id
        )

    async def run_once(self) -> int:
        """Claim one batch and handle it; returns how many deliveries were claimed.

        Claim, then load and re-check (settling what is blocked or must wait) in one short transaction each; then
        every delivery on its own: its in-flight mark is committed before its provider call and its outcome as
        soon as the call returns (:class:`_Journal`), so a slow call never holds back what others' providers
        already answered, and a worker dying mid-batch leaves each delivery either finished or marked in flight.
        No transaction is held during a provider call. Returns when every call of the batch has been answered and
        written (:meth:`run` does not wait for that before the next claim).
        """
        claimed = await self._claim()
        if not claimed:
            return 0
        calls = _Calls(self.config.concurrency)
        prepared, marked = await self._prepare(claimed, room=calls.room())
        calls.queue(len(prepared))
        marks: dict[uuid.UUID, _Prepared] = {}  # this round's journal marks (:meth:`_write`)
        await self._send_batch(prepared, marked, calls, _Journal(lambda entries: self._write(entries, marks)))
        return len(claimed)

    async def _send_batch(
        self, prepared: Sequence[_Prepared], marked: set[uuid.UUID], calls: _Calls, journal: _Journal
    ) -> None:
        """Every prepared delivery's call (in ``calls``' slots) and its outcome written as it returns.

        The caller has counted ``prepared`` in ``calls.queue`` before.
        """

        async def one(item: _Prepared, *, marked: bool) -> None:
            async with calls.slot():
                if not marked:
                    try:
                        started = await journal.write(_Entry(item))
                    except DBAPIError:  # not marked (one statement): not called; it keeps its lease (R2)
                        log.exception("delivery_mark_failed", delivery_id=str(item.delivery_id), worker=self.worker_id)
                        return
                    if started is None:
                        # its lease is lost, or the gate's facts of now stop it (settled so by :meth:`_regate`)
                        log.info("delivery_call_not_started", delivery_id=str(item.delivery_id), worker=self.worker_id)
                        return
                    item = started  # decided again where its facts had changed since its gate
                result = await self._send(item)
            await journal.write(_Entry(item, result))

        failures = [
            failure
            for failure in await asyncio.gather(
                *(one(item, marked=item.delivery_id in marked) for item in prepared),
                return_exceptions=True,
            )
            if isinstance(failure, BaseException)
        ]
        if failures:  # the database failed under the writes: the round fails, the leases run out
            raise failures[0]

    async def _claim(self) -> list[Claimed]:
        async with self.database.sessionmaker() as session, session.begin():
            claimed = await repository.claim_due(
                session, self.worker_id, lease_seconds=self._lease_seconds, batch=self.config.batch
            )
            for row in claimed:
                if row.attempts > 1:
                    add_event(
                        session,
                        row.workspace_id,
                        row.message_id,
                        row.id,
                        row.channel,
                        Step.SENDING,
                        detail={"attempt": row.attempts},
                    )
        return claimed

    async def _send(self, item: _Prepared) -> SendResult:
        assert item.adapter is not None
        assert item.outbound is not None
        try:
            async with asyncio.timeout(self.config.deadline):  # not ``wait_for``: it makes a task of every call
                return await item.adapter.send(item.outbound)
        except TimeoutError:  # the request may have reached the provider: the policy decides on a repeat
            return SendResult(
                Outcome.TRANSIENT, detail=f"no answer within {self.config.deadline} s", maybe_delivered=True
            )
        except Exception as exc:  # an adapter bug must not lose the delivery (nor repeat marketing: it may have gone)
            log.exception("adapter_failed", channel=item.channel.value)
            return SendResult(Outcome.TRANSIENT, detail=f"{type(exc).__name__}: {exc}", maybe_delivered=True)

    async def _prepare(self, claimed: Sequence[Claimed], *, room: int) -> tuple[list[_Prepared], set[uuid.UUID]]:
        """Load what the sends need and ask the gate again; blocked or waiting deliveries are settled here.

        Answers the deliveries to send, and those of them already marked in flight: the first ``room``, the calls
        that can begin as soon as this commits. A mark is written only while the delivery's gate facts are those
        its decision read (:func:`repository.mark_in_flight_on_driver`: compared in the mark's own statement, so a
        STOP, a pause or a suppression committed meanwhile is seen); one whose facts changed is decided again at
        once on the facts of now (:meth:`_regate`).

        The deliveries with their messages, addresses, contacts and purposes are one statement into plain tuples
        (:func:`repository.batch_to_send`), the gate's facts one query per (workspace, purpose); every read is limited
        to the workspaces of the claimed deliveries. Only the deliveries settled here are loaded as ORM objects,
        and written as before.
        """
        workspace_ids = sorted({c.workspace_id for c in claimed})
        async with self.database.sessionmaker() as session, session.begin():
            ready, driver = await self._decide(session, workspace_ids, [c.id for c in claimed])
            # the first calls start as soon as this commits: their in-flight marks go with it (one write fewer)
            starting = ready[:room]
            marks = await self._mark(session, driver, workspace_ids, starting)
        marked, changed = marks.marked, marks.changed
        if marks.failed:  # those workspaces' deliveries keep their lease and are claimed again when it runs out
            ready = [item for item in ready if item.workspace_id not in marks.failed]
        # held and unchanged, or changed (decided again below); the others are no longer held
        lost = {item.delivery_id for item in starting} - marked - changed
        ready = [item for item in ready if item.delivery_id not in lost]
        if not changed:
            return ready, marked
        # the first marks are committed: whatever happens while deciding the changed ones again, those calls are made
        again = await self._regate(workspace_ids, changed)
        kept = [again.get(item.delivery_id, item) for item in ready if item.delivery_id not in changed - set(again)]
        return kept, marked | set(again)

    async def _mark(
        self, session: AsyncSession, driver: Any, workspace_ids: Sequence[uuid.UUID], items: Sequence[_Prepared]
    ) -> _Marks:
        """Mark these calls in flight in ``session``'s transaction (:func:`repository.mark_in_flight_on_driver`).

        One statement for all, in a savepoint; if the database refuses it (one workspace's stored time zone, changed
        since the gate's read, fails the facts the statement recomputes for every workspace), once per workspace,
        each in a savepoint of its own: only the workspace whose marks fail waits (its deliveries keep their lease;
        hostile review 2026-12-06, R2), the others' calls go on.
        """
        if not items:
            return _Marks(set(), set(), frozenset())
        try:
            async with session.begin_nested():
                await session.connection()  # the SAVEPOINT is sent (lazily begun: the mark goes past the session)
                marked, changed = await self._mark_on(driver, workspace_ids, items)
            return _Marks(marked, changed, frozenset())
        except DBAPIError:
            log.exception("delivery_marks_failed", workspaces=[str(w) for w in workspace_ids])
        marked, changed, failed = set(), set(), set()
        for workspace_id in sorted({item.workspace_id for item in items}):
            theirs = [item for item in items if item.workspace_id == workspace_id]
            try:
                async with session.begin_nested():
                    await session.connection()
                    one, other = await self._mark_on(driver, [workspace_id], theirs)
            except DBAPIError:
                log.exception("delivery_marks_failed", workspace_id=str(workspace_id))
                failed.add(workspace_id)
                continue
            marked |= one
            changed |= other
        return _Marks(marked, changed, frozenset(failed))

    async def _mark_on(
        self, driver: Any, workspace_ids: Sequence[uuid.UUID], items: Sequence[_Prepared]
    ) -> tuple[set[uuid.UUID], set[uuid.UUID]]:
        return await repository.mark_in_flight_on_driver(
            driver,
            workspace_ids,
            [item.delivery_id for item in items],
            [item.digest for item in items],
            self.worker_id,
            untils=[item.holds_until for item in items],
            at=utcnow(),
            lease_seconds=self._lease_seconds,
        )

    async def _decide(
        self, session: AsyncSession, workspace_ids: Sequence[uuid.UUID], delivery_ids: Sequence[uuid.UUID]
    ) -> tuple[list[_Prepared], Any]:
        """Read and decide these deliveries in ``session``'s transaction; settle those not to send (blocked, waiting).

        Answers the deliveries to send (in the order read) and the transaction's driver connection (for the marks).
        """
        ready: list[_Prepared] = []
        by_workspace = await settings_by_workspace(session, workspace_ids)
        driver = await ledger.transaction_driver(session)  # begun by the read above
        if driver is None:  # (not an assert: ``python -O`` drops those) its statements would each commit alone
            msg = "the dispatcher's prepare has no transaction begun for its reads and marks"
            raise RuntimeError(msg)
        rows = await repository.batch_to_send(driver, workspace_ids, delivery_ids)
        facts, digests, unreadable = await self._facts(session, rows)
        loaded = _Loaded(
            settings=by_workspace,
            facts=facts,
            digests=digests,
            unreadable=unreadable,
            tracked=await tracking.prepare(session, self.keys, self.settings, rows, by_workspace),
        )
        # the database's clock, which the marks compare ``holds_until`` with: with the application's, a clock behind
        # the database's decided "still open" for a window the mark found closed, three times, then failed the
        # delivery, an attempt burnt each round (second hostile review of the gate, 2026-12-06)
        now = await repository.database_now(driver)
        settling: dict[uuid.UUID, _Settle] = {}
        for row in rows:
            try:
                item = self._prepare_one(row, loaded, now)
            except Exception as exc:  # one bad row (a stored time zone, a template) must not stop the batch
                log.exception("delivery_prepare_failed", delivery_id=str(row.id), channel=row.channel)
                settling[row.id] = _Settle(failure=_failure(exc))
                continue
            if isinstance(item, _Settle):
                settling[row.id] = item
            else:
                ready.append(item)
        if settling:
            await self._settle(session, workspace_ids, settling)
        return ready, driver

    async def _regate(
        self, workspace_ids: Collection[uuid.UUID], changed: AbstractSet[uuid.UUID]
    ) -> dict[uuid.UUID, _Prepared]:
        """Decide again, on the facts of now, deliveries whose gate facts changed before their in-flight mark.

        Each try is one transaction: read and decide them as prepare does (:meth:`_decide`: what the facts now stop
        is settled ``blocked_at_send``, what must wait for its window waits, neither counted as an attempt), and mark
        the rest in flight against their new digests. Answers those marked, with what to send for them (composed
        again: the decision may rest on another basis now). A delivery whose decision does not change (a
        transactional message after a marketing STOP) is thus marked and sent once, without its lease ending and
        the next claim taking it again. One whose facts changed again before each of :data:`_REGATE_TRIES` marks is
        retried later (a transient failure, an attempt). Only rows this worker still holds are settled or marked.

        Never raises (a database error is logged): the caller's marks are committed before, and their calls must be
        made whatever happens here, or the next claim would settle them ``unknown`` (marketing lost: hostile review
        2026-12-06, R1). Those not marked keep their lease and are claimed again when it runs out; each one marked
        is answered (its mark is committed with its try), so none is checked again against its old digest.
        """
        workspaces = sorted(set(workspace_ids))
        again: dict[uuid.UUID, _Prepared] = {}
        for delivery_id in sorted(changed):
            log.info("delivery_gated_again", delivery_id=str(delivery_id), reason="gate_facts_changed")
        try:
            await self._regate_into(again, workspaces, changed)
        except Exception:  # the marks already written stand: their calls are made (R1)
            log.exception(
                "delivery_regate_failed",
                deliveries=[str(d) for d in sorted(set(changed) - set(again))],
                worker=self.worker_id,
            )
        return again

    async def _regate_into(
        self, again: dict[uuid.UUID, _Prepared], workspaces: Sequence[uuid.UUID], changed: AbstractSet[uuid.UUID]
    ) -> None:
        """:meth:`_regate`'s tries; each delivery marked goes into ``again`` as soon as its mark is committed."""
        pending = sorted(changed)
        for _ in range(_REGATE_TRIES):
            async with self.database.sessionmaker() as session, session.begin():
                ready, driver = await self._decide(session, workspaces, pending)
                if not ready:
                    return
                marks = await self._mark(session, driver, workspaces, ready)
            again.update({item.delivery_id: item for item in ready if item.delivery_id in marks.marked})
            pending = sorted(marks.changed)
            if not pending:
                return
        async with self.database.sessionmaker() as session, session.begin():
            failure = "the send gate's facts changed before each of its in-flight marks; retried later"
            await self._settle(session, workspaces, dict.fromkeys(pending, _Settle(failure=failure)))

    async def _settle(
        self, session: AsyncSession, workspace_ids: Sequence[uuid.UUID], settling: Mapping[uuid.UUID, _Settle]
    ) -> None:
        """Write what prepare decided for the deliveries it does not send, through the ORM (one read for them all).

        Only the rows this worker still holds, locked (:func:`repository.lock_held`): one whose lease ran out while
        this worker stalled may have been claimed and sent by another worker since, and settling it here would
        overwrite that result (a ``queued`` over a ``sent``, and marketing sent twice: hostile review 2026-12-06).
        Those are left alone.
        """
        held = await repository.lock_held(session, workspace_ids, list(settling), self.worker_id)
        for lost in set(settling) - {delivery.id for delivery in held}:
            log.warning("delivery_lease_lost", delivery_id=str(lost), worker=self.worker_id)
        for delivery in held:
            how = settling[delivery.id]
            if how.failure is not None:
                await self._apply(session, delivery, SendResult(Outcome.TRANSIENT, detail=how.failure))
            elif how.opens is not None:
                await self._wait(session, delivery, how.opens)
            else:
                assert how.status is not None
                await self._finish(session, delivery, how.status, error=how.error)

    def _prepare_one(self, row: ToSend, loaded: _Loaded, now: datetime) -> _Prepared | _Settle:
        """One delivery: to be settled (blocked, gone, waiting for its window) or ready to send."""
        channel = Channel(row.channel)
        settings = loaded.settings.get(row.workspace_id)
        if not row.has_message or not row.has_point or row.kind is None or settings is None:
            return _Settle(DeliveryStatus.FAILED, error="the message or its address no longer exists")
        assert row.purpose_id is not None
        assert row.address is not None
        kind = PurposeKind(row.kind)
        if (row.workspace_id, row.purpose_id) in loaded.unreadable:
            raise FactsUnavailable("the send gate's facts could not be read for this workspace and purpose")
        if row.in_flight_at is not None and (settled := self._resend_after_crash(row, kind)) is not None:
            return settled
        fact = loaded.facts.get((row.contact_point_id, row.purpose_id))
        decision = (
            decide_point(
                fact,
                kind,
                now=now,
                window=window_of(settings, channel),
                default_timezone=settings.timezone,
            )
            if fact
            else None
        )
        if decision is None or not decision.eligible:
            reason = decision.reason if decision else Reason.NO_CONTACT_POINT
            if decision is not None and reason is Reason.OUTSIDE_SEND_WINDOW and decision.next_window_opens_at:
                return _Settle(opens=decision.next_window_opens_at)
            return _Settle(DeliveryStatus.BLOCKED_AT_SEND, error=reason.value)
        spec = registry.spec(channel)
        customer = decision.reason is Reason.EXISTING_CUSTOMER
        outbound = spec.compose(
            Sending(
                channel=channel,
                delivery_id=row.id,
                workspace_id=row.workspace_id,
                settings=settings,
                service=self.settings,
                keys=self.keys,
                point_id=row.contact_point_id,
                address=row.address,
                details=row.details if row.details is not None else {},
                content=loaded.tracked.get(row.id) or row.channel_content(),
                purpose_id=row.purpose_id,
                purpose_kind=kind,
                locale=row.locale,
                message_id=row.message_id,
                legal_basis=LegalBasis.UWG_7_3 if customer else None,
            )
        )
        if (refusal := notice_refusal(spec, decision.reason, outbound)) is not None:
            return _Settle(DeliveryStatus.BLOCKED_AT_SEND, error=refusal)
        adapter = spec.adapter(self.adapters, row.workspace_id, settings)
        digest = loaded.digests[row.contact_point_id, row.purpose_id]
        return _Prepared(row.id, row.workspace_id, channel, outbound, adapter, kind, digest, decision.holds_until)

    @staticmethod
    def _resend_after_crash(row: ToSend, kind: PurposeKind) -> _Settle | None:
        """The provider call of the previous attempt was in flight when its worker died: send again (``None``) or not.

        :func:`~app.messages.policy.after_crash` decides by the purpose's kind; a marketing delivery is settled
        ``unknown`` and never sent again.
        """
        policy = after_crash(kind)
        log.warning(
            "delivery_in_flight_at_crash",
            delivery_id=str(row.id),
            channel=row.channel,
            policy=policy.value,
            in_flight_at=row.in_flight_at.isoformat() if row.in_flight_at else None,
        )
        if policy is AfterCrash.RESEND:
            return None
        return _Settle(
            DeliveryStatus.UNKNOWN,
            error="the provider call was in flight when the worker stopped; not sent again (marketing: at most once)",
        )

    async def _facts(
        self, session: AsyncSession, rows: Sequence[ToSend]
    ) -> tuple[
        dict[tuple[uuid.UUID, uuid.UUID], PointFacts],
        dict[tuple[uuid.UUID, uuid.UUID], str],
        frozenset[tuple[uuid.UUID, uuid.UUID]],
    ]:
        """The gate's facts of every delivery's address and their digests, one query per (workspace, purpose).

        Each query in a savepoint.

        Also answers the (workspace, purpose) groups the database refused (a stored time zone it does not know): a
        batch holds many workspaces' deliveries, and one workspace's must not stop the others' (hostile review
        2026-12-05); theirs are retried later.
        """
        groups: dict[tuple[uuid.UUID, uuid.UUID], tuple[set[uuid.UUID], set[str]]] = {}
        for row in rows:
            if row.purpose_id is None or row.contact_id is None:  # its message or its address is gone
                continue
            contacts, channels = groups.setdefault((row.workspace_id, row.purpose_id), (set(), set()))
            contacts.add(row.contact_id)
            channels.add(row.channel)
        found: dict[tuple[uuid.UUID, uuid.UUID], PointFacts] = {}
        digests: dict[tuple[uuid.UUID, uuid.UUID], str] = {}
        unreadable: set[tuple[uuid.UUID, uuid.UUID]] = set()
        for (workspace_id, purpose_id), (contacts, channels) in groups.items():
            try:
                async with session.begin_nested():
                    read = await facts_repository.gate_facts(
                        session, workspace_id, sorted(contacts), sorted(channels), purpose_id
                    )
            except DBAPIError:
                log.exception("delivery_facts_failed", workspace_id=str(workspace_id), purpose_id=str(purpose_id))
                unreadable.add((workspace_id, purpose_id))
                continue
            # an endpoint off the operator's push services (narrowed since queueing) is undeliverable, as for routing
            push_services = self.settings.web_push_services
            found.update({(fact.id, purpose_id): routable(fact, push_services) for _, fact, _ in read})
            digests.update({(fact.id, purpose_id): digest for _, fact, digest in read})
        return found, digests, frozenset(unreadable)

    async def _write(
        self, entries: Sequence[_Entry], marks: dict[uuid.UUID, _Prepared] | None = None
    ) -> set[uuid.UUID]:
        """Write the marks and outcomes that arrived together; answers the deliveries held.

        Marks and acceptances (nearly every answer) go as one statement on a driver connection
        (:func:`~app.messages.repository.mark_and_settle_sent`); the other outcomes (retries, failures and what
        they say about the address, ``unknown``) through the ORM in one short transaction. Only rows this worker
        still holds the lease of are written (checked in the statements), so a late worker never overwrites the
        row's new owner.

        ``marks``: the round's in-flight marks written here so far (by the mark statement or :meth:`_regate`), with
        what to send for each; filled in. A mark of it is not written again: a shared write whose other part failed
        after its marks were committed is repeated entry by entry (:class:`_Journal`), and a delivery marked by
        :meth:`_regate` checked again against the digest of its first decision would be found changed, decided
        again, found in flight and (marketing) settled ``unknown``, never sent (hostile review 2026-12-06, R1).
        """
        marks = {} if marks is None else marks
        workspace_ids = {e.item.workspace_id for e in entries}
        done = {
            e.item.delivery_id: marks[e.item.delivery_id]
            for e in entries
            if e.result is None and e.item.delivery_id in marks
        }
        beginning = [e.item for e in entries if e.result is None and e.item.delivery_id not in done]
        starting = [item.delivery_id for item in beginning]
        accepted = [
            repository.Accepted(e.item.delivery_id, e.result.provider_message_id, _provider(e.item))
            for e in entries
            if e.result is not None and e.result.outcome is Outcome.ACCEPTED
        ]
        others = {
            e.item.delivery_id: e.result
            for e in entries
            if e.result is not None and e.result.outcome is not Outcome.ACCEPTED
        }
        held = _Held(done, again=done)
        if starting or accepted:
            async with self.database.driver(stateless=True) as connection:
                taken, changed = await repository.mark_and_settle_sent(
                    connection,
                    workspace_ids,
                    self.worker_id,
                    starting=starting,
                    digests=[item.digest for item in beginning],
                    untils=[item.holds_until for item in beginning],
                    accepted=accepted,
                    at=utcnow(),
                    lease_seconds=self._lease_seconds,
                )
                held |= taken
            marks.update({item.delivery_id: item for item in beginning if item.delivery_id in taken})
            if changed:  # its gate's facts changed since its decision: decided again now (not released to a claim)
                again = await self._regate(workspace_ids, changed)
                marks.update(again)
                held.again.update(again)
                held |= again.keys()
        if others:
            kinds = {e.item.delivery_id: e.item.kind for e in entries}
            providers = {e.item.delivery_id: _provider(e.item) for e in entries}
            async with self.database.sessionmaker() as session, session.begin():
                for delivery in await repository.lock_held(session, workspace_ids, list(others), self.worker_id):
                    await self._apply(
                        session, delivery, others[delivery.id], kinds.get(delivery.id), providers.get(delivery.id)
                    )
                    held.add(delivery.id)
        for lost in ({a.id for a in accepted} | set(others)) - held:
            log.warning("delivery_lease_lost", delivery_id=str(lost), worker=self.worker_id)
        return held

    async def _record(self, claimed: Claimed, result: SendResult) -> None:
        """Write one outcome now (see :meth:`_write`)."""
        item = _Prepared(claimed.id, claimed.workspace_id, Channel(claimed.channel), None, None)
        await self._write([_Entry(item, result)])

    async def _apply(
        self,
        session: AsyncSession,
        delivery: Delivery,
        result: SendResult,
        kind: PurposeKind | None = None,
        provider: str | None = None,
    ) -> None:
        error = f"{result.error_code}: {result.detail}" if result.error_code else result.detail or None
        named = {"provider": provider} if provider else None  # reports count per provider (``group_by=provider``)
        if result.outcome is Outcome.ACCEPTED:
            await self._finish(
                session, delivery, DeliveryStatus.SENT, provider_id=result.provider_message_id, detail=named
            )
        elif (
            result.outcome is Outcome.TRANSIENT
            and result.maybe_delivered
            and kind is not None
            and after_crash(kind) is AfterCrash.UNKNOWN
        ):
            # no answer, but the provider may have accepted it: a crash's uncertainty, decided the same way
            await self._finish(
                session,
                delivery,
                DeliveryStatus.UNKNOWN,
                error=f"{error}; the provider may have accepted it: not sent again (marketing: at most once)",
                detail=named,
            )
        elif result.outcome is Outcome.TRANSIENT and delivery.attempts < self.config.max_attempts:
            delay = backoff(delivery.attempts, self.config.base_backoff, self.config.max_backoff)
            retry_at = utcnow() + timedelta(seconds=delay)
            repository.requeue_for_retry(delivery, retry_at, error=error, at=utcnow())
            add_event(
                session,
                delivery.workspace_id,
                delivery.message_id,
                delivery.id,
                delivery.channel,
                Step.RETRY_SCHEDULED,
                error=error,
                detail={"attempt": delivery.attempts, "next_attempt_at": retry_at.isoformat(), **(named or {})},
            )
        else:
            await self._finish(session, delivery, DeliveryStatus.FAILED, error=error, detail=named)
            await self._feedback(session, delivery, result)

    async def _feedback(self, session: AsyncSession, delivery: Delivery, result: SendResult) -> None:
        """Mirror what the provider said about the address, as the channel reads it (CHANNEL_RULES.md §0.3)."""
        effect = registry.spec(delivery.channel).feedback.get(result.outcome)
        if effect is None:
            return
        points = await ledger.contact_points_by_id(session, [delivery.workspace_id], [delivery.contact_point_id])
        point = points.get(delivery.contact_point_id)
        if point is None:
            return
        evidence = {"delivery_id": str(delivery.id), "error_code": result.error_code, "detail": result.detail[:500]}
        await ledger.set_reachability(session, point.id, effect.reachability.value, utcnow())
        if effect.withdraw is not None:
            provider = Actor(ActorType.PROVIDER, delivery.channel)
            await withdraw_point(
                session, delivery.workspace_id, point, trigger=effect.withdraw, evidence=evidence, actor=provider
            )

    async def _finish(
        self,
        session: AsyncSession,
        delivery: Delivery,
        status: DeliveryStatus,
        *,
        provider_id: str | None = None,
        error: str | None = None,
        detail: dict[str, Any] | None = None,
    ) -> None:
        repository.settle(delivery, status, provider_id=provider_id, error=error, at=utcnow())
        add_event(
            session,
            delivery.workspace_id,
            delivery.message_id,
            delivery.id,
            delivery.channel,
            step_of(status),
            provider_id=provider_id,
            error=error,
            detail=detail,
        )
        log.debug("delivery", channel=delivery.channel, status=status, attempts=delivery.attempts)

    async def _wait(self, session: AsyncSession, delivery: Delivery, opens: datetime) -> None:
        """Outside the send window: back to the queue until it opens (not counted as an attempt)."""
        repository.requeue_for_window(delivery, opens, at=utcnow())
        add_event(
            session,
            delivery.workspace_id,
            delivery.message_id,
            delivery.id,
            delivery.channel,
            Step.WAITING_FOR_SEND_WINDOW,
            detail={"opens_at": opens.isoformat()},
        )


def notice_refusal(spec: ChannelSpec, reason: Reason, outbound: Outbound) -> str | None:
    """Why a delivery permitted on ``reason`` must not go out as composed; ``None``: it may.

    UWG §7(3) No. 4: a message to an existing customer (``existing_customer``) must carry the objection notice; one
    that cannot (a channel with no way to carry it, a composition without it) is blocked, never sent without it.
    """
    if reason is not Reason.EXISTING_CUSTOMER:
        return None
    if spec.carries_objection_notice is not None and spec.carries_objection_notice(outbound):
        return None
    return OBJECTION_NOTICE_MISSING


def _provider(item: _Prepared) -> str | None:
    """The provider the delivery went to (``None`` where it never reached an adapter)."""
    if item.adapter is None or item.outbound is None:
        return None
    return provider_of(item.adapter, item.outbound)


def _failure(exc: Exception) -> str:
    return f"could not prepare the send: {type(exc).__name__}: {exc}"[:500]
