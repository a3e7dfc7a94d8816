"""The chain runner: decides due steps, one transaction per batch, beside the dispatcher in the same worker loop.

- **Claiming**: due steps of active runs are locked with their runs (``FOR UPDATE SKIP LOCKED``) for the whole
  transaction that decides them, so any number of runners take disjoint steps, and a step's decision and the
  message it creates commit together. A runner that dies mid-batch rolls back: its steps are still pending and
  the next round takes them. No timer lives in memory: a step's time is its row's ``due_at``.
- **Consent at every step**: at its due time a step first looks for ledger events since the run started that
  ended consent to the chain's purpose (an opt-out or objection; any channel, or with ``stop_on_opt_out:
  channel`` only the step's channels, which are then left out of its route). Found, the run's remaining steps end
  with that event. Then the step's ``when`` is evaluated on the earlier steps' outcomes
  (:mod:`app.chains.conditions`; unknown follows ``on_unknown``), and a message is created through the normal
  path: the send gate routes it now, and the dispatcher asks again at send time (``blocked_at_send``).
- **Batches**: the steps of a round are decided one by one in Python on what was read for the whole batch (one
  query per table), and the messages of those that send are created together
  (:func:`app.messages.service.create_messages`: each decided as :func:`~app.messages.service.create_message`
  decides it alone, written with one ``INSERT`` per table), so a step costs no round trip of its own.
- One step's failure is its own: it is retried with backoff (in a savepoint) and, after
  :attr:`RunnerConfig.max_attempts`, skipped as ``step_failed``; the rest of the batch goes on.
"""

from __future__ import annotations

import asyncio
import os
import socket
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import msgspec
import structlog
from sqlalchemy.ext.asyncio import AsyncSession

from app.chains import repository, service
from app.chains.conditions import ENGAGEMENT, Outcomes, Signal, evaluate
from app.chains.models import Chain, ChainRun, ChainStep, RunStatus, StepStatus
from app.channels import registry
from app.channels.base import Report
from app.domain.model import PurposeKind
from app.ledger.models import ConsentEvent
from app.lib.db import Database
from app.lib.errors import AppError
from app.lib.orm import utcnow
from app.lib.rounds import backoff, work_until
from app.messages.schemas import Content, MessageIn, MessageOut
from app.messages.service import create_messages
from app.messages.status import MessageStatus
from app.purposes import repository as purposes_repository
from app.purposes.models import Purpose

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class RunnerConfig:
    """How a chain runner works."""

    batch: int = 100
    max_attempts: int = 5
    base_backoff: float = 10.0
    max_backoff: float = 600.0
    idle_sleep: float = 0.5


class ChainRunner:
    """Claims and decides due chain steps for every workspace."""

    def __init__(
        self,
        database: Database,
        *,
        config: RunnerConfig | None = None,
        worker_id: str | None = None,
        push_services: tuple[str, ...] | None,
    ) -> None:
        self.database = database
        self.push_services = push_services  # the operator's web push services (routing skips endpoints off them)
        self.config = config or RunnerConfig()
        self.worker_id = worker_id or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"

    async def run(self, stop: asyncio.Event) -> None:
        """Work until ``stop`` is set; sleeps briefly when nothing is due."""
        await work_until(
            stop, self.run_once, self.config.idle_sleep, failed="chain_round_failed", worker=self.worker_id
        )

    async def run_once(self) -> int:
        """Claim one batch of due steps and decide them in one transaction; answers how many were claimed.

        The batch is first decided in one go; if a step fails, that transaction is rolled back (nothing of the
        batch happened) and the batch is decided again with a savepoint per step, so the failure stays with
        its step (retried later, then skipped) and the others are decided.
        """
        try:
            return await self._round(isolated=False)
        except Exception:  # noqa: BLE001  # decided again step by step: the failure stays with its step
            log.warning("chain_batch_retried_step_by_step", worker=self.worker_id)
            return await self._round(isolated=True)

    async def _round(self, *, isolated: bool) -> int:
        async with self.database.sessionmaker() as session, session.begin():
            claimed = await repository.claim_due(session, now=utcnow(), batch=self.config.batch)
            if not claimed:
                return 0
            steps = await repository.steps_by_id(session, claimed)
            workspace_ids = {s.workspace_id for s in steps}
            runs = await repository.runs_by_id(session, workspace_ids, {s.run_id for s in steps})
            chains = await repository.chains_by_id(session, workspace_ids, {r.chain_id for r in runs.values()})
            purposes = await purposes_repository.purposes_by_ids(
                session, sorted(workspace_ids), sorted({c.purpose_id for c in chains.values()})
            )
            known = await _load(session, workspace_ids, runs)
            batch = [(step, runs[step.run_id]) for step in steps]
            if isolated:
                for step, run in batch:
                    await self._one(session, step, run, chains, purposes, known)
            else:
                await decide(
                    session, batch, chains, purposes, known=known, now=utcnow(), push_services=self.push_services
                )
        return len(claimed)

    async def _one(  # noqa: PLR0917  # the step and what it is decided on
        self,
        session: AsyncSession,
        step: ChainStep,
        run: ChainRun,
        chains: Mapping[uuid.UUID, Chain],
        purposes: Mapping[uuid.UUID, Purpose],
        known: _Known,
    ) -> None:
        step_id, attempts = step.id, step.attempts
        try:
            async with session.begin_nested():
                await decide(
                    session,
                    [(step, run)],
                    chains,
                    purposes,
                    known=known,
                    now=utcnow(),
                    push_services=self.push_services,
                )
        except Exception as exc:  # one step's failure must not stop the batch: retried, then skipped
            log.exception("chain_step_failed", step_id=str(step_id), worker=self.worker_id)
            now = utcnow()
            attempts += 1
            if attempts < self.config.max_attempts:
                delay = backoff(attempts, self.config.base_backoff, self.config.max_backoff)
                values: dict[str, Any] = {"attempts": attempts, "due_at": now + timedelta(seconds=delay)}
            else:
                values = {
                    "attempts": attempts,
                    "status": StepStatus.SKIPPED,
                    "reason": "step_failed",
                    "decided_at": now,
                    "detail": {"error": f"{type(exc).__name__}"[:200]},
                }
            await repository.retry_later(session, step_id, **values)
            if attempts >= self.config.max_attempts:
                await repository.reload(session, step, run)
                _arm_next(known, run, chains[run.chain_id], step.position, now)


@dataclass(frozen=True, slots=True)
class _Known:
    """What a batch's steps are decided on, loaded with one query per table for the whole batch.

    Read when the batch begins: an opt-out recorded while the batch runs is seen by the dispatcher's check at
    send time (``blocked_at_send``) and by the run's next step.
    """

    steps: Mapping[uuid.UUID, list[ChainStep]]
    """Each claimed run's steps, in order."""
    deliveries: Mapping[uuid.UUID, list[tuple[str, str]]]
    history: Mapping[uuid.UUID, set[str]]
    tracking: Mapping[uuid.UUID, set[str]]
    """The kinds of token each sent message carried (:mod:`app.messages.tracking`): which signals it can record."""
    events: Mapping[uuid.UUID, list[ConsentEvent]]
    """Ledger events that ended a consent since the earliest start, per contact."""

    def ending(self, run: ChainRun, purpose: Purpose) -> list[ConsentEvent]:
        """The events since the run started that ended consent to the purpose (any channel), in ledger order."""
        marketing = PurposeKind(purpose.kind) is PurposeKind.MARKETING
        return [
            e
            for e in self.events.get(run.contact_id, [])
            if e.workspace_id == run.workspace_id
            and e.recorded_at >= run.started_at
            and (e.purpose_id == purpose.id or (e.purpose_id is None and marketing))
        ]


async def _load(session: AsyncSession, workspace_ids: set[uuid.UUID], runs: Mapping[uuid.UUID, ChainRun]) -> _Known:
    steps = await repository.steps_of_runs(session, workspace_ids, list(runs))
    sent = [s.message_id for ss in steps.values() for s in ss if s.status == StepStatus.SENT and s.message_id]
    return _Known(
        steps=steps,
        deliveries=await repository.delivery_facts(session, workspace_ids, sent),
        history=await repository.message_signals(session, sent),
        tracking=await repository.message_tracking(session, sent),
        events=await repository.ending_events(
            session,
            workspace_ids,
            {r.contact_id for r in runs.values()},
            since=min(r.started_at for r in runs.values()),
        ),
    )


@dataclass(slots=True)
class _Send:
    """A step whose message is to be created (its route and condition decided): written with its batch."""

    step: ChainStep
    run: ChainRun
    chain: Chain
    message: MessageIn
    detail: dict[str, Any]


async def decide(
    session: AsyncSession,
    batch: Sequence[tuple[ChainStep, ChainRun]],
    chains: Mapping[uuid.UUID, Chain],
    purposes: Mapping[uuid.UUID, Purpose],
    *,
    known: _Known,
    now: datetime,
    push_services: tuple[str, ...] | None = None,
) -> None:
    """Decide a batch of due steps, one per run (see the module's description), and arm each run's next step.

    Each step is decided on its own; the messages of the steps that send are then created together, one
    :func:`~app.messages.service.create_messages` per workspace (each decided with the send gate as alone).
    """
    sends: list[_Send] = []
    with session.no_autoflush:  # the decisions are written together at the end (repository.write_changes)
        for step, run in batch:
            chain = chains[run.chain_id]
            send = await _decide_one(session, step, run, chain, purposes[chain.purpose_id], known=known, now=now)
            if send is not None:
                sends.append(send)
        for workspace_id in dict.fromkeys(s.run.workspace_id for s in sends):
            of_workspace = [s for s in sends if s.run.workspace_id == workspace_id]
            messages = [s.message for s in of_workspace]
            answers = await create_messages(session, workspace_id, messages, push_services=push_services)
            for send, answer in zip(of_workspace, answers, strict=True):
                _record(send, answer, now)
                _arm_next(known, send.run, send.chain, send.step.position, now)
        runs = list({run.id: run for _, run in batch}.values())
        await repository.write_changes(session, [*(s for run in runs for s in known.steps[run.id]), *runs])


async def _decide_one(
    session: AsyncSession,
    step: ChainStep,
    run: ChainRun,
    chain: Chain,
    purpose: Purpose,
    *,
    known: _Known,
    now: datetime,
) -> _Send | None:
    """Decide one due step up to its message: closed (and the next armed) here, or the message it is to send."""
    definition = chain.steps[step.position]
    route = service.channels_of(definition)
    events = known.ending(run, purpose)
    if events and chain.stop_on_opt_out == "purpose":
        event = events[0]
        _close(
            step,
            StepStatus.ENDED,
            now,
            reason=event.to_state,
            event_id=event.id,
            detail={"channel": event.channel, "trigger": event.trigger},
        )
        await repository.close_pending(
            session,
            run.workspace_id,
            run.id,
            StepStatus.ENDED,
            at=now,
            reason=event.to_state,
            event_id=event.id,
            detail={"channel": event.channel, "trigger": event.trigger},
            besides=step.id,
        )
        run.status, run.ended_at, run.ended_by_event_id = RunStatus.ENDED, now, event.id
        log.info("chain_run_ended", run_id=str(run.id), event_id=str(event.id))
        return None
    if events:  # stop_on_opt_out: channel — the channels opted out since the start are left out of the route
        closed = {e.channel: e for e in reversed(events)}  # the first event of each channel
        remaining = [c for c in route if c.value not in closed]
        if not remaining:
            event = min((closed[c.value] for c in route), key=events.index)  # the first in ledger order
            _close(
                step,
                StepStatus.ENDED,
                now,
                reason=event.to_state,
                event_id=event.id,
                detail={"channel": event.channel, "trigger": event.trigger},
            )
            _arm_next(known, run, chain, step.position, now)
            return None
        route = remaining
    earlier = _outcomes(known, run, step.position)
    evaluated = evaluate(definition.get("when"), earlier)
    detail: dict[str, Any] = {"when": evaluated.terms} if definition.get("when") else {}
    if evaluated.value is False:
        _close(step, StepStatus.SKIPPED, now, reason="condition_not_met", detail=detail)
    elif evaluated.value is None and definition["on_unknown"] == "skip":
        _close(step, StepStatus.SKIPPED, now, reason="outcome_unknown", detail=detail)
    else:
        if evaluated.value is None:
            detail["on_unknown"] = "send"
        try:  # content the variables made invalid: create_messages would refuse it before writing anything
            content = service.fill(definition["content"], run.variables or {})
            message = MessageIn(
                contact=str(run.contact_id),
                purpose=purpose.key,
                route=list(route),
                strategy=definition["strategy"],
                content=msgspec.convert(content, Content),
                campaign=run.campaign,
            )
        except (msgspec.ValidationError, service.ContentTooLarge):
            _close(
                step, StepStatus.SKIPPED, now, reason="content_invalid", detail={**detail, "error": "content_invalid"}
            )
        else:
            return _Send(step, run, chain, message, detail)
    _arm_next(known, run, chain, step.position, now)
    return None


def _record(send: _Send, answer: MessageOut | AppError, now: datetime) -> None:
    """The step's decision from its message's answer: sent, or skipped (refused, or no channel eligible)."""
    step, detail = send.step, send.detail
    if isinstance(answer, AppError):  # content that cannot be sent (create_message would have refused it)
        _close(step, StepStatus.SKIPPED, now, reason="content_invalid", detail={**detail, "error": answer.code})
        return
    if answer.status == MessageStatus.NO_ELIGIBLE_CHANNEL.value:
        skipped = [{"channel": s.channel.value, "reason": s.reason} for s in answer.decision.skipped]
        _close(step, StepStatus.SKIPPED, now, reason="no_eligible_channel", detail={**detail, "skipped": skipped})
        step.message_id = answer.message_id
        return
    _close(step, StepStatus.SENT, now, detail=detail or None)
    step.message_id = answer.message_id


def _close(
    step: ChainStep,
    status: StepStatus,
    now: datetime,
    *,
    reason: str | None = None,
    event_id: uuid.UUID | None = None,
    detail: dict[str, Any] | None = None,
) -> None:
    step.status, step.decided_at, step.reason, step.event_id = status, now, reason, event_id
    step.detail = detail or None


def _arm_next(known: _Known, run: ChainRun, chain: Chain, position: int, now: datetime) -> None:
    """Give the next step its due time, or complete the run after the last one."""
    steps = known.steps[run.id]
    following = next((s for s in steps if s.position == position + 1), None)
    if following is None:
        if run.status == RunStatus.ACTIVE:
            run.status, run.ended_at = RunStatus.COMPLETED, now
        return
    if following.status == StepStatus.PENDING:
        following.due_at = service.due_after(chain.steps[position + 1], started_at=run.started_at, previous_at=now)


def _outcomes(known: _Known, run: ChainRun, position: int) -> dict[str, Outcomes]:
    """What is known of every earlier step's message (:class:`~app.chains.conditions.Outcomes`)."""
    steps = [s for s in known.steps[run.id] if s.position < position]
    deliveries, history = known.deliveries, known.history
    found: dict[str, Outcomes] = {}
    for s in steps:
        if s.status != StepStatus.SENT or s.message_id is None:
            found[s.key] = Outcomes(sent=False)
            continue
        rows = deliveries.get(s.message_id, [])
        found[s.key] = Outcomes(
            sent=True,
            statuses=frozenset(status for _, status in rows),
            reporting=bool(rows) and all(_reports_delivery(channel) for channel, _ in rows),
            signals=frozenset(_signals(history.get(s.message_id, set()))),
            tracked=_tracked(known.tracking.get(s.message_id, set())),
        )
    return found


def _reports_delivery(channel: str) -> bool:
    return Report.DELIVERED in registry.spec(channel).reports.values()


def _signals(statuses: set[str]) -> list[Signal]:
    """The signals recorded; a click implies the mail was opened (a pixel the mail client blocked or none)."""
    found = [s for s in ENGAGEMENT if s.value in statuses]
    return [*found, Signal.OPENED] if Signal.CLICKED in found and Signal.OPENED not in found else found


#: What a message can record, by the kind of its tokens: a tracked mail's links (a click, else known not clicked),
#: its open pixel (an open, else known not opened; no click either without one), a push message's event token.
_TRACKED = {
    "link": frozenset({Signal.CLICKED}),
    "open": frozenset({Signal.OPENED, Signal.CLICKED}),
    "event": frozenset({Signal.OPENED}),
}


def _tracked(kinds: set[str]) -> frozenset[Signal]:
    """Which signals are known for a sent message.

    A conversion always (the shop reports it with its key, whether or not the message was tracked); opens and
    clicks only as its tokens say (none without tracking consent).
    """
    return frozenset({Signal.CONVERTED}).union(*(_TRACKED[k] for k in kinds if k in _TRACKED))
